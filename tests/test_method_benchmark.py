"""benchmarks/basic_overhead.py at its toy `smoke` scale (bf16, gradient checkpointing: the 7b mechanics).

It measures nothing meaningful here; it checks that the three variants run through the same code paths as
the real measurement, that BASIC took SDPA's kernel path, and that its terms agree with the naive version's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("basic_overhead", ROOT / "benchmarks" / "basic_overhead.py")
basic_overhead = importlib.util.module_from_spec(spec)
sys.modules["basic_overhead"] = basic_overhead  # dataclasses look their module up while the file executes
spec.loader.exec_module(basic_overhead)


@pytest.mark.parametrize("stage", [1, 2])
def test_smoke_run_writes_all_variants(stage, tmp_path):
    out = tmp_path / "overhead.json"
    result = basic_overhead.main(
        [
            "--scale",
            "smoke",
            "--stage",
            str(stage),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert out.exists()
    assert {v: r["status"] for v, r in result["variants"].items()} == dict.fromkeys(
        basic_overhead.VARIANTS, "ok"
    )
    assert all(len(r["cpu_seconds"]) == 2 and r["peak_gib"] > 0 for r in result["variants"].values())
    assert set(result["ratios_to_baseline"]) == {"basic", "naive"}
    assert result["order"].startswith("interleaved: baseline basic naive") and result["code"]["commit"]
    for record in result["variants"].values():
        spread = record["time_spread"]
        assert spread["min"] <= spread["q1"] <= spread["median"] <= spread["q3"] <= spread["max"]
    assert result["ratios_to_baseline"]["basic"]["time_per_round"]["median"] > 0
    # k = 2 layers, each step also recomputed by checkpointing: 3 timed steps, 1 profiled, 3 timed per component
    path = result["code_path"]
    assert path["attention_layers_1_k"] == {"sdpa_kernel_with_log_norm": 2 * 2 * 7, "rows_scored": 0}
    assert (
        path["sds_products"] == "torch.bfloat16-rounded operands, float32 products"
    )  # CPU: no mixed product
    components = result["basic_components"]
    assert set(components) == {"scoring", "hooks", "sds", "das"}
    assert all(c["seconds"] > 0 and c["fraction_of_baseline_step"] > 0 for c in components.values())
    terms = result["terms_on_the_same_weights"]
    for name in ("das", "sds"):  # bf16 model: eager and SDPA differ in rounding only
        assert terms["basic"][name] == pytest.approx(terms["naive"][name], rel=0.05)
        assert terms["basic"][name] == pytest.approx(terms["basic_scoring_rows"][name], rel=0.05)
