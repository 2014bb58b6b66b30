"""How far the committed metrics moved between two commits of the study, against the spread between seeds.

A rerun after a change that should not alter the science (e.g. a numerically equivalent loss computation)
moves each run's scores by the amplification of float-level differences over training; this script puts
that movement beside the seed-to-seed differences (each run `<name>` beside `<name>-seed1`, the Table 1 rows), per benchmark.

    python benchmarks/rerun_spread.py --before <commit> [--after <commit>] --out benchmarks/results/rerun_spread.json

`--after` defaults to the working tree's results/metrics/; a directory instead of a commit holds metrics files
of some runs (e.g. the same commit rerun on another machine), and only those runs are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

METRICS = Path("results/metrics")


def metrics_at(revision: str | None) -> dict[str, dict]:
    """Every run's metrics file at `revision` (None: the working tree; a directory: the files in it)."""
    if revision is None or Path(revision).is_dir():
        folder = METRICS if revision is None else Path(revision)
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    names = subprocess.check_output(
        ["git", "ls-tree", "--name-only", f"{revision}:{METRICS}"], text=True
    ).split()
    return {
        Path(n).stem: json.loads(subprocess.check_output(["git", "show", f"{revision}:{METRICS / n}"]))
        for n in names
        if n.endswith(".json")
    }


def gap(metrics: dict, run: str, bench: str) -> float:
    """Score with the image minus the blind score."""
    return metrics[run][bench]["score"] - metrics[run][bench]["blind_score"]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean_abs": round(statistics.mean(values), 2),
        "median_abs": round(statistics.median(values), 2),
        "max_abs": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--note", default="", help="what changed between the two commits")
    args = parser.parse_args()
    before, after = metrics_at(args.before), metrics_at(args.after)
    runs = sorted(before.keys() & after.keys())
    benchmarks = sorted({b for r in runs for b in after[r]})
    result = {
        "note": args.note,
        "before": args.before,
        "after": args.after or "working tree",
        "runs": len(runs),
        "benchmarks": {},
    }
    for bench in benchmarks:
        scored = [r for r in runs if bench in after[r]]
        seeds = [
            abs(m[r][bench]["score"] - m[f"{r}-seed1"][bench]["score"])
            for m in (before, after)
            for r in m
            if f"{r}-seed1" in m and bench in m[r]
        ]
        entry = result["benchmarks"][bench] = {
            "rerun_change_score": summary(
                [abs(after[r][bench]["score"] - before[r][bench]["score"]) for r in scored]
            ),
            "seed_difference_score": summary(seeds),
        }
        blind = [r for r in scored if "blind_score" in after[r][bench]]
        if blind:
            entry["rerun_change_score_minus_blind"] = summary(
                [abs(gap(after, r, bench) - gap(before, r, bench)) for r in blind]
            )
    text = json.dumps(result, indent=1)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
