"""What BASIC adds to a LLaVA-1.5-7B training step, counted without a GPU: FLOPs and an estimate of bytes moved.

One whole training step (forward, backward through gradient checkpointing's recompute) of each stage is
built at the real shapes (a Vicuna-7B-shaped Llama and a CLIP-L/336-shaped tower from
`basic_overhead.SCALES["7b"]`, bf16, 576 image tokens, 2048-token rows right-padded to 100/90/80/70 %
with real attention masks, batch 8, k = 16) on fake tensors (meta storage: shapes, no values) and run
under `torch.utils.flop_counter.FlopCounterMode`, baseline (the LLaVA-1.5 loss) and BASIC (paper
weights) with the same model and batch. `--scale mini` counts the CPU benchmark's mini shapes (float32,
no checkpointing, batch 32 in stage 1 and 16 in stage 2, as benchmarks/basic_overhead.py runs them). Stage 1 trains the projector (the LLM is frozen, gradients flow
through it), stage 2 projector and LLM. The optimizer step is left out (no matrix products).

Per component of BASIC's extra work (the outermost BASIC function running when an operation runs):
`scoring` (text->image attention, layers 1..k), `hooks` (locating images and queries, v_hat from layers
1..k, the patch weights' normalisation), `sds` (forward with its gradient), `das` (forward), and
`attention_kernel_vs_sdpa` (layers 1..k call SDPA's kernel for its logsumexp where the baseline calls
SDPA: what that changes). `other` is what the step's totals differ by beyond those: DAS's backward, the
gradient hand-off of SDS, the objective's glue.

Bytes are an estimate from the operations themselves: every non-view operation reads its tensor inputs
and writes its outputs once (broadcast dimensions counted once; gathers read what they write), i.e.
what a GPU moves when no fused kernel keeps data on chip and nothing stays in cache.

Fake tensors live on the CPU device here (autograd refuses fake CUDA tensors without a GPU), so the
counting takes the GPU's code path where the device decides it: SDS's bf16 products with float32 results
(`losses.GPU_DEVICES` takes "cpu"), and the CPU flash kernel stands in for CUDA's memory-efficient one
(counted with PyTorch's SDPA formulas). Output: benchmarks/results/step_flops_<scale>.json.

    python benchmarks/step_flops.py                  # 7b, both stages: about 30 s on one CPU core
    python benchmarks/step_flops.py --scale mini
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is no package
import basic_overhead  # the shapes, the model and the padded batch

from basic.method import attention, losses
from basic.method.config import BasicArguments
from basic.method.objective import BasicObjective

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
aten = torch.ops.aten

CPU_ATTENTION_FLOPS = {  # PyTorch's own SDPA formulas, for the CPU flash kernel that stands in for CUDA's
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_shape=None, **kwargs: (
        sdpa_flop_count(q, k, v)
    ),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda grad, q, k, v, *args, out_shape=None, **kwargs: (
        sdpa_backward_flop_count(grad, q, k, v)
    ),
}
GATHERS = {"index", "index_select", "gather", "embedding", "_unsafe_index", "take"}  # read what they write
# Operations that move no data: allocations, metadata, views without an alias annotation.
WRITE_ONLY = {"copy_", "fill_", "zero_"}  # in-place operations that do not read what they overwrite
NO_DATA = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "lift_fresh",
    "set_",
    "resize_",
    "_assert_async",
    "_unsafe_view",
    "_reshape_alias",
    "alias",
}


def _bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor view covers (broadcast dimensions once)."""
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size()


class ByteCounter(TorchDispatchMode):
    """Sums, over non-view operations, the bytes of their tensor inputs (read) and outputs (written)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        namespace, name = func._schema.name.split("::")
        if func.is_view or namespace != "aten" or name in NO_DATA:
            return out
        written = sum(_bytes(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        read_args = args[1:] if name in WRITE_ONLY else args
        inputs = [
            t
            for t in tree_flatten((read_args, {k: v for k, v in kwargs.items() if k != "out"}))[0]
            if isinstance(t, torch.Tensor)
        ]
        if name in GATHERS:  # the source is read where it is gathered; the indices are read whole
            read = written + sum(_bytes(t) for t in inputs if t.dtype in (torch.int32, torch.int64))
        else:
            read = sum(_bytes(t) for t in inputs)
        self.total += read + written
        return out


class Components:
    """Attributes FLOPs and bytes to the outermost BASIC function running when an operation runs."""

    # basic_overhead's timed components, and the kernel call of layers 1..k
    PATCHES = (*basic_overhead.COMPONENTS, (attention, "sdpa_with_log_norm", "attention_kernel"))

    def __init__(self, k: int):
        self.k = k
        self.flops: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self.counters: tuple[FlopCounterMode, ByteCounter] | None = None
        self.active: str | None = None

    @contextlib.contextmanager
    def patched(self):
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in self.PATCHES]
        for (owner, name, component), (_, _, function) in zip(self.PATCHES, originals):
            setattr(owner, name, self._wrap(function, component))
        # the baseline's SDPA in layers 1..k (BASIC calls the same function in layers k+1..L)
        functions = ALL_ATTENTION_FUNCTIONS._global_mapping
        sdpa = functions["sdpa"]
        shallow = self._wrap(sdpa, "sdpa_layers_1_k")
        functions["sdpa"] = lambda module, *args, **kwargs: (  # the vision tower's layers have no layer_idx
            shallow if getattr(module, "layer_idx", self.k) < self.k else sdpa
        )(module, *args, **kwargs)
        try:
            yield self
        finally:
            for owner, name, function in originals:
                setattr(owner, name, function)
            functions["sdpa"] = sdpa

    def _wrap(self, function, component: str):
        def wrapped(*args, **kwargs):
            if self.active is not None or self.counters is None:
                return function(*args, **kwargs)
            flops, counted = self.counters
            self.active = component
            f0, b0 = flops.get_total_flops(), counted.total
            try:
                return function(*args, **kwargs)
            finally:
                self.flops[component] += flops.get_total_flops() - f0
                self.bytes[component] += counted.total - b0
                self.active = None

        return wrapped


def count_step(model, inputs, objective, components: Components) -> dict:
    """FLOPs (by operator) and bytes of one forward + backward."""
    with (
        FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as flops,
        ByteCounter() as counted,
    ):
        components.counters = (flops, counted)
        try:
            if objective is None:
                model.set_attn_implementation({"text_config": "sdpa"})
                loss = model(**inputs).loss
            else:
                model.set_attn_implementation({"text_config": attention.PREFIX + "sdpa"})
                out = objective(model, inputs)
                loss = out.outputs.loss + out.extra_loss
            loss.backward()
        finally:
            components.counters = None
    model.zero_grad(set_to_none=True)
    return {
        "flops": flops.get_total_flops(),
        "bytes": counted.total,
        "flops_by_operator": {str(op): n for op, n in flops.get_flop_counts()["Global"].items()},
    }


def analytic_minimum(shape: basic_overhead.Shape, k: int) -> dict[str, float]:
    """The least arithmetic of BASIC's two extra parts: SDS's three [patches x d] x [d x vocab] products,
    and per supervised layer and head the [positions after the image x image keys] score block."""
    m, d = shape.image_tokens, shape.hidden
    sds = 3 * 2 * shape.batch * m * d * shape.vocab
    scoring = k * 2 * shape.batch * shape.heads * (shape.seq_len - m) * m * (d // shape.heads)
    return {"sds": float(sds), "scoring": float(scoring)}


@contextlib.contextmanager
def counting():
    """What the counting changes while it runs, put back afterwards (tests share the process)."""
    before = os.environ.get("TRANSFORMERS_DISABLE_TORCH_CHECK"), losses.GPU_DEVICES
    os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = (
        "1"  # the model's own image-token count check reads values
    )
    losses.GPU_DEVICES = (*losses.GPU_DEVICES, "cpu")  # fake CPU tensors stand for CUDA ones (see above)
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop("TRANSFORMERS_DISABLE_TORCH_CHECK", None)
        else:
            os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = before[0]
        losses.GPU_DEVICES = before[1]


def run(scale: str, stages: tuple[int, ...], batches: tuple[int | None, ...]) -> dict:
    with counting():
        return _run(scale, stages, batches)


def _run(scale: str, stages: tuple[int, ...], batches: tuple[int | None, ...]) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    report: dict = {"stages": {}}
    for stage, batch in zip(stages, batches):
        started = time.time()
        shape = basic_overhead.SCALES[scale]
        shape = replace(shape, batch=batch or shape.batch, gradient_checkpointing=scale == "7b")
        components = Components(k=shape.layers // 2)
        with FakeTensorMode(), components.patched():
            model = basic_overhead.build(shape, stage, torch.device("cpu"))
            inputs = basic_overhead.make_batch(shape, torch.device("cpu"))
            with unset_fake_temporarily():  # host numbers (layer weights)
                objective = BasicObjective(BasicArguments(basic_das_weight=1.0, basic_sds_weight=0.01), model)
            assert objective.k == components.k
            baseline = count_step(model, inputs, None, components)
            basic = count_step(model, inputs, objective, components)
        k = objective.k
        extra_flops = basic["flops"] - baseline["flops"]
        extra_bytes = basic["bytes"] - baseline["bytes"]
        names = ("scoring", "hooks", "sds", "das")
        parts = {
            name: {"tflop": components.flops[name] / 1e12, "gb": components.bytes[name] / 1e9}
            for name in names
        }
        # layers 1..k: SDPA's kernel called for its logsumexp (BASIC) in place of SDPA (baseline)
        swap_flops = components.flops["attention_kernel"] - components.flops["sdpa_layers_1_k"]
        swap_bytes = components.bytes["attention_kernel"] - components.bytes["sdpa_layers_1_k"]
        parts["attention_kernel_vs_sdpa"] = {"tflop": swap_flops / 1e12, "gb": swap_bytes / 1e9}
        parts["other"] = {
            "tflop": (extra_flops - swap_flops - sum(components.flops[n] for n in names)) / 1e12,
            "gb": (extra_bytes - swap_bytes - sum(components.bytes[n] for n in names)) / 1e9,
        }
        minimum = analytic_minimum(shape, k)
        report["stages"][f"stage{stage}"] = {
            "shape": asdict(shape),
            "image_tokens": shape.image_tokens,
            "trains": "projector" if stage == 1 else "projector + LLM",
            "basic_layers": k,
            "baseline_tflop": baseline["flops"] / 1e12,
            "basic_tflop": basic["flops"] / 1e12,
            "extra_tflop": extra_flops / 1e12,
            "extra_fraction": extra_flops / baseline["flops"],
            "components": parts,
            "minimum_tflop": {name: v / 1e12 for name, v in minimum.items()},
            "to_minimum": {
                "sds": components.flops["sds"] / minimum["sds"],
                "scoring": components.flops["scoring"] / minimum["scoring"],
            },
            "baseline_gb": baseline["bytes"] / 1e9,
            "extra_gb": extra_bytes / 1e9,
            "baseline_flops_by_operator": baseline["flops_by_operator"],
            "basic_flops_by_operator": basic["flops_by_operator"],
            "seconds": time.time() - started,
        }
        print(
            json.dumps(
                {
                    f"stage{stage}": {
                        key: value
                        for key, value in report["stages"][f"stage{stage}"].items()
                        if "by_operator" not in key
                    }
                },
                indent=1,
            ),
            flush=True,
        )
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=("7b", "mini"), default="7b")
    parser.add_argument("--stages", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        help="per stage, or one for all (default: 8 at 7b; the mini benchmark's 32 and 16 at mini)",
    )
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/step_flops_<scale>.json")
    args = parser.parse_args(argv)
    batches = args.batch or ([8] if args.scale == "7b" else [{1: 32, 2: 16}[stage] for stage in args.stages])
    if len(batches) == 1:
        batches = batches * len(args.stages)
    if len(batches) != len(args.stages):
        parser.error("--batch takes one value or one per stage")
    report = {
        "check": "step_flops",
        "code": basic_overhead.git_state(),
        "torch": torch.__version__,
        "code_path": "fake tensors (no values) on the CPU device, counted as the GPU runs: SDS's bf16 products "
        "with float32 results; SDPA's CPU flash kernel standing in for CUDA's (same FLOP formula)",
        "bytes_estimate": "per non-view operation: tensor inputs read and outputs written once (broadcast "
        "dimensions once, gathers read what they write); no fusion, no cache",
        "scale": args.scale,
        **run(args.scale, tuple(args.stages), tuple(batches)),
    }
    out = args.out or RESULTS / f"step_flops_{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
