"""The whole DVC pipeline on the micro profile, in a temporary copy of the repository: `make study`'s script
end to end (real DVC, real training, real lmms-eval, real papermill), then `dvc exp run -S` on one run's
parameter, which must rerun that run's stages and the report and nothing else."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from basic.pipeline import config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNS = ("llava-vicuna-7b", "basic-vicuna-7b")

pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _study_script():
    spec = importlib.util.spec_from_file_location("study_script", ROOT / "pipeline" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A copy of the checkout (what git tracks or would track), micro profile, two runs, one table, run once."""
    work = _study_script().scratch_copy(
        tmp_path_factory.mktemp("study") / "work",
        "micro",
        list(RUNS),
        {"main": list(RUNS), "analysis": list(RUNS)},
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(work / "src"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(work / ".dvc-site"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    run = _sh([sys.executable, "pipeline/study.py"], work, env)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return work, env, run.stdout


def test_study_runs_end_to_end(study):
    work, env, output = study
    stages = {"prepare", "backbones", "report"} | {
        f"{s}@{r}" for s in ("pretrain", "finetune", "evaluate", "analyze") for r in RUNS
    }
    assert _ran(output) == stages
    assert "study: dvc repro done in " in output  # the total time
    for stage in stages - {"prepare", "report"}:  # `basic stage`'s start and end lines, and its log
        assert f"basic stage: {stage} starts: " in output and f"basic stage: {stage} done in " in output
        assert (work / "logs" / f"{stage}.log").is_file()
    assert re.search(r"; study \d+:\d\d:\d\d\)", output)  # the whole dvc repro's elapsed time
    for run in RUNS:
        metrics = json.loads((work / f"results/metrics/{run}.json").read_text())
        assert set(metrics) == {"vqav2", "mmb_en"} and all(m["status"] == "scored" for m in metrics.values())
        for stage in ("pretrain", "finetune"):
            points = json.loads((work / f"results/curves/{run}/{stage}.json").read_text())
            assert points and all("lm_loss" in p for p in points)
            assert all({"das", "sds"} <= set(p) for p in points) == run.startswith("basic")
        analysis = json.loads((work / f"results/analysis/{run}.json").read_text())
        assert (
            analysis["setup"]["llm_layers"] == 4
            and 0 <= analysis["summary"]["initial_grounded_fraction"] <= 1
        )
    table = (work / "results/tables/main.md").read_text()
    assert "| llava-1.5 vicuna-7b clip-l-336 | 1 |" in table and "| basic vicuna-7b clip-l-336 | 1 |" in table
    for notebook in ("main", "loss_ablation", "cross_model", "layer_weights", "curves", "analysis"):
        assert (work / f"results/notebooks/{notebook}.ipynb").is_file()
        assert "data:image/png;base64" in (work / f"results/notebooks/{notebook}.html").read_text()
    status = _sh(["dvc", "status"], work, env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def test_one_runs_parameter_reruns_only_that_run(study):
    work, env, _ = study
    for args in (["git", "add", "-A"], ["git", "commit", "-qm", "results"]):
        subprocess.run(args, cwd=work, env=env, check=True)
    changed = json.loads(_sh(["dvc", "status", "--json"], work, env).stdout)
    assert changed == {}
    exp = _sh(["dvc", "exp", "run", "-S", "runs.basic-vicuna-7b.seed=1"], work, env)
    assert exp.returncode == 0, exp.stdout[-6000:] + exp.stderr[-3000:]
    assert _ran(exp.stdout) == {
        "pretrain@basic-vicuna-7b",
        "finetune@basic-vicuna-7b",
        "evaluate@basic-vicuna-7b",
        "analyze@basic-vicuna-7b",
        "report",
    }
    assert "Stage 'pretrain@llava-vicuna-7b' didn't change, skipping" in exp.stdout
    assert config.read(work / "params.yaml")["runs"]["basic-vicuna-7b"]["seed"] == 1
    diff = _sh(["dvc", "params", "diff", "--json"], work, env)
    assert json.loads(diff.stdout)["params.yaml"]["runs.basic-vicuna-7b.seed"] == {
        "old": 0,
        "new": 1,
        "diff": 1,
    }
    metrics = _sh(["dvc", "metrics", "diff", "--all", "--json"], work, env)
    assert metrics.returncode == 0, metrics.stderr
    assert "results/metrics/basic-vicuna-7b.json" in json.loads(metrics.stdout)


def test_quick_copy_keeps_the_main_tables_seed0_runs_on_the_quick_profile(tmp_path):
    """`study.py --quick`'s copy: its own git repository, profile quick, the main table's four seed-0 runs."""
    script = _study_script()
    runs = script.main_runs(config.read(ROOT / "params.yaml"))
    assert runs == ["llava-vicuna-7b", "basic-vicuna-7b", "llava-vicuna-13b", "basic-vicuna-13b"]
    work = script.scratch_copy(tmp_path / "quick", "quick", runs, {"main": runs, "analysis": runs})
    study = config.load(work / "params.yaml")
    assert (
        study.profile == "quick"
        and list(study.runs) == runs
        and study.tables == {"main": runs, "analysis": runs}
    )
    # the mini world and its shipped backbones: the stage unpacks them instead of pretraining
    assert study.active.data == study.profiles["mini"].data
    assert study.active.backbones == {**study.profiles["mini"].backbones}
    assert (work / study.active.backbones["prebuilt"]).is_file()
    assert (work / ".git").is_dir() and (work / "dvc.yaml").is_file() and not (work / "results").exists()
    assert not subprocess.run(
        ["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
