"""benchmarks/gpu_check.py: its FLOPs model and a CPU smoke run of the real code path (tiny shapes); the
workspace of benchmarks/launch_gpu_check.py (its GPU run itself needs CUDA)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up while the file executes
spec.loader.exec_module(gpu_check)


def test_flops_model_matches_the_6n_rule_for_full_training_and_4n_for_a_frozen_llm():
    s = gpu_check.VICUNA_7B
    n_llm = s.layers * (4 * s.hidden**2 + 3 * s.hidden * s.intermediate) + s.hidden * s.vocab
    attention = 12 * s.layers * s.seq_len**2 * s.hidden
    full, frozen = (gpu_check.step_flops(s, stage, 1, None)["llava"] for stage in ("stage2", "stage1"))
    assert full - frozen == pytest.approx(2 * n_llm * s.seq_len)  # the weight gradients stage 1 skips
    rest = full - 6 * n_llm * s.seq_len - attention  # the frozen tower's forward and the projector
    assert 0 < rest < 0.01 * full
    assert 6.4e9 < n_llm < 6.8e9  # a Vicuna-7B: ~6.6B parameters without the input embeddings
    assert 8e13 < full < 1e14  # ~6 x 6.6B x 2048 tokens + attention
    assert gpu_check.step_flops(s, "stage1", 8, 16)["basic_extra"] > 0
    assert gpu_check.step_flops(s, "stage1", 8, None)["basic_extra"] == 0


@pytest.mark.slow
def test_smoke_run_interleaves_baseline_and_basic_on_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--smoke",
            "--configs",
            "stage1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    stage = report["stages"]["stage1"]
    assert stage["status"] == "ok" and stage["order"].startswith("interleaved: baseline basic")
    assert (
        stage["code"]["commit"] and "sdpa_kernel_with_log_norm" in stage["code_path"]["attention_layers_1_k"]
    )
    for variant in ("baseline", "basic"):
        record = stage["variants"][variant]
        assert (
            record["status"] == "ok" and len(record["seconds"]) == 2 and record["time_spread"]["median"] > 0
        )
    assert {"das", "sds"} <= set(stage["variants"]["basic"]["last_step"])
    assert set(stage["basic_components"]) == {"scoring", "hooks", "sds", "das"}
    assert stage["tflop_per_step"]["basic_extra"] > 0
    assert "step_time_ratio" in report["basic_vs_baseline"]["stage1"]


def test_launch_gpu_check_workspace_launches_both_stages_as_the_full_profile_does(tmp_path):
    """benchmarks/launch_gpu_check.py (run on a GPU): its copy's commands are the deepspeed launches of
    `profile: full` (ZeRO-2, then ZeRO-3; bf16, tf32, gradient checkpointing) on the quick world."""
    spec = importlib.util.spec_from_file_location(
        "launch_gpu_check", ROOT / "benchmarks" / "launch_gpu_check.py"
    )
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    quick = tmp_path / "quick"
    (quick / "data" / "quick" / "llava").mkdir(parents=True)
    (quick / "models" / "backbones" / "vicuna-7b").mkdir(parents=True)
    work = launch.workspace(tmp_path / "work", quick)
    dry = subprocess.run(
        [sys.executable, "-m", "basic.cli", "stage", "--dry"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(work / "src")},
    ).stdout
    commands = {line: next_line for line, next_line in zip(dry.splitlines(), dry.splitlines()[1:])}
    for stage, zero in (("pretrain", "zero2"), ("finetune", "zero3")):
        command = commands[f"# {stage}@{launch.RUN} (profile quick)"]
        assert command.startswith("deepspeed --num_gpus 1 ") and command.endswith(
            f"--deepspeed pipeline/{zero}.json"
        )
        assert "--bf16 True --tf32 True --gradient_checkpointing True" in command
        assert "--data_path data/quick/llava/" in command and "--basic_das_weight 1.0" in command
