"""Time `basic analyze` on mini checkpoints, one core (goal: <= 15 s per run), write JSON.

    python benchmarks/analysis_speed.py --checkpoint models/llava-vicuna-7b/finetune \\
        [--checkpoint models/basic-vicuna-7b/finetune ...] --data data/mini [--repeats 2] [--out JSON]

Each repeat runs every checkpoint once, in turn (A B A B), as the pipeline's stage runs it: its own process
(`python -m basic.cli analyze`, imports and model loading included), the mini profile's defaults (300 images
at most, from the mini VQAv2, GQA and TextVQA), one torch thread, pinned to one CPU where `taskset` exists.
Recorded per run: wall seconds, CPU seconds of the process (user + system: what it costs one idle core,
whatever the machine's load) and the analysis's own time (after imports, as `basic analyze` reports it).
Without `--checkpoint` it builds a stand-in (a random LLaVA as wide as the mini LLMs and fixture benchmarks);
the JSON says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 15


def run_once(checkpoint: Path, data: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "basic.cli",
        "analyze",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *command]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"basic analyze failed on {checkpoint}:\n{done.stderr[-3000:]}")
    own = re.search(r"basic analyze: (\d+) images, (\d+) layers in ([\d.]+) s", done.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "analysis_seconds": float(own.group(3)) if own else None,
        "images": int(own.group(1)) if own else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, action="append", help="a mini stage-2 checkpoint (repeatable)"
    )
    parser.add_argument("--data", type=Path, help="the mini world (with benchmarks/scenes.jsonl)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/analysis_speed.json"))
    parser.add_argument("--note", default="", help="what the checkpoints and data are, for the record")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stand_in = not args.checkpoint
        if stand_in:
            from basic.testing.eval import save_tiny_llava, write_benchmark_fixtures

            checkpoints = [save_tiny_llava(Path(tmp) / "checkpoint", hidden=128, image_size=64)]
            data = write_benchmark_fixtures(Path(tmp) / "data", n=150, image_size=64)
        else:
            if args.data is None:
                parser.error("--data goes with --checkpoint")
            checkpoints, data = args.checkpoint, args.data
        load = [os.getloadavg()[0]]
        runs: dict[str, list[dict]] = {str(c): [] for c in checkpoints}
        for _ in range(args.repeats):  # interleaved: A B A B
            for checkpoint in checkpoints:
                runs[str(checkpoint)].append(run_once(checkpoint, data, Path(tmp) / "analysis.json"))
                load.append(os.getloadavg()[0])

    def median(values) -> float:
        return round(statistics.median(values), 2)

    per_checkpoint = {
        c: {
            "median_wall_seconds": median(r["wall_seconds"] for r in rs),
            "median_cpu_seconds": median(r["cpu_seconds"] for r in rs),
            "median_analysis_seconds": median(r["analysis_seconds"] for r in rs),
            "runs": rs,
        }
        for c, rs in runs.items()
    }
    worst_cpu = max(v["median_cpu_seconds"] for v in per_checkpoint.values())
    result = {
        "goal_seconds": GOAL_SECONDS,
        # CPU seconds of the one-thread process: its time on an idle core; wall time also counts other load.
        "worst_median_cpu_seconds": worst_cpu,
        "met": worst_cpu <= GOAL_SECONDS,
        "checkpoints": per_checkpoint,
        "stand_in": "random LLaVA (LLM 4 layers x 128, 64 image tokens), fixture benchmarks"
        if stand_in
        else None,
        "data": str(data) if not stand_in else "fixtures, 150 questions per benchmark",
        "threads": 1,
        "pinned": bool(shutil.which("taskset")),
        "load_average_1min": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "checkpoints"}, indent=1))
    for c, v in per_checkpoint.items():
        print(
            f"{c}: wall {v['median_wall_seconds']} s, cpu {v['median_cpu_seconds']} s, "
            f"analysis {v['median_analysis_seconds']} s (median of {len(v['runs'])})"
        )


if __name__ == "__main__":
    main()
