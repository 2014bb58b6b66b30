"""The trainer's objective plumbing (BASIC on), tested with a toy objective standing in for the method.

The extra loss must be averaged over the images of the global batch whatever the split into micro-batches
and processes (test_distributed.py covers processes), and the logs must carry `lm_loss` and the objective's
terms, averaged per logging window.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from basic.method.objective import ObjectiveOutput
from basic.train import parse_args, train

TOY_WEIGHT = 0.5


class ToyObjective:
    """extra = weight x mean over the micro-batch's images of the mean squared projector output."""

    def __init__(self, args, model):
        self.weight = args.basic_das_weight

    def __call__(self, model, inputs):
        outputs = model(**inputs)
        if outputs.image_hidden_states is None:
            return ObjectiveOutput(outputs, None, {})
        images = inputs["pixel_values"].shape[0]
        per_image = (
            outputs.image_hidden_states.view(images, -1, outputs.image_hidden_states.shape[-1])
            .pow(2)
            .mean((1, 2))
        )
        term = per_image.mean()
        return ObjectiveOutput(outputs, self.weight * term, {"das": term.detach()})


@pytest.fixture
def toy_objective(monkeypatch):
    module = types.ModuleType("basic.method.objective")
    module.BasicObjective = ToyObjective
    monkeypatch.setitem(sys.modules, "basic.method.objective", module)


def history(out) -> list[dict]:
    return [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def test_extra_loss_is_averaged_over_the_images_of_the_step(toy_objective, llava_argv, tmp_path):
    common = dict(
        group_by_modality_length=False,
        max_steps=3,
        basic_das_weight=TOY_WEIGHT,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        learning_rate=1e-3,
    )
    one = tmp_path / "one"
    train(*parse_args(llava_argv(2, "llama", "clip", one, per_device_train_batch_size=4, **common)))
    split = tmp_path / "split"
    train(
        *parse_args(
            llava_argv(
                2,
                "llama",
                "clip",
                split,
                per_device_train_batch_size=1,
                gradient_accumulation_steps=4,
                **common,
            )
        )
    )
    logs_one, logs_split = history(one), history(split)
    for a, b in zip(logs_one, logs_split, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["lm_loss"] == pytest.approx(b["lm_loss"], rel=1e-4)
        assert a["das"] == pytest.approx(b["das"], rel=1e-4)
        # the logged total is the LM loss plus the weighted image-mean term
        assert a["loss"] == pytest.approx(a["lm_loss"] + TOY_WEIGHT * a["das"], rel=1e-4)
        assert b["loss"] == pytest.approx(b["lm_loss"] + TOY_WEIGHT * b["das"], rel=1e-4)


def test_baseline_logs_lm_loss_as_trainers_own_loss(llava_argv, tmp_path):
    out = tmp_path / "base"
    trainer = train(*parse_args(llava_argv(2, "gemma", "clip", out)))
    assert trainer.objective is None
    assert all(h["lm_loss"] == h["loss"] and "das" not in h for h in history(out))
    assert torch.isfinite(torch.tensor([h["loss"] for h in history(out)])).all()
