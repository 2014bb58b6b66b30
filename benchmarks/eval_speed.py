"""Time `basic evaluate` on one mini checkpoint over all eight mini benchmarks (goal: <= 60 s), write JSON.

    python benchmarks/eval_speed.py [--checkpoint models/<run>/finetune --data data/mini] [--out JSON]

With a trained checkpoint and the mini data this is the real measurement. Without them it builds a stand-in:
a random LLaVA as wide as the mini LLMs (basic.mini.llms: 4 layers, hidden 128) and `--n` fixture records per
benchmark; a random model never emits its end of turn, so answers are capped at `--max_new_tokens` (about a
trained model's answer length) and the JSON says so. Wall time includes lmms-eval's import and model loading.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from basic.eval.evaluate import main as evaluate
from basic.testing.eval import save_tiny_llava, write_benchmark_fixtures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument(
        "--n", type=int, default=100, help="stand-in records per benchmark (MMBench x4 rotations)"
    )
    parser.add_argument(
        "--max_new_tokens", type=int, help="answer cap (default: 8 for the stand-in, none otherwise)"
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_speed.json"))
    parser.add_argument("--note", default="", help="what the checkpoint and data are, for the record")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stand_in = args.checkpoint is None
        checkpoint = args.checkpoint or save_tiny_llava(Path(tmp) / "checkpoint", hidden=128, image_size=32)
        data = args.data or write_benchmark_fixtures(Path(tmp) / "data", n=args.n)
        argv = [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(Path(tmp) / "metrics.json"),
            "--batch_size",
            str(args.batch_size),
        ]
        cap = args.max_new_tokens or (8 if stand_in else None)
        if cap:
            argv += ["--gen_kwargs", f"max_new_tokens={cap}"]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        if evaluate(argv) != 0:
            raise SystemExit("basic evaluate failed")
        seconds = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    result = {
        "seconds": round(seconds, 1),
        "goal_seconds": 60,
        "met": seconds <= 60,
        # CPU time of lmms-eval (one thread): about the wall time on an idle machine, whatever the load now
        "lmms_eval_cpu_seconds": round(children.ru_utime + children.ru_stime, 1),
        "samples": {name: entry["n"] for name, entry in metrics.items()},
        "checkpoint": "stand-in: random LLaVA, LLM 4 layers x 128, 64 image tokens"
        if stand_in
        else str(checkpoint),
        "answers_capped_at": cap,
        "data": f"fixtures, {args.n} records per benchmark" if args.data is None else str(args.data),
        "documents": sum(entry["n"] for entry in metrics.values()),
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "machine": platform.platform(),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
