"""The command line of `basic evaluate` (its options only), in a module of its own so that params.yaml's
`evaluate` block is checked against it (basic.pipeline.config) without importing the evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from basic.eval import prompts
from basic.eval.benchmarks import PAPER_BENCHMARKS

DEFAULT_DATA = "data/mini"  # where the shipped mini task YAMLs expect the data, relative to the project root
DESCRIPTION = "Run lmms-eval on one checkpoint over the configured benchmarks, write its metrics JSON."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basic evaluate", description=DESCRIPTION)
    parser.add_argument(
        "--checkpoint", required=True, help="HF LLaVA checkpoint directory (the engine's stage 2)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="metrics JSON to write (results/metrics/<run>.json)"
    )
    parser.add_argument("--profile", default="mini", choices=["mini", "full"], help="benchmark map to use")
    parser.add_argument(
        "--benchmarks",
        default=",".join(PAPER_BENCHMARKS),
        help="comma-separated benchmark names (default: the paper's eight)",
    )
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA), help="mini data root (mini profile)")
    parser.add_argument(
        "--log_dir", type=Path, help="lmms-eval outputs and per-sample logs (default: <out>_logs)"
    )
    parser.add_argument(
        "--batch_size", type=int, default=8, help="per process (in float32 it does not change the answers)"
    )
    parser.add_argument(
        "--num_processes", type=int, default=1, help=">1: data-parallel under accelerate launch"
    )
    parser.add_argument(
        "--device", help="model device for one process (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model dtype (default: float32 for the mini profile; auto, the checkpoint's own on a GPU, "
        "for the full profile). Only float32 keeps answers identical across batch sizes: in "
        "16-bit, rounding depends on the batch shape and a few answers can change",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads per process (default: 1 for the mini profile, whose models are too small "
        "to gain from more and, on a shared CPU, run 30x slower with threads that wait for "
        "each other; torch's default for the full profile)",
    )
    parser.add_argument(
        "--limit", type=int, help="first N documents per task (smoke tests only: not a real score)"
    )
    parser.add_argument("--gen_kwargs", help="lmms-eval --gen_kwargs override, e.g. max_new_tokens=32")
    parser.add_argument(
        "--prompt_variant",
        default=prompts.DEFAULT_VARIANT,
        choices=prompts.VARIANTS,
        help="prompts, generation settings and answer post-processing: llava_v15 (LLaVA-1.5's own "
        "evaluation, the default) or lmms_eval (lmms-eval 0.7.3's defaults); docs/evaluation.md",
    )
    parser.add_argument(
        "--blind",
        action="store_true",
        help="also evaluate with blank images of the image processor's mean colour (same image "
        "tokens) and record each benchmark's blind_score beside its score",
    )
    return parser
