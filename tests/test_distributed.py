"""Two CPU processes (gloo) train exactly like one process with the same global batch: DDP and ZeRO-2.

The DDP run has the toy objective on, so the BASIC loss's averaging over the images of the global batch
is checked across processes too. A third check builds the model under DeepSpeed ZeRO-3, where every
pretrained part is partitioned as it loads, and compares the gathered weights with a plain build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from basic.train import parse_args, train

pytestmark = pytest.mark.slow  # trainer runs in two processes, compared with one

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
COMMON = dict(
    group_by_modality_length=False,
    max_steps=3,
    lr_scheduler_type="constant",
    warmup_ratio=0.0,
    learning_rate=1e-3,
    dataloader_num_workers=0,
)


def run_processes(script: Path, argv: list[str], n: int = 2) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(n),
        str(script),
        *argv,
    ]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-5000:]


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    """`basic.train.main` with the toy objective installed as `basic.method.objective`."""
    script = tmp_path_factory.mktemp("runner") / "run_train.py"
    script.write_text(
        textwrap.dedent("""
        import sys, types
        from test_train_objective import ToyObjective
        module = types.ModuleType("basic.method.objective")
        module.BasicObjective = ToyObjective
        sys.modules["basic.method.objective"] = module
        from basic.train import main
        sys.exit(main(sys.argv[1:]))
    """)
    )
    return script


def losses(out: Path) -> list[tuple[int, float]]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def assert_same_trajectory(a, b):
    assert [step for step, _ in a] == [step for step, _ in b] == [1, 2, 3]
    assert [loss for _, loss in a] == pytest.approx([loss for _, loss in b], rel=2e-5)


def test_ddp_equals_one_process(runner, llava_argv, tmp_path, monkeypatch):
    import types

    from test_train_objective import ToyObjective

    module = types.ModuleType("basic.method.objective")
    module.BasicObjective = ToyObjective
    monkeypatch.setitem(sys.modules, "basic.method.objective", module)
    flags = dict(COMMON, basic_das_weight=0.5)
    one = tmp_path / "one"
    train(*parse_args(llava_argv(2, "llama", "clip", one, per_device_train_batch_size=4, **flags)))
    two = tmp_path / "two"
    run_processes(runner, llava_argv(2, "llama", "clip", two, per_device_train_batch_size=2, **flags))
    assert_same_trajectory(losses(one), losses(two))
    assert "das" in json.loads((two / "trainer_state.json").read_text())["log_history"][0]


def test_deepspeed_zero2_equals_one_process(runner, llava_argv, tmp_path):
    one = tmp_path / "one"
    train(*parse_args(llava_argv(2, "mistral", "siglip", one, per_device_train_batch_size=4, **COMMON)))
    two = tmp_path / "two"
    run_processes(
        runner,
        llava_argv(
            2,
            "mistral",
            "siglip",
            two,
            per_device_train_batch_size=2,
            deepspeed=ROOT / "pipeline" / "zero2.json",
            **COMMON,
        ),
    )
    assert_same_trajectory(losses(one), losses(two))
    assert (two / "model.safetensors").is_file()


def test_zero3_build_loads_every_pretrained_part(backbones, tmp_path):
    """Under ZeRO-3 each part is partitioned as it loads; the gathered weights equal a plain build's."""
    script = tmp_path / "zero3.py"
    script.write_text(
        textwrap.dedent(f"""
        import deepspeed, torch
        from transformers.integrations import HfDeepSpeedConfig
        from basic.model import build, load_projector, projector_state
        deepspeed.init_distributed(dist_backend="gloo")
        config = HfDeepSpeedConfig({{"zero_optimization": {{"stage": 3}}, "train_micro_batch_size_per_gpu": 1}})
        torch.manual_seed(0)
        model = build({backbones["phi3"]!r}, {backbones["clip"]!r}, hf_deepspeed_config=config).model
        partitioned = [n for n, p in model.named_parameters() if hasattr(p, "ds_id")]
        assert any(n.startswith("model.language_model.") for n in partitioned), partitioned[:3]
        assert any(n.startswith("model.vision_tower.") for n in partitioned)
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config
        unset_hf_deepspeed_config()
        torch.manual_seed(0)
        plain = build({backbones["phi3"]!r}, {backbones["clip"]!r}).model
        reference = plain.state_dict()
        for name, param in model.named_parameters():
            with deepspeed.zero.GatheredParameters([param]):
                assert torch.equal(param.data, reference[name]), name
        torch.save({{"model.mm_projector.0.weight": torch.ones_like(reference["model.multi_modal_projector.linear_1.weight"]),
                    "model.mm_projector.0.bias": torch.ones_like(reference["model.multi_modal_projector.linear_1.bias"]),
                    "model.mm_projector.2.weight": torch.ones_like(reference["model.multi_modal_projector.linear_2.weight"]),
                    "model.mm_projector.2.bias": torch.ones_like(reference["model.multi_modal_projector.linear_2.bias"])}},
                   {str(tmp_path / "mm_projector.bin")!r})
        load_projector(model, {str(tmp_path / "mm_projector.bin")!r})
        assert all(bool((v == 1).all()) for v in projector_state(model).values())
    """)
    )
    run_processes(script, [], n=1)
