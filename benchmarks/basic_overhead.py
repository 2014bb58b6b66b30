"""What BASIC costs: step time and peak memory of BASIC vs the LLaVA-1.5 baseline vs a naive BASIC.

One process, one random LLaVA (transformers' LlavaForConditionalGeneration, the engine's freezing), one
padded batch (rows right-padded to 100/90/80/70 % of the length, with their attention masks) and seed;
the variants take turns, step after step (A B C C B A A B C ...), so that they see the same machine state
and the same weights' drift:

- `baseline`: the LLaVA-1.5 step (SDPA; the loss as the model computes it), what `basic train` runs with
  the BASIC weights at 0;
- `basic`: the same step through `basic.method.objective.BasicObjective` (paper weights 1.0 / 0.01,
  k = half the layers): the BASIC attention wrapper, hooks keeping only image positions, SDS;
- `naive`: the obvious implementation: eager attention with `output_attentions=True` and
  `output_hidden_states=True`, patch weights and v_hat read off those, then the same DAS/SDS functions.
  Its terms must equal BASIC's (up to rounding): `terms` in the JSON shows both.

A step is forward, backward and an AdamW step on the stage's trainable parameters (stage 1: projector;
stage 2: projector + LLM; the vision tower is always frozen); nothing is read back from the device until
the step is over. Time: median over the timed steps and the median of the per-round ratios (CPU: the
process's CPU time, since the wall clock of a shared CPU measures the neighbours; CUDA: wall clock,
synchronised), with quartiles. Memory: peak bytes of live tensors during a step, everything included
(weights, optimizer state, activations); on CUDA `max_memory_allocated`, on CPU the PyTorch profiler's
allocation events (a separate step per variant), added to the bytes alive at the step's start. After the
timed rounds, a few BASIC steps are timed per component (`COMPONENTS`: scoring, hooks, SDS, DAS; CUDA
events on a GPU) as fractions of the baseline step. `--scale mini` (default) is the embedded world's
shapes on CPU; `--scale 7b` a Vicuna-7B-shaped LLM with a CLIP-L/336-shaped tower (576 image tokens),
2048-token rows, bf16, gradient checkpointing and TF32, as LLaVA-1.5's scripts train (GPU). The JSON
names the commit and the code path it measured. Output: benchmarks/results/
basic_overhead_<scale>_stage<N>_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from basic.method import attention, capture, das_loss, losses, sds_loss
from basic.method import objective as objective_module
from basic.method.capture import default_layers, locate
from basic.method.config import BasicArguments
from basic.method.losses import layer_weights
from basic.method.objective import BasicObjective
from basic.model import set_trainable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("baseline", "basic", "naive")
GOALS = {"cpu": {"time": 1.05, "memory": 1.02}, "cuda": {"time": 1.03, "memory": 1.02}}
# BASIC's parts, by the functions that do them: (owner, attribute, component).
COMPONENTS = (
    (attention, "image_attention", "scoring"),
    (capture, "locate", "hooks"),
    (capture.Capture, "_image_features", "hooks"),
    (capture.Capture, "keep_image_positions", "hooks"),
    (capture.Capture, "patch_weights", "hooks"),
    (objective_module, "sds_loss", "sds"),
    (objective_module, "das_loss", "das"),
)


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int
    patch_size: int
    seq_len: int
    batch: int
    dtype: str
    gradient_checkpointing: bool

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


SCALES = {
    # The mini world's vicuna-7b stand-in and clip-l-336 stand-in (basic.mini), its 256-token limit and
    # stage-2 batch; fp32 on CPU as the mini profile trains.
    "mini": Shape(
        hidden=128,
        layers=4,
        heads=4,
        intermediate=344,
        vocab=2048,
        vision_hidden=96,
        vision_layers=4,
        vision_heads=4,
        vision_intermediate=384,
        image_size=64,
        patch_size=8,
        seq_len=256,
        batch=16,
        dtype="float32",
        gradient_checkpointing=False,
    ),
    # The 7b mechanics (bf16, gradient checkpointing) at toy size: tests the script, measures nothing.
    "smoke": Shape(
        hidden=64,
        layers=4,
        heads=4,
        intermediate=128,
        vocab=512,
        vision_hidden=32,
        vision_layers=2,
        vision_heads=4,
        vision_intermediate=64,
        image_size=32,
        patch_size=8,
        seq_len=64,
        batch=2,
        dtype="bfloat16",
        gradient_checkpointing=True,
    ),
    # LLaVA-1.5-7B: Vicuna-7B, CLIP ViT-L/14-336 (576 tokens), 2048 tokens, bf16, gradient checkpointing.
    "7b": Shape(
        hidden=4096,
        layers=32,
        heads=32,
        intermediate=11008,
        vocab=32064,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate=4096,
        image_size=336,
        patch_size=14,
        seq_len=2048,
        batch=4,
        dtype="bfloat16",
        gradient_checkpointing=True,
    ),
}


def build(shape: Shape, stage: int, device: torch.device) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
    )
    text = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=max(4096, shape.seq_len),
        pad_token_id=0,
        use_cache=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token(shape),
        image_seq_length=shape.image_tokens,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, shape.dtype))  # no float32 copy of a 7B model on the way
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    set_trainable(model, projector_only=stage == 1)
    if shape.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model.train()


def image_token(shape: Shape) -> int:
    return shape.vocab - 1  # the last id; text ids are drawn below it


def make_batch(shape: Shape, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """LLaVA-like rows: a 8-token prefix, the image, then text; the second half of the text is the response;
    rows are right-padded to 100%, 90%, 80%, ... of seq_len (so SDPA gets a padding mask, as in training)."""
    g = torch.Generator().manual_seed(seed)
    B, S, m = shape.batch, shape.seq_len, shape.image_tokens
    token = image_token(shape)
    ids = torch.randint(3, token, (B, S), generator=g)
    ids[:, 8 : 8 + m] = token
    lengths = [max(8 + m + 8, int(S * (1 - 0.1 * (b % 4)))) for b in range(B)]
    mask = torch.zeros(B, S, dtype=torch.long)
    labels = torch.full((B, S), -100)
    for b, length in enumerate(lengths):
        mask[b, :length] = 1
        ids[b, length:] = 0
        response = (8 + m + length) // 2
        labels[b, response:length] = ids[b, response:length]
    pixels = torch.randn(B, 3, shape.image_size, shape.image_size, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
        "pixel_values": pixels.to(device, getattr(torch, shape.dtype)),
    }


class Naive:
    """BASIC the obvious way: all attentions and hidden states returned by the model (which must run eager
    attention for that, also in a gradient-checkpointing recompute: the caller switches it)."""

    def __init__(self, model, args: BasicArguments):
        self.args, self.k = args, default_layers(model)
        self.weights = layer_weights(self.k).tolist()

    def __call__(self, model, inputs):
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
        images, d = len(inputs["pixel_values"]), out.image_hidden_states.shape[-1]
        m = out.image_hidden_states.numel() // (images * d)
        p = locate(
            inputs["input_ids"], inputs["attention_mask"], None, model.config.image_token_id, images, m
        )
        with torch.no_grad():
            v_hat = sum(
                w * out.hidden_states[i + 1].reshape(-1, d)[p.flat].float()
                for i, w in enumerate(self.weights)
            )
            totals = 0
            for att in out.attentions[: self.k]:
                att = att[p.row]  # [images, heads, S, S]
                heads, Q = att.shape[1], p.queries.shape[1]
                rows_q = att.gather(2, p.queries[:, None, :, None].expand(images, heads, Q, att.shape[-1]))
                on_image = rows_q.gather(3, p.keys[:, None, None, :].expand(images, heads, Q, m))
                totals = (
                    totals
                    + torch.where(p.q_valid[:, None, :, None], on_image.float(), 0.0).sum((1, 2)) / heads
                )
            count = p.query_count[:, None]
            a = torch.where(count > 0, totals / (self.k * count.clamp(min=1)), 0.0)
        v = out.image_hidden_states.view(images, m, -1)
        v_hat = v_hat.view(v.shape)
        das = das_loss(v, v_hat, a)
        sds = sds_loss(v, v_hat, a, model.get_input_embeddings().weight.detach())
        extra = self.args.basic_das_weight * das + self.args.basic_sds_weight * sds
        return out.loss + extra, {"das": das.detach(), "sds": sds.detach()}


class KernelUse:
    """Counts the layers whose attention came from SDPA's kernel with its log-normaliser (else: rows scored)."""

    def __init__(self):
        self.kernel = self.rows = 0
        self.function = attention.sdpa_with_log_norm
        attention.sdpa_with_log_norm = self

    def __call__(self, *args, **kwargs):
        result = self.function(*args, **kwargs)
        if result is None:
            self.rows += 1
        else:
            self.kernel += 1
        return result


class Runner:
    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        args = BasicArguments(basic_das_weight=1.0, basic_sds_weight=0.01)
        self.objective = BasicObjective(args, model)  # switches the LLM to basic_sdpa
        self.naive = Naive(model, args)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-6, fused=device.type == "cuda")

    # The LLM's attention per variant, for the forward pass and the backward pass (checkpointing recomputes).
    IMPLEMENTATION: ClassVar[dict[str, str]] = {
        "baseline": "sdpa",
        "basic": attention.PREFIX + "sdpa",
        "naive": "eager",
    }

    def loss(self, variant: str, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if variant == "baseline":
            return self.model(**inputs).loss, {}
        if variant == "basic":
            out = self.objective(self.model, inputs)
            return out.outputs.loss + out.extra_loss, out.logs
        return self.naive(self.model, inputs)

    def step(self, variant: str, inputs) -> dict[str, torch.Tensor]:
        """One training step; its loss and terms stay on the device (read them after timing)."""
        self.model.set_attn_implementation({"text_config": self.IMPLEMENTATION[variant]})
        loss, terms = self.loss(variant, inputs)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), **terms}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed_step(self, variant: str, inputs) -> tuple[float, float, int | None, dict[str, torch.Tensor]]:
        """(wall seconds, CPU seconds of this process, CUDA peak bytes or None, the step's loss and terms)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        values = self.step(variant, inputs)
        self.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None
        return seconds, cpu_seconds, peak, values

    def terms(self, inputs, naive: bool = True) -> dict[str, dict[str, float]]:
        """BASIC's terms (through SDPA's kernel, and through whole scored rows) and the naive version's, on the
        same weights (no step taken): they must agree."""
        with torch.no_grad():
            self.model.set_attn_implementation({"text_config": self.IMPLEMENTATION["basic"]})
            out = self.objective(self.model, inputs)
            kernel = attention.sdpa_with_log_norm
            attention.sdpa_with_log_norm = lambda *args, **kwargs: None
            try:
                rows = self.objective(self.model, inputs)
            finally:
                attention.sdpa_with_log_norm = kernel
            terms = {
                "basic": {k: v.item() for k, v in out.logs.items()},
                "basic_scoring_rows": {k: v.item() for k, v in rows.logs.items()},
            }
            if naive:
                self.model.set_attn_implementation({"text_config": self.IMPLEMENTATION["naive"]})
                terms["naive"] = {k: v.item() for k, v in self.naive(self.model, inputs)[1].items()}
        return terms

    def cpu_peak(self, variant: str, inputs) -> int:
        """Bytes alive at the step's start plus the highest excursion above them during the step."""
        from torch.profiler import ProfilerActivity, profile

        live = live_bytes(self.model, self.optimizer, inputs)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step(variant, inputs)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        current = highest = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            current += event.nbytes()
            highest = max(highest, current)
        return live + highest


def live_bytes(model, optimizer, inputs) -> int:
    tensors = list(model.parameters()) + list(model.buffers()) + list(inputs.values())
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class ComponentTimer:
    """Time inside BASIC's parts (`COMPONENTS`) during steps: the outermost part running is charged. CPU:
    the process's CPU time; CUDA: events around the part's kernels (read once the steps are over)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: dict[str, list] = defaultdict(list)
        self.active = False

    @contextlib.contextmanager
    def patched(self):
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in COMPONENTS]
        for (owner, name, component), (_, _, function) in zip(COMPONENTS, originals):
            setattr(owner, name, self._wrap(function, component))
        try:
            yield self
        finally:
            for owner, name, function in originals:
                setattr(owner, name, function)

    def _wrap(self, function, component: str):
        def timed(*args, **kwargs):
            if self.active:
                return function(*args, **kwargs)
            self.active = True
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                began = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                if self.cuda:
                    end.record()
                    self.spans[component].append((start, end))
                else:
                    self.spans[component].append(time.process_time() - began)
                self.active = False

        return timed

    def seconds(self, steps: int) -> dict[str, float]:
        """Seconds per step in each component (CUDA: synchronises)."""
        if self.cuda:
            torch.cuda.synchronize()

        def span(record) -> float:
            return record[0].elapsed_time(record[1]) / 1e3 if self.cuda else record

        return {name: sum(map(span, spans)) / steps for name, spans in self.spans.items()}


def spread(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "q1": q[0],
        "q3": q[2],
        "min": min(values),
        "max": max(values),
    }


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:  # a copy of the tree without .git (a GPU machine): the caller may name the commit
        return {"commit": os.environ.get("BASIC_COMMIT"), "dirty": None}
    # results written by earlier runs do not change the code measured
    return {
        "commit": commit,
        "dirty": bool(git("status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results")),
    }


def code_path(model, kernel_use: KernelUse) -> dict:
    """How this run's BASIC computed: the attention path of layers 1..k and the precision of SDS's products."""
    E = model.get_input_embeddings().weight
    vocabulary = losses._Vocabulary(E, torch.float32 if E.dtype != torch.float64 else torch.float64)
    if vocabulary.low is None:
        products = f"{vocabulary.dtype} products"
    elif vocabulary.mixed:
        products = f"{E.dtype} operands, float32 results (mixed product)"
    else:
        products = f"{E.dtype}-rounded operands, float32 products"
    return {
        "attention_layers_1_k": {
            "sdpa_kernel_with_log_norm": kernel_use.kernel,
            "rows_scored": kernel_use.rows,
        },
        "sds_products": products,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def run(
    scale: str,
    stage: int,
    shape: Shape,
    warmup: int,
    steps: int,
    device: torch.device,
    variants: tuple[str, ...] = VARIANTS,
    component_steps: int = 3,
    after=None,
) -> dict:
    """The interleaved measurement; `after(runner, inputs)` may add entries to the result at the end."""
    torch.manual_seed(0)
    model = build(shape, stage, device)
    inputs = make_batch(shape, device)
    runner = Runner(model, device)
    terms = runner.terms(inputs, naive="naive" in variants)
    kernel_use = KernelUse()
    results: dict[str, dict] = {
        v: {"seconds": [], "cpu_seconds": [], "peak_bytes": [], "status": "ok"} for v in variants
    }
    last: dict[str, dict[str, torch.Tensor]] = {}
    for round_ in range(warmup + steps):
        # A B C, then C B A: each variant as often early as late in a round (machine drift cancels in pairs)
        for variant in variants if round_ % 2 == 0 else variants[::-1]:
            record = results[variant]
            if record["status"] != "ok":
                continue
            try:
                seconds, cpu_seconds, peak, last[variant] = runner.timed_step(variant, inputs)
            except torch.OutOfMemoryError as error:
                record.update(status="out of memory", error=str(error).splitlines()[0])
                runner.optimizer.zero_grad(set_to_none=True)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            if round_ >= warmup:
                record["seconds"].append(seconds)
                record["cpu_seconds"].append(cpu_seconds)
                if peak is not None:
                    record["peak_bytes"].append(peak)
            print(
                f"{variant:9s} step {round_}: {seconds:.3f} s ({cpu_seconds:.3f} s CPU)"
                + (f", peak {peak / 2**30:.2f} GiB" if peak else ""),
                flush=True,
            )
    if device.type == "cpu":
        for variant in variants:
            results[variant]["peak_bytes"] = [runner.cpu_peak(variant, inputs)]
    # On a shared CPU the wall clock mostly measures the neighbours; the process's CPU time measures the step.
    timer = "cpu_seconds" if device.type == "cpu" else "seconds"
    summary = {}
    for variant, record in results.items():
        if record["status"] == "ok":
            record["median_seconds"] = statistics.median(record["seconds"])
            record["median_cpu_seconds"] = statistics.median(record["cpu_seconds"])
            record["time_spread"] = spread(record[timer])
            record["peak_gib"] = max(record["peak_bytes"]) / 2**30
            record["last_step"] = {k: v.item() for k, v in last[variant].items()}
        summary[variant] = record
    ratios = {}
    base = summary["baseline"]
    for variant in variants[1:]:
        record = summary[variant]
        if record["status"] == "ok" and base["status"] == "ok":
            per_round = [t / b for t, b in zip(record[timer], base[timer])]
            ratios[variant] = {
                "time": record[f"median_{timer}"] / base[f"median_{timer}"],
                "time_per_round": spread(per_round),
                "memory": record["peak_gib"] / base["peak_gib"],
                "wall_time": record["median_seconds"] / base["median_seconds"],
            }
    components = None
    if "basic" in variants and summary["basic"]["status"] == "ok" and component_steps:
        timer_ = ComponentTimer(device)
        with timer_.patched():
            for _ in range(component_steps):
                runner.step("basic", inputs)
        per_step = timer_.seconds(component_steps)
        base_step = base[f"median_{timer}"]
        components = {
            name: {"seconds": seconds, "fraction_of_baseline_step": seconds / base_step}
            for name, seconds in sorted(per_step.items())
        }
    goals = GOALS[device.type]
    basic = ratios.get("basic")
    return (after(runner, inputs) if after else {}) | {
        "scale": scale,
        "stage": stage,
        "shape": asdict(shape),
        "image_tokens": shape.image_tokens,
        "basic_layers": runner.objective.k,
        "device": device_name(device),
        "torch": torch.__version__,
        "code": git_state(),
        "code_path": code_path(model, kernel_use),
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "steps": steps,
        "order": "interleaved: " + " ".join(variants) + ", reversed every other round",
        "time_measured_by": "process CPU time" if device.type == "cpu" else "wall clock (CUDA synchronised)",
        "terms_on_the_same_weights": terms,
        "variants": summary,
        "ratios_to_baseline": ratios,
        "basic_components": components,
        "goals": goals,
        "within_goals": None if basic is None else {k: basic[k] <= goals[k] for k in goals},
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="mini")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--layers", type=int, help="override the LLM's layer count (e.g. stage 2 at 7B width)"
    )
    parser.add_argument("--batch", type=int, help="override the per-device batch")
    parser.add_argument("--seq-len", type=int, help="override the sequence length")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="baseline first; they take turns step after step",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: steadier on a shared machine)"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON path (default: benchmarks/results/basic_overhead_*.json)"
    )
    args = parser.parse_args(argv)
    shape = SCALES[args.scale]
    overrides = {"layers": args.layers, "batch": args.batch, "seq_len": args.seq_len}
    shape = replace(shape, **{k: v for k, v in overrides.items() if v is not None})
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # LLaVA's --tf32 True
    if args.variants[0] != "baseline":
        parser.error("--variants must start with baseline")
    result = run(args.scale, args.stage, shape, args.warmup, args.steps, device, tuple(args.variants))
    out = args.out or RESULTS / f"basic_overhead_{args.scale}_stage{args.stage}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {"ratios_to_baseline": result["ratios_to_baseline"], "within_goals": result["within_goals"]}
        )
    )
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
