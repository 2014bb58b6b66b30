"""GPU check: LLaVA-1.5-7B training steps on one GPU, baseline and BASIC interleaved in one process per stage.

Each stage runs in its own process (clean memory; one failure does not lose the other) and measures with
`benchmarks/basic_overhead.py`'s machinery at its `7b` scale: a random LLaVA of LLaVA-1.5-7B's shapes
(Vicuna-7B, all 32 layers; CLIP ViT-L/14-336, 576 image tokens; mlp2x_gelu projector), bf16, SDPA,
gradient checkpointing, TF32; one batch of 8 rows of 2048 tokens right-padded to 100/90/80/70 % with
their attention masks; the baseline (LLaVA-1.5's loss) and BASIC (paper weights 1.0 / 0.01, k = 16)
take turns step after step (A B A B ...) on the same weights and batch, with warm-up steps first.

- `stage1`: the projector trains (AdamW), the LLM is frozen (gradients flow through it);
- `stage2`: projector and all 32 LLM layers train. AdamW keeps its moments in bf16 like the weights
  (fused kernel): LLaVA's DeepSpeed setup keeps float32 master weights and moments (16 bytes per
  parameter, 107 GB at 7B), which one GPU cannot hold. The optimizer is the same for both variants, and
  a cheaper optimizer step only makes BASIC's share of the step look larger, never smaller.

Reported per stage: median step time with quartiles per variant and the per-round ratio, peak GPU
memory, BASIC's components (CUDA events: scoring, hooks, SDS, DAS) as fractions of the baseline step,
host synchronisations counted in one step of each variant (`torch.cuda.set_sync_debug_mode("warn")`;
BASIC must add none), model FLOPs per step (analytic, `step_flops`; the accounting by operator is
benchmarks/step_flops.py) and MFU against the card's dense bf16 peak, the commit and the code path.
Output: benchmarks/results/gpu_check_<card>.json. `--smoke` runs the same code on CPU at toy shapes
(basic_overhead's `smoke` scale) to test the script; it measures nothing and writes to build/.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Dense bf16 peak of the cards this may run on (vendor datasheets, without sparsity).
PEAK_BF16_TFLOPS = {
    "H100 80GB HBM3": 989.4,
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}


@dataclass(frozen=True)
class Shape:
    """The LLaVA being trained, for the analytic FLOP model: CLIP-style tower + mlp2x_gelu projector + Llama."""

    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    image_size: int = 336
    patch_size: int = 14
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    vocab: int = 32064  # Vicuna's 32000 + <image> (+ pad), rounded to 64 as llava-hf does
    seq_len: int = 2048

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


VICUNA_7B = Shape()


def step_flops(shape: Shape, stage: str, batch: int, basic_layers: int | None) -> dict[str, float]:
    """Analytic model FLOPs of one training step (2 per multiply-add; PaLM-style attention count, causal
    masking not discounted; checkpointing recompute not counted).

    Vision tower: forward only (frozen, no gradient). Projector: forward + both backward matmuls. LLM
    matmuls: forward + backward for activations, + backward for weights only in stage 2 (stage 1 trains no
    LLM weight but still back-propagates through every layer to the projector). Attention scores: forward
    + 2x backward in both stages. BASIC's extra work: SDS's three vocabulary products of every image token
    (student and target logits, the student's gradient), and in layers 1..k the scores of the positions
    after each image against its tokens (no grad)."""
    s = shape
    v_tokens = s.image_tokens + 1
    vis_linear = s.vision_layers * (4 * s.vision_hidden**2 + 2 * s.vision_hidden * s.vision_intermediate)
    vision = 2 * vis_linear * v_tokens + 4 * s.vision_layers * v_tokens**2 * s.vision_hidden
    proj_params = s.vision_hidden * s.hidden + s.hidden * s.hidden
    projector = 3 * 2 * proj_params * s.image_tokens
    llm_linear = s.layers * (4 * s.hidden**2 + 3 * s.hidden * s.intermediate) + s.hidden * s.vocab
    llm_matmul = 2 * llm_linear * s.seq_len * (3 if stage == "stage2" else 2)
    attention = 3 * 4 * s.layers * s.seq_len**2 * s.hidden
    llava = batch * (vision + projector + llm_matmul + attention)
    extra = 0.0
    if basic_layers:
        m = s.image_tokens
        extra = batch * (3 * 2 * m * s.hidden * s.vocab + 2 * basic_layers * (s.seq_len - m) * m * s.hidden)
    return {"llava": float(llava), "basic_extra": float(extra)}


def sync_counts(runner, inputs, variants) -> dict[str, int]:
    """Host synchronisations in one step of each variant (the model's own, e.g. transformers looking at
    the padding mask, are in both)."""
    import torch

    counts = {}
    for variant in variants:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runner.step(variant, inputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts[variant] = sum("synchroniz" in str(w.message) for w in caught)
    return counts


def run_stage(stage: str, batch: int, warmup: int, steps: int, smoke: bool) -> dict:
    """Interleaved baseline / BASIC steps of one stage in this process (basic_overhead.run), plus the
    synchronisation counts and the FLOP model."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import basic_overhead
    import torch

    device = torch.device("cpu" if smoke else "cuda")
    scale = "smoke" if smoke else "7b"
    shape = replace(basic_overhead.SCALES[scale], batch=batch)
    if not smoke:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # LLaVA's --tf32 True
    variants = ("baseline", "basic")

    def syncs(runner, inputs) -> dict:
        return {} if smoke else {"host_synchronisations_per_step": sync_counts(runner, inputs, variants)}

    result = basic_overhead.run(scale, int(stage[-1]), shape, warmup, steps, device, variants, after=syncs)
    layers = result["basic_layers"]
    model_shape = replace(VICUNA_7B, layers=shape.layers, seq_len=shape.seq_len)
    flops = step_flops(model_shape, stage, batch, layers)
    base, basic = result["variants"]["baseline"], result["variants"]["basic"]
    card = result["device"]
    peak = next((v for key, v in PEAK_BF16_TFLOPS.items() if key in card), None) if not smoke else None
    if peak and base["status"] == "ok" and basic["status"] == "ok":
        result["mfu"] = {
            "baseline": flops["llava"] / base["median_seconds"] / (peak * 1e12),
            "basic": (flops["llava"] + flops["basic_extra"]) / basic["median_seconds"] / (peak * 1e12),
        }
    result["tflop_per_step"] = {key: v / 1e12 for key, v in flops.items()}
    return result


def _card_slug(card: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")


def _probe_gpu() -> tuple[str, int] | None:
    """(name, total bytes) of GPU 0, asked in a child process so that this one never holds a CUDA context."""
    code = (
        "import json, torch; p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; "
        "print(json.dumps(p and [p.name, p.total_memory]))"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(answer.strip().splitlines()[-1]) if answer.strip() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke", action="store_true", help="toy shapes on CPU: tests the script, measures nothing"
    )
    p.add_argument("--configs", nargs="+", default=["stage1", "stage2"], choices=["stage1", "stage2"])
    p.add_argument("--batch", type=int, default=None, help="rows per step (default 8; smoke: 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 3; smoke: 1)")
    p.add_argument(
        "--steps", type=int, default=None, help="timed rounds, each variant once (default 10; smoke: 2)"
    )
    p.add_argument("--budget-s", type=float, default=480, help="stop starting stages after this")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: benchmarks/results/gpu_check_<card>.json)"
    )
    p.add_argument("--out-dir", type=Path, default=None, help="folder for gpu_check_<card>.json instead")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one stage, JSON to --out
    args = p.parse_args(argv)
    for key, full, smoke in (("batch", 8, 2), ("warmup", 3, 1), ("steps", 10, 2)):
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else full)

    if args.one:
        result = run_stage(args.one, args.batch, args.warmup, args.steps, args.smoke)
        args.out.write_text(json.dumps(result, indent=1))
        return 0

    started = time.time()
    gpu = None if args.smoke else _probe_gpu()
    if gpu is None and not args.smoke:
        print("gpu_check: no CUDA device; use --smoke to test the script on CPU", file=sys.stderr)
        return 2
    card = gpu[0] if gpu else "cpu-smoke"
    folder = args.out_dir or (ROOT / "build" if args.smoke else RESULTS)
    out = args.out or folder / f"gpu_check_{_card_slug(card)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for stage in args.configs:
        left = args.budget_s - (time.time() - started)
        if left < 60:
            results[stage] = {"status": "skipped", "reason": f"time budget of {args.budget_s:.0f}s spent"}
            continue
        one_out = out.with_name(f"{out.stem}.{stage}.json")
        cmd = [
            sys.executable,
            __file__,
            "--one",
            stage,
            "--out",
            str(one_out),
            "--batch",
            str(args.batch),
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
        ] + (["--smoke"] if args.smoke else [])
        print(
            f"gpu_check: {stage} (batch {args.batch}, {args.warmup} warm-up + {args.steps} timed rounds) ...",
            flush=True,
        )
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False)
            if proc.returncode == 0:
                results[stage] = {"status": "ok", **json.loads(one_out.read_text())}
                one_out.unlink()
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
                results[stage] = {"status": "error", "error": "\n".join(tail)}
        except subprocess.TimeoutExpired:
            results[stage] = {"status": "timeout"}
        r = results[stage]
        if r["status"] == "ok":
            print(
                f"  ratios {json.dumps(r['ratios_to_baseline'])}, syncs "
                f"{r.get('host_synchronisations_per_step')} ({time.time() - t0:.0f}s)",
                flush=True,
            )
        else:
            print(f"  {r['status']}: {r.get('error', r.get('reason', ''))[-2000:]}", flush=True)

    comparison = {}
    for stage, r in results.items():
        if r["status"] == "ok" and "basic" in r["ratios_to_baseline"]:
            ratio = r["ratios_to_baseline"]["basic"]
            syncs = r.get("host_synchronisations_per_step")
            comparison[stage] = {
                "step_time_ratio": ratio["time"],
                "per_round": ratio["time_per_round"],
                "peak_memory_ratio": ratio["memory"],
                "extra_syncs": None if syncs is None else syncs["basic"] - syncs["baseline"],
            }
    import torch
    import transformers

    report = {
        "check": "gpu_check",
        "smoke": args.smoke,
        "card": card,
        "peak_bf16_tflops": next((v for k, v in PEAK_BF16_TFLOPS.items() if k in card), None)
        if gpu
        else None,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
        },
        "shape": asdict(VICUNA_7B),
        "settings": {
            "batch": args.batch,
            "warmup": args.warmup,
            "steps": args.steps,
            "order": "interleaved: baseline, basic, then basic, baseline",
        },
        "stages": results,
        "basic_vs_baseline": comparison,
        "goals": {"time": 1.03, "memory": 1.02},
        "wall_s": time.time() - started,
    }
    out.write_text(json.dumps(report, indent=1))
    print(f"gpu_check: wrote {out} ({report['wall_s']:.0f}s)")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
