"""Both stages end to end from LLaVA-1.5's own script flags, for every LLM family and both encoders.

Stage 1 changes only the projector; stage 2 starts from the stage-1 projector, trains projector + LLM and
never the vision tower; its checkpoint, loaded by vanilla transformers, gives the trained model's logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

import basic.train as train_module
from basic.data.images import expand2square
from basic.testing.backbones import tiny_llava
from basic.train import labelled_logits_only, parse_args, train
from conftest import PAIRS, TEMPLATE_OF
from test_method_objective import grads, training_batch
from test_method_patch_weights import FAMILIES


@pytest.fixture
def snapshots(monkeypatch):
    """Parameters of the model as training starts and as it ends, per run (in order)."""
    runs = []
    original = train_module.LlavaTrainer.train

    def recording_train(self, *args, **kwargs):
        before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        result = original(self, *args, **kwargs)
        runs.append((before, {k: v.detach().clone() for k, v in self.model.state_dict().items()}))
        return result

    monkeypatch.setattr(train_module.LlavaTrainer, "train", recording_train)
    return runs


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def run(argv: list[str]):
    return train(*parse_args(argv))


# Every family and both encoders in the full run; llama+clip alone in the fast one (-m "not slow").
PAIR_PARAMS = [
    pytest.param(pair, id="+".join(pair), marks=() if pair == PAIRS[0] else pytest.mark.slow)
    for pair in PAIRS
]


@pytest.mark.parametrize("pair", PAIR_PARAMS)
def test_both_stages(pair, llava_argv, stage1, snapshots, tmp_path, tiny_data):
    llm, encoder = pair
    out1, moved = stage1(llm, encoder)
    assert moved and all(k.startswith("model.multi_modal_projector.") for k in moved)
    assert sorted(
        (out1 / "mm_projector.safetensors").exists() and load_file(out1 / "mm_projector.safetensors")
    ) == ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]
    assert json.loads((out1 / "config.json").read_text())["model_type"] == "llava"
    history = json.loads((out1 / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2] and all(
        "lm_loss" in h for h in history if "loss" in h
    )

    out2 = tmp_path / "stage2"
    trainer = run(
        llava_argv(2, llm, encoder, out2, pretrain_mm_mlp_adapter=out1 / "mm_projector.safetensors")
    )
    before, after = snapshots[-1]
    projector = load_file(out1 / "mm_projector.safetensors")
    assert all(torch.equal(before[f"model.multi_modal_projector.{k}"], v) for k, v in projector.items())
    moved = changed(before, after)
    assert not any(k.startswith("model.vision_tower.") for k in moved)
    assert any(k.startswith("model.language_model.") for k in moved)
    assert any(k.startswith("model.multi_modal_projector.") for k in moved)

    # vanilla transformers reproduces the trained model, through the saved processor and chat template
    model = LlavaForConditionalGeneration.from_pretrained(out2).eval()
    processor = AutoProcessor.from_pretrained(out2)
    assert model.config.image_aspect_ratio == "pad"
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is it ?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=TEMPLATE_OF[llm] != "mistral")
    image = Image.open(Path(tiny_data["images"]) / "train/0000.png").convert("RGB")
    image = expand2square(image, tuple(int(x * 255) for x in processor.image_processor.image_mean))
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    trained = trainer.model.eval()
    with torch.no_grad():
        expected = trained(**inputs).logits
        assert torch.allclose(model(**inputs).logits, expected, atol=1e-5)
    generation = json.loads((out2 / "generation_config.json").read_text())
    tokenizer = processor.tokenizer
    assert tokenizer.eos_token_id in generation["eos_token_id"]
    end_of_turn = {"gemma": "<end_of_turn>", "phi3": "<|end|>"}.get(llm)
    if end_of_turn:
        assert tokenizer.convert_tokens_to_ids(end_of_turn) in generation["eos_token_id"]


def test_refused_flags_are_named(llava_argv, tmp_path):
    for flag, value in (
        ("mm_use_im_start_end", "True"),
        ("mm_use_im_patch_token", "True"),
        ("bits", "4"),
        ("mm_patch_merge_type", "spatial"),
        ("image_aspect_ratio", "anyres"),
        ("lora_enable", "True"),
    ):
        with pytest.raises(SystemExit, match=f"--{flag}"):
            parse_args(llava_argv(2, "llama", "clip", tmp_path, **{flag: value}))
    with pytest.raises(SystemExit, match="lora_r"):
        parse_args(llava_argv(2, "llama", "clip", tmp_path) + ["--lora_r", "128"])
    with pytest.raises(SystemExit, match="--version.*'v0'"):
        parse_args(llava_argv(2, "llama", "clip", tmp_path, version="v0"))
    with pytest.raises(SystemExit, match="--vision_tower is required"):
        parse_args(llava_argv(2, "llama", "clip", tmp_path, vision_tower=None))


def test_llava_spellings_map_to_transformers_5(llava_argv, tmp_path):
    _, _, args, _ = parse_args(
        llava_argv(1, "llama", "clip", tmp_path, evaluation_strategy="steps", eval_steps=5)
    )
    assert args.eval_strategy == "steps" and args.warmup_steps == 0.03 and args.activation_checkpointing
    if not torch.cuda.is_available():
        assert not args.bf16 and not args.tf32  # LLaVA's --bf16 True --tf32 True: float32 on a CPU


def test_llava_optimizer_groups(llava_argv, tmp_path):
    trainer = run(
        llava_argv(2, "phi3", "siglip", tmp_path, max_steps=1, mm_projector_lr=2e-4, weight_decay=0.1)
    )
    projector = {id(p) for p in trainer.model.model.multi_modal_projector.parameters()}
    for group in trainer.optimizer.param_groups:
        in_projector = {id(p) in projector for p in group["params"]}
        assert len(in_projector) == 1  # a group is all projector or all LLM
        assert group["initial_lr"] == (2e-4 if in_projector == {True} else 2e-5)
        biases_or_norms = all(p.dim() == 1 for p in group["params"])
        assert group["weight_decay"] == (0.0 if biases_or_norms else 0.1)
    assert not any(id(p) in projector for p in trainer.model.model.vision_tower.parameters())


@pytest.mark.slow  # three trainer runs
def test_resume_continues_exactly(llava_argv, tmp_path, snapshots):
    common = dict(lr_scheduler_type="constant", warmup_ratio=0.0, save_steps=1, save_total_limit=None)
    straight = tmp_path / "straight"
    run(llava_argv(2, "llama", "clip", straight, max_steps=3, **common))
    resumed = tmp_path / "resumed"
    run(llava_argv(2, "llama", "clip", resumed, max_steps=2, **common))
    run(llava_argv(2, "llama", "clip", resumed, max_steps=3, **common))  # finds checkpoint-2, as LLaVA does

    def losses(out):
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return {h["step"]: h["loss"] for h in history if "loss" in h}

    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
    assert sorted(losses(resumed)) == [1, 2, 3]
    assert all(torch.allclose(snapshots[0][1][k], snapshots[2][1][k], atol=1e-6) for k in snapshots[0][1])
    # a checkpoint is itself a plain LLaVA checkpoint
    checkpoint = LlavaForConditionalGeneration.from_pretrained(resumed / "checkpoint-2")
    assert (
        AutoProcessor.from_pretrained(resumed / "checkpoint-2").tokenizer.convert_tokens_to_ids("<image>")
        == checkpoint.config.image_token_id
    )


def test_late_skips_over_the_limit_stop_training_naming_the_records(llava_argv, tiny_data, tmp_path):
    records = json.loads(Path(tiny_data["finetune"]).read_text())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    records[0] = {**records[0], "image": str(broken)}  # an absolute path wins over --image_folder
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    argv = llava_argv(
        2,
        "llama",
        "clip",
        tmp_path / "out",
        data_path=data,
        group_by_modality_length=False,
        per_device_train_batch_size=len(records),
    )
    with pytest.raises(
        RuntimeError, match=r"1 samples could not be used.*\n.*record 0 \(id 'vqa-0'\).*cannot read image"
    ):
        run(argv + ["--max_steps", "1"])
    run(argv + ["--max_steps", "1", "--max_skip_fraction", "0.1"])
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert history[0]["skipped_samples"] == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_labelled_logits_only_gives_the_same_loss_and_gradients(family):
    """The LM head on the labelled positions alone: the loss and every gradient equal the full head's (to
    float32's precision: transformers computes the cross-entropy in float32)."""
    model, processor = tiny_llava(family, dtype=torch.float64)
    model.train()
    inputs = training_batch(processor)
    inputs["labels"][:, :6] = -100  # a prompt without labels, as in every LLaVA conversation
    for extra in ({}, {"num_items_in_batch": torch.tensor(23)}):
        full = model(**inputs, **extra).loss
        full_grads = grads(model, full)
        trimmed_inputs = labelled_logits_only(inputs)
        trimmed = model(**trimmed_inputs, **extra)
        assert trimmed.logits.shape[0] == int((inputs["labels"][:, 1:] != -100).sum())
        torch.testing.assert_close(trimmed.loss, full, rtol=1e-6, atol=0.0)
        trimmed_grads = grads(model, trimmed.loss)
        assert trimmed_grads.keys() == full_grads.keys()
        for name, grad in full_grads.items():
            torch.testing.assert_close(trimmed_grads[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_label_smoothing_keeps_every_position_logits(llava_argv, tmp_path):
    """Trainer's label smoother shifts the logits itself, so training with it leaves the LM head whole."""
    argv = llava_argv(2, "llama", "clip", tmp_path / "out", label_smoothing_factor=0.1)
    run(argv + ["--max_steps", "2"])
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert history[0]["loss"] > 0
