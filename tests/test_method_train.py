"""BASIC through the real trainer (`basic train` with LLaVA-1.5's flags): both stages, every LLM family.

Checks that the flags reach the method, that each term is logged separately in trainer_state.json, that the
logged total is lm + 1.0 * das + 0.01 * sds, and that the first step's LM loss is the baseline's to the bit
(BASIC only adds; the forward pass is the same).
"""

from __future__ import annotations

import json

import pytest

from basic.train import parse_args, train
from conftest import PAIRS

PAPER = {"basic_das_weight": 1.0, "basic_sds_weight": 0.01}


def history(out) -> list[dict]:
    return [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("pair", PAIRS, ids="+".join)
def test_both_stages_with_basic(pair, stage, llava_argv, tmp_path):
    trainer = train(*parse_args(llava_argv(stage, *pair, tmp_path / "basic", **PAPER)))
    objective = trainer.objective
    assert objective.k == 2 and objective.args.basic_patch_weights == "attention"  # half of the 4 layers
    logs = history(tmp_path / "basic")
    assert [h["step"] for h in logs] == [1, 2]
    for h in logs:
        assert h["das"] > 0 and h["sds"] > 0
        assert h["loss"] == pytest.approx(h["lm_loss"] + h["das"] + 0.01 * h["sds"], rel=1e-3)


def test_flags_reach_the_method_and_the_first_lm_loss_is_the_baseline(llava_argv, tmp_path):
    llm, encoder = PAIRS[1]
    base = train(*parse_args(llava_argv(2, llm, encoder, tmp_path / "base", max_steps=1)))
    assert base.objective is None
    trainer = train(
        *parse_args(
            llava_argv(
                2,
                llm,
                encoder,
                tmp_path / "sds",
                max_steps=1,
                basic_sds_weight=0.5,
                basic_layers=3,
                basic_layer_weights="constant",
                basic_patch_weights="uniform",
                basic_vocab="lm_head",
                basic_attention_queries="prompt",
            )
        )
    )
    args = trainer.objective.args
    assert (
        trainer.objective.k,
        args.basic_layer_weights,
        args.basic_patch_weights,
        args.basic_vocab,
        args.basic_attention_queries,
    ) == (3, "constant", "uniform", "lm_head", "prompt")
    (first,) = history(tmp_path / "sds")
    assert "das" not in first and first["sds"] > 0
    assert first["lm_loss"] == history(tmp_path / "base")[0]["loss"]
