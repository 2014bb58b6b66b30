"""benchmarks/step_flops.py: whole training steps on fake tensors, counted; BASIC's extra arithmetic at its minimum.

At LLaVA-1.5-7B's shapes (both stages, batch 8, k = 16) the extra FLOPs must stay within 1.2 % of the
baseline step, SDS must be its three vocabulary products and the scoring its query x image-key block
(with its log-normaliser columns: 132 / 128 at 7B); at the mini shapes the same accounting runs in seconds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("step_flops", ROOT / "benchmarks" / "step_flops.py")
step_flops = importlib.util.module_from_spec(spec)
sys.modules["step_flops"] = step_flops
spec.loader.exec_module(step_flops)


def check(stage: dict) -> None:
    assert (
        1.0 <= stage["to_minimum"]["sds"] <= 1.01
    )  # 3 products (+ per-row dot products over the vocabulary)
    head_dim = stage["shape"]["hidden"] // stage["shape"]["heads"]
    # the -lse columns (padded to 4), and the sum over each image's queries (a head-th of a product)
    assert 1.0 <= stage["to_minimum"]["scoring"] <= (head_dim + 4) / head_dim * 1.01
    parts = stage["components"]
    assert parts["hooks"]["tflop"] == parts["das"]["tflop"] == parts["attention_kernel_vs_sdpa"]["tflop"] == 0
    assert parts["other"]["tflop"] == pytest.approx(0, abs=1e-9)  # nothing extra outside the named parts
    assert stage["extra_tflop"] == pytest.approx(parts["sds"]["tflop"] + parts["scoring"]["tflop"], rel=1e-9)
    assert all(part["gb"] > 0 for name, part in parts.items() if name in ("scoring", "hooks", "sds", "das"))


def test_mini_scale_accounting(tmp_path):
    report = step_flops.main(["--scale", "mini", "--out", str(tmp_path / "mini.json")])
    assert report["code"]["commit"] and set(report["stages"]) == {"stage1", "stage2"}
    for stage in report["stages"].values():
        check(stage)


@pytest.mark.slow
def test_7b_step_extra_flops_within_1_2_percent_in_both_stages(tmp_path):
    report = step_flops.main(["--out", str(tmp_path / "7b.json")])
    for name, stage in report["stages"].items():
        check(stage)
        assert stage["shape"]["batch"] == 8 and stage["image_tokens"] == 576 and stage["basic_layers"] == 16
        assert stage["extra_fraction"] <= 0.012, name
