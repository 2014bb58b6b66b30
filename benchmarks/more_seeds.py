"""Table 1 with more seeds than the study runs: the extra seeds' run stages, then the report's tables over all.

The study runs two seeds per Table 1 row (params.yaml, `tables.main`), and a single run moves by as much as
a seed does (benchmarks/results/rerun_spread.json). This adds seeds to every row of `tables.main` in a
scratch copy of the study (`--work`: params.yaml with runs `<run>-seed<k>`, `data/` and `models/backbones`
linked to this checkout's), runs their pretrain, finetune and evaluate stages there with `basic stage` (the
study's own commands; a run whose metrics file exists is kept), and builds the report's Table 1 vision table
(`basic.pipeline.report.vision_table`: score with the image minus blind score, mean and sd over seeds) and
its findings over the study's metrics and the extra ones.

    python benchmarks/more_seeds.py --seeds 2 3 --out benchmarks/results/more_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import yaml

from basic.pipeline import config, report

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "finetune", "evaluate")


def scratch_study(work: Path, seeds: list[int]) -> tuple[Path, list[str]]:
    """`work/params.yaml`: this checkout's, plus `<run>-seed<k>` for every seed-0 run of tables.main; the
    study's metrics of tables.main linked into work/results/metrics. Returns the params file and the new runs."""
    params = config.read(ROOT / config.PARAMS_FILE)
    main = params["tables"]["main"]
    extra = []
    for run in [r for r in main if params["runs"][r].get("seed", 0) == 0]:
        for seed in seeds:
            name = f"{run}-seed{seed}"
            params["runs"][name] = {**params["runs"][run], "seed": seed}
            extra.append(name)
    params["tables"]["main"] = main + extra
    metrics = work / config.METRICS_DIR
    metrics.mkdir(parents=True, exist_ok=True)
    (work / "models").mkdir(exist_ok=True)
    for link, target in [
        (work / "data", ROOT / "data"),
        (work / config.BACKBONES_DIR, ROOT / config.BACKBONES_DIR),
    ]:
        if not link.is_symlink():
            link.symlink_to(target)
    for run in main:
        link = metrics / f"{run}.json"
        if not link.is_symlink():
            link.symlink_to(ROOT / config.metrics_file(run))
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path, extra


def run_extra(work: Path, runs: list[str]) -> dict[str, dict[str, float]]:
    """Each run's three stages in `work` (skipped when its metrics exist); seconds per stage."""
    times = {}
    for run in runs:
        if (work / config.metrics_file(run)).exists():
            continue
        times[run] = {}
        for stage in STAGES:
            start = time.perf_counter()
            subprocess.run(["basic", "stage", stage, run], cwd=work, check=True, stdout=subprocess.DEVNULL)
            times[run][stage] = round(time.perf_counter() - start, 1)
            print(f"{stage}@{run}: {times[run][stage]} s", flush=True)
    return times


def summary(params: Path, metrics_dir: Path) -> dict:
    results = report.load(params, metrics_dir)
    table = report.vision_table(results)
    columns = [
        "row",
        "method",
        "llm",
        "benchmark",
        "ours",
        "ours_sd",
        "seeds",
        "runs",
        "score",
        "blind_score",
    ]
    llava = [  # the LLaVA-1.5 runs of Table 1 that have metrics
        r
        for r in results.study.tables["main"]
        if results.study.run(r).method == config.BASELINE and r in results.metrics
    ]
    return {
        "vision_table": table[columns].round(2).to_dict("records"),
        "findings": report.vision_findings(table),
        "llava_mean_gap": {  # mean over the LLaVA-1.5 runs of score minus blind score
            b: round(
                sum(results.metrics[r][b]["score"] - results.metrics[r][b]["blind_score"] for r in llava)
                / len(llava),
                2,
            )
            for b in results.metrics[llava[0]]
        },
        "vqav2_distinct_answers": {r: results.metrics[r]["vqav2"].get("distinct_answers") for r in llava},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "more_seeds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    params, extra = scratch_study(args.work, args.seeds)
    times = run_extra(args.work, extra)
    result = {
        "benchmark": "more_seeds",
        "seeds_added": args.seeds,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "stage_seconds": times,
        **summary(params, args.work / config.METRICS_DIR),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["findings"])
    print(json.dumps(result["llava_mean_gap"]))


if __name__ == "__main__":
    main()
