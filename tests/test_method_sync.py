"""A BASIC step reads nothing back from the device: no host synchronisation, so a GPU's queue never drains.

On CPU, a whole training step (forward and backward, padded batch) runs on fake tensors, which have no
values: any `.item()`, `int()`, `bool()`, `nonzero` or boolean-mask indexing in BASIC's code would raise.
On a GPU (skipped without one), one step runs with `torch.cuda.set_sync_debug_mode("error")` switched on
for every piece of BASIC's code (Capture, its hooks, the attention kernel call and scoring, the losses and
SDS's backward); the model's own code (transformers checks the image tokens and looks at the padding
mask) syncs in the baseline too and is left out, and the whole step must sync no more often than the
baseline step does.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from basic.method import attention, losses
from basic.method import objective as objective_module
from basic.method.capture import Capture, SilentImages
from basic.method.config import BasicArguments
from basic.method.objective import BasicObjective
from basic.testing import backbones
from test_method_objective import PAPER


def tiny_llava_config():
    """basic.testing.backbones's tiny Llama LLaVA (16 image tokens) on SDPA, without a generation cache."""
    config = backbones.tiny_llava_config("llama")
    config.text_config.use_cache = False
    config._attn_implementation = "sdpa"
    return config


def padded_batch(device, rows: int = 3, length: int = 48) -> dict[str, torch.Tensor]:
    """Right-padded rows (as the collator pads), an image after a 3-token prefix; a text-only row last."""
    config = tiny_llava_config()
    image, pad = config.image_token_id, config.text_config.pad_token_id
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, image, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.long)
    for row in range(rows - 1):
        ids[row, 3 : 3 + config.image_seq_length] = image
    for row, padding in enumerate((0, 7, 5)[:rows]):
        if padding:
            ids[row, -padding:], mask[row, -padding:] = pad, 0
    labels = torch.where(mask.bool() & (ids != image), ids, -100)
    pixels = torch.randn(rows - 1, 3, 16, 16, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
        "pixel_values": pixels.to(device),
    }


def test_a_basic_step_runs_on_fake_tensors(monkeypatch):
    """Fake tensors carry shapes but no values: the step must never need one on the host."""
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
    from transformers import LlavaForConditionalGeneration

    monkeypatch.setenv("TRANSFORMERS_DISABLE_TORCH_CHECK", "1")  # the model's own image-token count check
    with FakeTensorMode():
        model = LlavaForConditionalGeneration(tiny_llava_config()).train()
        inputs = padded_batch("cpu")
        with unset_fake_temporarily():  # the objective's layer weights are host numbers
            objective = BasicObjective(BasicArguments(**PAPER, basic_detach_target=False), model)
        out = objective(model, inputs)
        (out.outputs.loss + out.extra_loss).backward()
        assert set(out.logs) == {"das", "sds"}
        assert model.model.multi_modal_projector.linear_1.weight.grad is not None


@contextlib.contextmanager
def sync_errors():
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def strict(function):
    """`function` with every synchronising CUDA call an error while it runs."""

    def wrapped(*args, **kwargs):
        with sync_errors():
            return function(*args, **kwargs)

    return wrapped


def count_syncs(step) -> int:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_basic_step_on_a_gpu_never_synchronises(monkeypatch):
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(tiny_llava_config()).to(torch.bfloat16).train()
    inputs = padded_batch("cuda")
    inputs["pixel_values"] = inputs["pixel_values"].bfloat16()
    objective = BasicObjective(BasicArguments(**PAPER), model)
    for owner, name in (
        (Capture, "__init__"),
        (Capture, "_image_features"),
        (Capture, "keep_image_positions"),
        (Capture, "observe"),
        (Capture, "supervision"),
        (Capture, "patch_weights"),
        (SilentImages, "add"),
        (attention, "sdpa_with_log_norm"),
        (objective_module, "das_loss"),
        (objective_module, "sds_loss"),
    ):
        monkeypatch.setattr(owner, name, strict(getattr(owner, name)))
    monkeypatch.setattr(losses._KL, "backward", staticmethod(strict(losses._KL.backward)))

    def basic_step():
        out = objective(model, inputs)
        (out.outputs.loss + out.extra_loss).backward()
        model.zero_grad(set_to_none=True)
        return out

    def baseline_step():
        model.set_attn_implementation({"text_config": "sdpa"})
        model(**inputs).loss.backward()
        model.zero_grad(set_to_none=True)
        model.set_attn_implementation({"text_config": attention.PREFIX + "sdpa"})

    basic_step()  # warm-up, then the strict step
    out = basic_step()
    assert set(out.logs) == {"das", "sds"}
    torch.cuda.synchronize()
    assert torch.isfinite(out.extra_loss)
    assert count_syncs(basic_step) <= count_syncs(baseline_step)
