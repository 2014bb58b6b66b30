"""GPU check: bf16 LLaVA-1.5 training steps at Vicuna-7B width on one GPU, baseline vs BASIC.

What is measured (each configuration twice: the LLaVA-1.5 baseline, then BASIC with the paper's loss
weights 1.0 / 0.01 and k = half the layers), all through the project's Trainer under DeepSpeed ZeRO-2
(LLaVA's pipeline/zero2.json settings) on one GPU, bf16, SDPA attention, gradient checkpointing, 576 image
tokens per sample in 2048-token sequences, random weights and random tokens:

- `stage1`: LLaVA-1.5-7B's stage 1 exactly as one GPU runs it: CLIP ViT-L/14-336 (frozen), mlp2x_gelu
  projector (trained), a Vicuna-7B-shaped Llama with all 32 layers (frozen; gradients flow through it).
- `stage2`: full fine-tuning (projector + LLM) at Vicuna-7B width with fewer layers. AdamW under ZeRO-2
  keeps 16 bytes per trained parameter (bf16 weight and gradient, fp32 master weight and two moments),
  (24 at the peak of the optimizer step), so all 32 layers (6.6B parameters, ~107 GB) cannot train on one
  80 GB GPU without offload; the script takes as many layers as fit with their optimizer state in 75% of
  the GPU's memory (the rest for activations) and says how many (11 on an 80 GB H100).
  Per-layer time and memory scale linearly, so per-GPU cost of the real 7B stage 2 under ZeRO-3 on 8 GPUs
  can be read off the per-layer figures.

Reported per configuration: median step time (after warm-up), tokens/s, peak GPU memory, model FLOPs per
step (analytic, see `step_flops`; gradient-checkpointing recompute not counted) and MFU against the card's
dense bf16 peak, plus the losses (lm, das, sds) to show BASIC is active. Each configuration runs in its own
process (clean memory; one failure does not lose the others). Output: benchmarks/results/gpu_check_<card>.json.

`--smoke` runs the same code on CPU with tiny shapes (fp32), to test the script itself; it measures
nothing meaningful and writes to build/ by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ZERO2 = ROOT / "pipeline" / "zero2.json"  # LLaVA-1.5's stage-1 DeepSpeed config, as the engine ships it
# Dense bf16 peak of the cards this may run on (vendor datasheets, without sparsity).
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.4, "A100": 312.0, "L40S": 362.1}


@dataclass(frozen=True)
class Shape:
    """The LLaVA being trained: CLIP-style tower + mlp2x_gelu projector + Llama."""

    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    image_size: int = 336
    patch_size: int = 14
    hidden: int = 4096
    intermediate: int = 11008
    heads: int = 32
    layers: int = 32
    vocab: int = 32064  # Vicuna's 32000 + <image> (+ pad), rounded to 64 as llava-hf does
    image_token: int = 32000
    seq_len: int = 2048

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


VICUNA_7B = Shape()
SMOKE = Shape(vision_hidden=32, vision_intermediate=64, vision_layers=2, vision_heads=4, image_size=16,
              patch_size=4, hidden=64, intermediate=128, heads=4, layers=4, vocab=256, image_token=250, seq_len=64)


def build_model(shape: Shape, stage: str, dtype, device):
    """A random LLaVA of `shape` (transformers' LlavaForConditionalGeneration, SDPA), frozen as the stage is.

    Built from configs on the GPU rather than through `basic.model.build` (which loads hub checkpoints):
    writing and reloading 13 GB of random weights would cost minutes and measure nothing of training."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
                              num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                              image_size=shape.image_size, patch_size=shape.patch_size)
    text = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.heads, max_position_embeddings=max(4096, shape.seq_len))
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=shape.image_token,
                         image_seq_length=shape.image_tokens, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the training dtype directly: a 7B fp32 copy is not needed
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    from basic.model import set_trainable

    set_trainable(model, projector_only=stage == "stage1")  # the engine's freezing, as `basic train` does
    return model


class Synthetic:
    """Random samples: BOS, the image placeholders, then text up to seq_len; only the text is supervised."""

    def __init__(self, shape: Shape, image_token: int, n: int):
        self.shape, self.image_token, self.n = shape, image_token, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import torch

        g = torch.Generator().manual_seed(i)
        s = self.shape
        ids = torch.randint(3, self.image_token, (s.seq_len,), generator=g)
        ids[0] = 1
        ids[1:1 + s.image_tokens] = self.image_token
        labels = ids.clone()
        labels[:1 + s.image_tokens] = -100
        return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
                "pixel_values": torch.randn(3, s.image_size, s.image_size, generator=g)}


def step_flops(shape: Shape, stage: str, batch: int, basic_layers: int | None) -> dict[str, float]:
    """Analytic model FLOPs of one training step (2 per multiply-add; PaLM-style attention count, causal
    masking not discounted; checkpointing recompute not counted).

    Vision tower: forward only (frozen, no gradient). Projector: forward + both backward matmuls. LLM
    matmuls: forward + backward for activations, + backward for weights only in stage 2 (stage 1 trains no
    LLM weight but still back-propagates through every layer to the projector). Attention scores: forward
    + 2x backward in both stages. BASIC's extra work: SDS's two vocabulary projections of every image token
    and the gradient of one (the target side is detached), plus the text->image attention rows of the first
    k layers (no grad)."""
    s = shape
    v_tokens = s.image_tokens + 1
    vis_linear = s.vision_layers * (4 * s.vision_hidden ** 2 + 2 * s.vision_hidden * s.vision_intermediate)
    vision = 2 * vis_linear * v_tokens + 4 * s.vision_layers * v_tokens ** 2 * s.vision_hidden
    proj_params = s.vision_hidden * s.hidden + s.hidden * s.hidden
    projector = 3 * 2 * proj_params * s.image_tokens
    llm_linear = s.layers * (4 * s.hidden ** 2 + 3 * s.hidden * s.intermediate) + s.hidden * s.vocab
    llm_matmul = 2 * llm_linear * s.seq_len * (3 if stage == "stage2" else 2)
    attention = 3 * 4 * s.layers * s.seq_len ** 2 * s.hidden
    llava = batch * (vision + projector + llm_matmul + attention)
    extra = 0.0
    if basic_layers:
        text = s.seq_len - 1 - s.image_tokens
        extra = batch * (3 * 2 * s.image_tokens * s.hidden * s.vocab + 2 * basic_layers * text * s.image_tokens * s.hidden)
    return {"llava": float(llava), "basic_extra": float(extra)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(name: str, stage: str, basic: bool, shape: Shape, batch: int, warmup: int, steps: int,
            smoke: bool) -> dict:
    """Train `warmup + steps` steps of one configuration in this process and measure the timed steps."""
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                       "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    import torch
    from transformers import TrainerCallback

    from basic.train import TrainingArguments

    cuda = torch.cuda.is_available() and not smoke
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(shape, stage, dtype, "cuda" if cuda else "cpu")
    k = shape.layers // 2 if basic else None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)

    times: list[float] = []
    peak: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
                if state.global_step == warmup:
                    torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step > warmup:
                times.append(time.perf_counter() - self.t0)
            if cuda and state.global_step == warmup + steps:
                peak["allocated_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
                peak["reserved_gib"] = torch.cuda.max_memory_reserved() / 2 ** 30

    with tempfile.TemporaryDirectory(prefix=f"gpu_check-{name}-") as scratch:  # Trainer's output_dir: nothing kept
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=batch, max_steps=warmup + steps,
            learning_rate=2e-5 if stage == "stage2" else 1e-3, lr_scheduler_type="constant", weight_decay=0.0,
            bf16=cuda, tf32=cuda, gradient_checkpointing=True, deepspeed=str(ZERO2), logging_steps=1,
            report_to="none", save_strategy="no", dataloader_num_workers=0, use_cpu=not cuda, seed=0,
            optim="adamw_torch", disable_tqdm=True, model_max_length=shape.seq_len,
        )
        trainer = make_trainer(model, args, Synthetic(shape, model.config.image_token_id, batch * (warmup + steps)),
                               basic, k, [Timer()])
        trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    flops = step_flops(shape, stage, batch, k)
    median = statistics.median(times)
    card = torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})"
    peak_tflops = next((v for key, v in PEAK_BF16_TFLOPS.items() if key in card), None) if cuda else None
    total = flops["llava"] + flops["basic_extra"]
    return {
        "name": name, "stage": stage, "basic": basic, "status": "ok", "card": card,
        "llm_layers": shape.layers, "basic_layers": k, "batch": batch, "seq_len": shape.seq_len,
        "image_tokens": shape.image_tokens, "trainable_params": trainable, "frozen_params": frozen,
        "warmup_steps": warmup, "timed_steps": len(times),
        "step_time_s": {"median": median, "mean": statistics.fmean(times), "min": min(times), "max": max(times)},
        "tokens_per_s": batch * shape.seq_len / median,
        "peak_memory": peak or None,
        "tflop_per_step": {key: v / 1e12 for key, v in flops.items()},
        "mfu": total / median / (peak_tflops * 1e12) if peak_tflops else None,
        "losses_last": {key: history[-1][key] for key in ("loss", "lm_loss", "das", "sds") if history and key in history[-1]},
    }


def make_trainer(model, args, dataset, basic: bool, basic_layers: int | None, callbacks):
    """The engine's Trainer (`basic.train.LlavaTrainer`), with the paper's BASIC objective when `basic`."""
    from basic.train import LlavaTrainer

    objective = None
    if basic:
        from basic.method.config import BasicArguments
        from basic.method.objective import BasicObjective

        objective = BasicObjective(BasicArguments(basic_das_weight=1.0, basic_sds_weight=0.01,
                                                  basic_layers=basic_layers), model)
    return LlavaTrainer(model=model, args=args, train_dataset=dataset, objective=objective, callbacks=callbacks)


def _card_slug(card: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")


# ZeRO-2 keeps per trained parameter a bf16 weight and gradient (2 + 2 bytes), an fp32 master weight and
# two fp32 Adam moments (4 + 8); during the step it also holds an fp32 copy of the gradient partition and
# AdamW's fp32 temporaries (~8): 24 bytes at the peak.
BYTES_PER_TRAINED_PARAM = 24


def auto_stage2_layers(shape: Shape, gpu_bytes: int, fraction: float = 0.75) -> int:
    """How many 7B-width layers fit full fine-tuning under ZeRO-2 with their optimizer state in `fraction`
    of the GPU's memory (the rest for activations, logits and the allocator's slack)."""
    per_layer = 4 * shape.hidden ** 2 + 3 * shape.hidden * shape.intermediate
    fixed_trained = 2 * shape.hidden * shape.vocab + shape.vision_hidden * shape.hidden + shape.hidden ** 2
    vision = shape.vision_layers * (4 * shape.vision_hidden ** 2 + 2 * shape.vision_hidden * shape.vision_intermediate)
    budget = fraction * gpu_bytes - BYTES_PER_TRAINED_PARAM * fixed_trained - 2 * vision
    return max(1, min(shape.layers, int(budget // (BYTES_PER_TRAINED_PARAM * per_layer))))


def _probe_gpu() -> tuple[str, int] | None:
    """(name, total bytes) of GPU 0, asked in a child process so that this one never holds a CUDA context."""
    code = ("import json, torch; p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; "
            "print(json.dumps(p and [p.name, p.total_memory]))")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(answer.strip().splitlines()[-1]) if answer.strip() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: tests the script, measures nothing")
    p.add_argument("--configs", nargs="+", default=["stage1", "stage2"], choices=["stage1", "stage2"])
    p.add_argument("--stage1-batch", type=int, default=None, help="default 8 (smoke: 2)")
    p.add_argument("--stage2-batch", type=int, default=None, help="default 4 (smoke: 2)")
    p.add_argument("--stage2-layers", type=int, default=None, help="LLM layers for stage2 (default: what fits)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; smoke: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 8; smoke: 2)")
    p.add_argument("--budget-s", type=float, default=450, help="stop starting configurations after this")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/gpu_check_<card>.json)")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for gpu_check_<card>.json instead")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, JSON to --out
    args = p.parse_args(argv)
    base = SMOKE if args.smoke else VICUNA_7B
    for key, full, smoke in (("stage1_batch", 8, 2), ("stage2_batch", 4, 2), ("warmup", 3, 1), ("steps", 8, 2)):
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else full)

    if args.one:
        name, stage, basic, layers, batch = json.loads(args.one)
        result = run_one(name, stage, basic, replace(base, layers=layers), batch, args.warmup, args.steps, args.smoke)
        args.out.write_text(json.dumps(result, indent=1))
        return 0

    started = time.time()
    gpu = None if args.smoke else _probe_gpu()
    on_gpu = gpu is not None
    if not on_gpu and not args.smoke:
        print("gpu_check: no CUDA device; use --smoke to test the script on CPU", file=sys.stderr)
        return 2
    card = gpu[0] if on_gpu else "cpu-smoke"
    folder = args.out_dir or (ROOT / "build" if args.smoke else RESULTS)
    out = args.out or folder / f"gpu_check_{_card_slug(card)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    stage2_layers = args.stage2_layers or (auto_stage2_layers(base, gpu[1]) if on_gpu else base.layers)
    plan = []
    for stage in args.configs:
        layers, batch = (base.layers, args.stage1_batch) if stage == "stage1" else (stage2_layers, args.stage2_batch)
        for basic in (False, True):
            plan.append((f"{stage}-{'basic' if basic else 'baseline'}", stage, basic, layers, batch))
    results = []
    for name, stage, basic, layers, batch in plan:
        left = args.budget_s - (time.time() - started)
        if left < 30:
            results.append({"name": name, "status": "skipped", "reason": f"time budget of {args.budget_s:.0f}s spent"})
            continue
        one_out = out.with_name(f"{out.stem}.{name}.json")
        cmd = [sys.executable, __file__, "--one", json.dumps([name, stage, basic, layers, batch]), "--out", str(one_out),
               "--warmup", str(args.warmup), "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
        print(f"gpu_check: {name} ({layers} LLM layers, batch {batch}) ...", flush=True)
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False)
            if proc.returncode == 0:
                results.append(json.loads(one_out.read_text()))
                one_out.unlink()
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
                results.append({"name": name, "status": "error", "llm_layers": layers, "batch": batch,
                                "error": "\n".join(tail)})
        except subprocess.TimeoutExpired:
            results.append({"name": name, "status": "timeout", "llm_layers": layers, "batch": batch})
        r = results[-1]
        if r["status"] == "ok":
            mem = r["peak_memory"]["allocated_gib"] if r["peak_memory"] else float("nan")
            print(f"  {r['step_time_s']['median']:.3f} s/step, {r['tokens_per_s']:.0f} tokens/s, "
                  f"peak {mem:.1f} GiB, MFU {r['mfu'] if r['mfu'] is None else round(r['mfu'], 3)} "
                  f"({time.time() - t0:.0f}s)", flush=True)
        else:
            print(f"  {r['status']}: {r.get('error', r.get('reason', ''))[-2000:]}", flush=True)

    by_name = {r["name"]: r for r in results}
    comparison = {}
    for stage in args.configs:
        a, b = by_name.get(f"{stage}-baseline"), by_name.get(f"{stage}-basic")
        if a and b and a["status"] == b["status"] == "ok":
            comparison[stage] = {"step_time_ratio": b["step_time_s"]["median"] / a["step_time_s"]["median"]}
            if a["peak_memory"] and b["peak_memory"]:
                comparison[stage]["peak_memory_ratio"] = b["peak_memory"]["allocated_gib"] / a["peak_memory"]["allocated_gib"]
    import deepspeed
    import torch
    import transformers

    report = {
        "check": "gpu_check", "smoke": args.smoke, "card": card,
        "peak_bf16_tflops": next((v for k, v in PEAK_BF16_TFLOPS.items() if k in card), None) if on_gpu else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "transformers": transformers.__version__,
                     "deepspeed": deepspeed.__version__},
        "shape": asdict(base), "settings": {"warmup": args.warmup, "steps": args.steps, "zero": 2, "attention": "sdpa",
                                             "gradient_checkpointing": True, "dtype": "bfloat16" if on_gpu else "float32"},
        "results": results, "basic_vs_baseline": comparison, "wall_s": time.time() - started,
    }
    out.write_text(json.dumps(report, indent=1))
    print(f"gpu_check: wrote {out} ({report['wall_s']:.0f}s)")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
