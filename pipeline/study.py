"""`make study` and `make quick`: `dvc repro` of params.yaml's study, set up for a fresh clone.

    python pipeline/study.py             # dvc repro: every stage of every run, then the notebooks
    python pipeline/study.py --quick     # the main table's seed-0 runs on the small `quick` profile, in build/quick/
    python pipeline/study.py --force     # extra arguments go to `dvc repro`

It runs a plain `dvc repro` (the same command a user types once the venv is active), after initialising
DVC if the checkout has no .dvc/, with this interpreter's scripts first on PATH and everything offline,
then prints the total elapsed time and `dvc status`. Every stage already says what it does: `basic stage`
prints a line when it starts and when it ends (with its time), keeps the stage's output in
logs/<stage>[@<run>].log and repeats the end of it when the stage fails; each mini stage uses both cores
(data-parallel training and evaluation, params.yaml's `launch`).

`--quick` leaves this checkout alone: it copies it (what git tracks or would track, without results/ and
dvc.lock) to a fresh build/quick/, sets `profile: quick` (the mini world and its shipped backbones, fewer
steps, the first 60 questions of each benchmark: params.yaml), keeps only the main table's seed-0 runs there
and runs the study in that copy: the whole path (world, backbones, both stages, lmms-eval, analysis,
notebooks) in minutes, with numbers that are a smoke reading, not the committed mini study's.
Exit code: `dvc repro`'s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = ROOT / "build" / "quick"

sys.path.insert(0, str(ROOT / "src"))
from basic.pipeline import config


def environment(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if root != ROOT:  # a copy runs its own code
        env["PYTHONPATH"] = os.pathsep.join(
            [str(root / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    return env


def main_runs(params: dict) -> list[str]:
    """The main table's seed-0 runs."""
    return [
        r for r in dict.fromkeys(params["tables"].get("main", [])) if params["runs"][r].get("seed", 0) == 0
    ]


def scratch_copy(dest: Path, profile: str, runs: list[str], tables: dict[str, list[str]]) -> Path:
    """A fresh copy of this checkout in `dest` (what git tracks or would track, but results/ and dvc.lock) as
    a git repository of its own, whose params.yaml has `profile`, only `runs` and `tables`; returns `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    if dest.exists():
        shutil.rmtree(dest)
    for name in files:
        source = ROOT / name
        if source.is_file() and not name.startswith(("results/", "dvc.lock")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = config.read(ROOT / config.PARAMS_FILE)
    params["profile"] = profile
    params["runs"] = {name: params["runs"][name] for name in runs}
    params["tables"] = tables
    (dest / config.PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    config.load(dest / config.PARAMS_FILE)  # fail here, naming the key, rather than in a stage
    # Its own git repository: DVC would otherwise take the enclosing checkout's, which ignores build/.
    identity = ["-c", "user.name=study", "-c", "user.email=study@localhost"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", f"{profile} study"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc", *args]


def ensure_dvc(root: Path, env: dict[str, str]) -> None:
    if (root / ".dvc").is_dir():
        return
    scm = (root / ".git").exists()
    print(f"study: no .dvc/ in {root}: dvc init{'' if scm else ' --no-scm'}", flush=True)
    subprocess.run(dvc("init", "-q", *([] if scm else ["--no-scm"])), cwd=root, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"the main table's seed-0 runs on the `quick` profile, in a fresh copy ({QUICK.relative_to(ROOT)}/)",
    )
    args, extra = p.parse_known_args(argv)
    root = ROOT
    if args.quick:
        runs = main_runs(config.read(ROOT / config.PARAMS_FILE))
        root = scratch_copy(QUICK, "quick", runs, {"main": runs, config.ANALYSIS_TABLE: runs})
        print(f"study: quick: profile quick, runs {', '.join(runs)}, in {root}", flush=True)
    env = environment(root)
    ensure_dvc(root, env)
    started = time.perf_counter()
    code = subprocess.run(dvc("repro", *extra), cwd=root, env=env, check=False).returncode
    elapsed = time.strftime("%H:%M:%S", time.gmtime(time.perf_counter() - started))
    where = "" if root == ROOT else f"{root.relative_to(ROOT)}/"
    print(
        f"study: dvc repro {'done' if code == 0 else f'failed (exit {code})'} in {elapsed}; tables in "
        f"{where}results/tables/, notebooks in {where}results/notebooks/",
        flush=True,
    )
    if code == 0:
        subprocess.run(dvc("status"), cwd=root, env=env, check=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
