"""How far the committed metrics moved between two commits of the study, against the spread between seeds.

A rerun after a change that should not alter the science (e.g. a numerically equivalent loss computation)
moves each run's scores by the amplification of float-level differences over training; this script puts
that movement beside the seed-to-seed differences of the Table 1 rows, per benchmark.

    python benchmarks/rerun_spread.py --before <commit> [--after <commit>] --out benchmarks/results/rerun_spread.json

`--after` defaults to the working tree's results/metrics/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

METRICS = Path("results/metrics")
SEED_PAIRS = [
    ("llava-vicuna-7b", "llava-vicuna-7b-seed1"),
    ("llava-vicuna-13b", "llava-vicuna-13b-seed1"),
    ("basic-vicuna-7b", "basic-vicuna-7b-seed1"),
    ("basic-vicuna-13b", "basic-vicuna-13b-seed1"),
]


def metrics_at(revision: str | None) -> dict[str, dict]:
    """Every run's metrics file at `revision` (None: the working tree)."""
    if revision is None:
        return {p.stem: json.loads(p.read_text()) for p in sorted(METRICS.glob("*.json"))}
    names = subprocess.check_output(
        ["git", "ls-tree", "--name-only", f"{revision}:{METRICS}"], text=True
    ).split()
    return {
        Path(n).stem: json.loads(subprocess.check_output(["git", "show", f"{revision}:{METRICS / n}"]))
        for n in names
        if n.endswith(".json")
    }


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
        keys = ("score", "blind_score")
        moved = {
            k: [abs(after[r][bench][k] - before[r][bench][k]) for r in runs if k in after[r].get(bench, {})]
            for k in keys
        }
        gap = [
            abs(
                (after[r][bench]["score"] - after[r][bench]["blind_score"])
                - (before[r][bench]["score"] - before[r][bench]["blind_score"])
            )
            for r in runs
            if "blind_score" in after[r].get(bench, {})
        ]
        seeds = [
            abs(m[a][bench]["score"] - m[b][bench]["score"])
            for m in (before, after)
            for a, b in SEED_PAIRS
            if a in m and b in m
        ]
        result["benchmarks"][bench] = {
            "rerun_change_score": summary(moved["score"]),
            **({"rerun_change_score_minus_blind": summary(gap)} if gap else {}),
            "seed_difference_score_table1": summary(seeds),
        }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
