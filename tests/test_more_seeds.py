"""benchmarks/more_seeds.py: the scratch study with extra seeds of Table 1, and the report over it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from basic.pipeline import config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("more_seeds", ROOT / "benchmarks" / "more_seeds.py")
more_seeds = importlib.util.module_from_spec(spec)
sys.modules["more_seeds"] = more_seeds
spec.loader.exec_module(more_seeds)


def test_scratch_study_adds_a_seed_to_every_table1_row_and_reports_over_the_committed_metrics(tmp_path):
    params, extra = more_seeds.scratch_study(tmp_path, [2])
    study = config.load(params)
    base = [r for r in study.tables["main"] if study.run(r).seed == 0]
    assert extra == [f"{r}-seed2" for r in base] and study.tables["main"][-len(extra) :] == extra
    for run in base:
        new = study.run(f"{run}-seed2")
        assert new.seed == 2 and new.settings == study.run(run).settings
    # the stage commands run in the scratch study: its paths are relative, the backbones and data linked
    argv = config.command(study, "finetune", extra[0])
    assert "models/backbones/vicuna-7b" in argv and f"models/{extra[0]}/finetune" in argv
    assert (tmp_path / "models" / "backbones").resolve() == (ROOT / "models" / "backbones").resolve()
    out = more_seeds.summary(params, tmp_path / config.METRICS_DIR)  # the extra runs have no metrics yet
    assert out["findings"].startswith("**Which benchmarks measure vision")
    rows = {(r["row"], r["benchmark"]): r for r in out["vision_table"]}
    assert all(r["seeds"] == 2 for r in rows.values() if r["ours"] is not None)
    assert set(out["vqav2_distinct_answers"]) == {
        r for r in study.tables["main"] if study.run(r).method == config.BASELINE and r not in extra
    }
