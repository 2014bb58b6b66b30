"""GPU check of evaluation: the plugin on CUDA (float32 and bfloat16), batch-size invariance there, and
`basic evaluate` on all eight mini benchmarks through lmms-eval, timed. Writes one JSON.

    python benchmarks/eval_gpu_check.py --out-dir "$OUT" [--n 100]

Uses the stand-in of benchmarks/eval_speed.py (a random LLaVA as wide as the mini LLMs, fixture data; answers
capped since a random model never ends its turn). On GPUs, kernels may differ with the batch shape, so the
check counts the answers that differ between batch size 1 and 8 instead of asserting none do.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance
from PIL import Image

from basic.eval.evaluate import main as evaluate
from basic.eval.plugin import BasicLlava
from basic.testing.eval import save_tiny_llava, write_benchmark_fixtures


def _requests(docs: list[dict], kind: str) -> list[Instance]:
    visual = lambda doc: [doc["image"]]
    if kind == "generate_until":
        args = [
            (d["question"], {"max_new_tokens": 16, "until": ["\n\n"]}, visual, i, "t", "test")
            for i, d in enumerate(docs)
        ]
    else:
        args = [
            (d["question"], c, visual, i, "t", "test") for i, d in enumerate(docs) for c in (" red", " blue")
        ]
    return [Instance(kind, a, idx=0, metadata={"task": "t", "doc_id": a[3], "repeats": 1}) for a in args]


def batch_invariance(checkpoint: Path, dtype: str, docs: list[dict]) -> dict:
    answers, logprobs, seconds = {}, {}, {}
    for bs in (1, 8):
        model = BasicLlava(pretrained=str(checkpoint), batch_size=bs, dtype=dtype)
        model.task_dict = {"t": {"test": docs}}
        started = time.perf_counter()
        answers[bs] = model.generate_until(_requests(docs, "generate_until"))
        logprobs[bs] = [lp for lp, _ in model.loglikelihoods(_requests(docs, "loglikelihood"))]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds[bs] = round(time.perf_counter() - started, 2)
        device, model_dtype = str(model.model.device), str(model.model.dtype)
        del model
    return {
        "device": device,
        "dtype": model_dtype,
        "docs": len(docs),
        "seconds": seconds,
        "answers_differing_bs1_vs_bs8": sum(a != b for a, b in zip(answers[1], answers[8])),
        "max_abs_logprob_diff": max(abs(a - b) for a, b in zip(logprobs[1], logprobs[8])),
        "distinct_answers": len(set(answers[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--docs", type=int, default=48, help="documents of the batch-size check")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU smoke run)"
    report: dict = {"gpu": gpu, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_tiny_llava(Path(tmp) / "checkpoint", hidden=128, image_size=32)
        rng = random.Random(0)
        docs = [
            {
                "image": Image.new(
                    "RGB",
                    (rng.randint(12, 60), rng.randint(12, 60)),
                    tuple(rng.randrange(256) for _ in "rgb"),
                ),
                "question": "what colour is the shape ?" + " describe it ." * rng.randint(0, 4),
            }
            for _ in range(args.docs)
        ]
        report["float32"] = batch_invariance(checkpoint, "float32", docs)
        report["bfloat16"] = batch_invariance(checkpoint, "bfloat16", docs)
        data = write_benchmark_fixtures(Path(tmp) / "data", n=args.n)
        out = Path(tmp) / "metrics.json"
        started = time.perf_counter()
        rc = evaluate(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
                "--batch_size",
                "16",
                "--gen_kwargs",
                "max_new_tokens=8",
            ]
        )
        report["evaluate"] = {
            "rc": rc,
            "seconds": round(time.perf_counter() - started, 1),
            "metrics": json.loads(out.read_text()) if rc == 0 else None,
        }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "eval_gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
