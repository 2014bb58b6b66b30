"""Shared, session-scoped fixtures: tiny random backbones of every family and encoder, tiny LLaVA data.

`backbones[name]` is a real HF checkpoint directory (`llama`, `mistral`, `gemma`, `phi3` LLMs with their
tokenizers; `clip` a full CLIPModel, `siglip` a bare SiglipVisionModel, with image processors), built
offline by `basic.testing.backbones`. `mini_world` is the generated mini world at a tiny size (once per
session). `tiny_data` holds LLaVA-format `pretrain.json`/`finetune.json` and images.
`llava_argv` turns keyword flags into the argument list of LLaVA-1.5's own scripts (pretrain.sh or
finetune.sh), scaled down to a few CPU steps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tiny models on a shared, busy CPU: one thread each avoids OpenMP spin-waiting, ~10x faster here.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# The study's parameters as the unit tests know them: a frozen copy of params.yaml, so that changing the study
# does not break unit tests (tests/test_config.py checks that the live params.yaml loads).
PARAMS = Path(__file__).resolve().parent / "fixtures" / "params.yaml"

LLM_FAMILIES = ("llama", "mistral", "gemma", "phi3")
ENCODERS = ("clip", "siglip")
# The (LLM, encoder) pairs every stage is tested on: each family once, each encoder twice.
PAIRS = (("llama", "clip"), ("mistral", "siglip"), ("gemma", "clip"), ("phi3", "siglip"))
TEMPLATE_OF = {"llama": "v1", "mistral": "mistral", "gemma": "gemma", "phi3": "phi3"}


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> dict:
    from basic.testing.backbones import save_tiny_llm, save_tiny_vision

    root = tmp_path_factory.mktemp("backbones")
    dirs = {family: save_tiny_llm(family, root / family) for family in LLM_FAMILIES}
    dirs.update({kind: save_tiny_vision(kind, root / kind) for kind in ENCODERS})
    return {name: str(path) for name, path in dirs.items()}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    from basic.testing.data import write_tiny_llava_data

    return {name: str(path) for name, path in write_tiny_llava_data(tmp_path_factory.mktemp("data")).items()}


# `basic mini data` at a tiny size, the options every test of the generated world shares.
MINI_WORLD_ARGS = (
    "--seed",
    "3",
    "--train-images",
    "48",
    "--text-conversations",
    "8",
    "--llm-docs",
    "150",
    "--llm-eval",
    "40",
    "--bench-questions",
    "16",
    "--probe-images",
    "40",
    "--vocab-size",
    "1200",
)


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory) -> Path:
    """The embedded world (`basic mini data`, MINI_WORLD_ARGS), generated once per test session; read only."""
    from basic.mini.cli import data_main

    out = tmp_path_factory.mktemp("mini") / "world"
    assert data_main(["--out", str(out), *MINI_WORLD_ARGS]) == 0
    return out


def _flags(**flags) -> list[str]:
    argv = []
    for name, value in flags.items():
        if value is not None:
            argv += [f"--{name}", str(value)]
    return argv


@pytest.fixture(scope="session")
def llava_argv(backbones, tiny_data):
    """`llava_argv(stage, llm, encoder, output_dir, **overrides)`: LLaVA-1.5's script flags for a tiny run."""

    def make(stage: int, llm: str, encoder: str, output_dir, **overrides) -> list[str]:
        common = dict(
            model_name_or_path=backbones[llm],
            vision_tower=backbones[encoder],
            image_folder=tiny_data["images"],
            mm_projector_type="mlp2x_gelu",
            mm_vision_select_layer=-2,
            mm_use_im_start_end=False,
            mm_use_im_patch_token=False,
            bf16=True,
            output_dir=output_dir,
            num_train_epochs=1,
            per_device_eval_batch_size=4,
            gradient_accumulation_steps=1,
            evaluation_strategy="no",
            save_strategy="steps",
            save_total_limit=1,
            weight_decay=0.0,
            warmup_ratio=0.03,
            lr_scheduler_type="cosine",
            logging_steps=1,
            tf32=True,
            model_max_length=2048,
            gradient_checkpointing=True,
            dataloader_num_workers=0,
            lazy_preprocess=True,
            report_to="none",
            max_steps=2,
            seed=0,
        )
        if stage == 1:
            common.update(
                version="plain",
                data_path=tiny_data["pretrain"],
                tune_mm_mlp_adapter=True,
                per_device_train_batch_size=4,
                save_steps=24000,
                learning_rate=1e-3,
            )
        else:
            common.update(
                version=TEMPLATE_OF[llm],
                data_path=tiny_data["finetune"],
                image_aspect_ratio="pad",
                group_by_modality_length=True,
                per_device_train_batch_size=4,
                save_steps=50000,
                learning_rate=2e-5,
            )
        common.update(overrides)
        return _flags(**common)

    return make


@pytest.fixture(scope="session")
def stage1(llava_argv, tmp_path_factory):
    """`stage1(llm, encoder)`: LLaVA-1.5's stage 1 for that pair (tiny: two steps), trained once per session.

    Returns the run's output directory and `moved`, the names of the parameters the run changed. Read only: a
    test that needs stage 1 with other flags runs its own.
    """
    import basic.train as train_module

    runs: dict[tuple[str, str], tuple[Path, set[str]]] = {}

    def get(llm: str, encoder: str) -> tuple[Path, set[str]]:
        if (llm, encoder) not in runs:
            out = tmp_path_factory.mktemp(f"stage1-{llm}-{encoder}")
            original = train_module.LlavaTrainer.train
            states = []

            def recording_train(self, *args, **kwargs):
                states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
                result = original(self, *args, **kwargs)
                states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
                return result

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(train_module.LlavaTrainer, "train", recording_train)
                train_module.train(*train_module.parse_args(llava_argv(1, llm, encoder, out)))
            before, after = states
            runs[(llm, encoder)] = out, {k for k in before if not torch.equal(before[k], after[k])}
        return runs[(llm, encoder)]

    return get
