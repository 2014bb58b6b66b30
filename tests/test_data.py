"""The LLaVA dataset's bad-input policy, the collator, the modality sampler and `pad` image handling."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from basic.data.collator import LlavaCollator
from basic.data.dataset import LazySupervisedDataset
from basic.data.images import ImageTransform, expand2square
from basic.data.labels import IGNORE_INDEX
from basic.data.sampler import ModalityLengthGroupedSampler
from basic.data.templates import IMAGE_TOKEN, get_template
from basic.model import load_tokenizer

GOOD = {
    "id": "good",
    "image": "train/0000.png",
    "conversations": [
        {"from": "human", "value": "<image>\nwhat colour is the shape ?"},
        {"from": "gpt", "value": "red"},
    ],
}
TEXT = {"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}

BAD_RECORDS = {
    "not an object": (["a list"], "not a JSON object"),
    "no conversations": ({"id": "x", "image": "train/0000.png"}, "'conversations' is missing"),
    "malformed turn": (
        {"id": "x", "conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]},
        "turn 0 is not",
    ),
    "unknown role": (
        {"id": "x", "conversations": [{"from": "system", "value": "a"}, {"from": "gpt", "value": "a"}]},
        "turn 0 is not",
    ),
    "not alternating": (
        {"id": "x", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        "do not alternate",
    ),
    "starts with the answer": (
        {"id": "x", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
        "do not alternate",
    ),
    "no answer": ({"id": "x", "conversations": [{"from": "human", "value": "a"}]}, "has no answer"),
    "two images": (
        {
            **GOOD,
            "conversations": [{"from": "human", "value": "<image><image>\nq"}, {"from": "gpt", "value": "a"}],
        },
        "2 <image> placeholders",
    ),
    "image without placeholder": (
        {**GOOD, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        "0 <image> placeholders",
    ),
    "placeholder without image": (
        {
            "id": "x",
            "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
        },
        "expected none",
    ),
    "placeholder in answer": (
        {**GOOD, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}]},
        "in an answer",
    ),
    "missing image file": ({**GOOD, "image": "train/nope.png"}, "does not exist"),
    "image list": ({**GOOD, "image": ["train/0000.png"]}, "must be one file path"),
}


@pytest.fixture(scope="module")
def parts(backbones):
    return load_tokenizer(backbones["llama"], 2048), AutoImageProcessor.from_pretrained(backbones["clip"])


def make_dataset(
    parts,
    tiny_data,
    tmp_path,
    records,
    *,
    template="v1",
    fraction=0.0,
    max_length=2048,
    require_image=False,
    aspect="square",
):
    tokenizer, image_processor = parts
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return LazySupervisedDataset(
        path,
        tiny_data["images"],
        get_template(template),
        tokenizer,
        ImageTransform(image_processor, aspect),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=16,
        max_length=max_length,
        require_image=require_image,
        max_skip_fraction=fraction,
    )


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_is_an_error_naming_file_record_and_reason(case, parts, tiny_data, tmp_path):
    record, reason = BAD_RECORDS[case]
    with pytest.raises(ValueError) as error:
        make_dataset(parts, tiny_data, tmp_path, [GOOD, record])
    message = str(error.value)
    assert str(tmp_path / "data.json") in message and "record 1" in message and reason in message


def test_bad_records_within_the_limit_are_counted_skips(parts, tiny_data, tmp_path, caplog):
    bad = [record for record, _ in BAD_RECORDS.values()]
    dataset = make_dataset(parts, tiny_data, tmp_path, [GOOD, TEXT] * 20 + bad, fraction=0.5)
    assert len(dataset) == 40
    report = dataset.report()
    assert report["records"] == 40 + len(bad) and len(report["skipped"]) == len(bad)
    assert {s["index"] for s in report["skipped"]} == set(range(40, 40 + len(bad)))
    assert "cannot be used" in caplog.text and "does not exist" in caplog.text


def test_template_and_stage_rules(parts, tiny_data, tmp_path):
    three_turns = {**GOOD, "conversations": GOOD["conversations"] * 2}
    with pytest.raises(ValueError, match="'plain' needs exactly 2 turns"):
        make_dataset(parts, tiny_data, tmp_path, [GOOD, three_turns], template="plain")
    with pytest.raises(ValueError, match="only the projector trains"):
        make_dataset(parts, tiny_data, tmp_path, [GOOD, TEXT], template="plain", require_image=True)


def test_unreadable_image_is_a_counted_late_skip_filled_by_the_next_record(parts, tiny_data, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    records = [{**GOOD, "id": "broken", "image": str(broken)}, GOOD, TEXT]
    dataset = make_dataset(parts, tiny_data, tmp_path, records, fraction=0.5)
    sample = dataset[0]
    assert (
        len(sample["skipped"]) == 1
        and "id 'broken'" in sample["skipped"][0]
        and "cannot read image" in sample["skipped"][0]
    )
    assert torch.equal(sample["input_ids"], dataset[1]["input_ids"])  # the slot holds the next record
    assert dataset[1]["skipped"] == []


def test_too_long_sample_is_truncated_or_skipped(parts, tiny_data, tmp_path):
    long_answer = {
        **GOOD,
        "conversations": [GOOD["conversations"][0], {"from": "gpt", "value": "red " * 200}],
    }
    dataset = make_dataset(parts, tiny_data, tmp_path, [long_answer, GOOD], fraction=0.5, max_length=200)
    sample = dataset[0]
    assert sample["skipped"] == [] and len(sample["input_ids"]) == 200
    assert (sample["labels"] != IGNORE_INDEX).any()

    # mistral's template has no system prompt: the image ends near position 20, the text-only record fits
    dataset = make_dataset(
        parts, tiny_data, tmp_path, [long_answer, TEXT], template="mistral", fraction=0.5, max_length=18
    )
    sample = dataset[0]
    assert "image tokens end at position" in sample["skipped"][0]
    assert torch.equal(sample["input_ids"], dataset[1]["input_ids"])


def test_image_aspect_ratio_pad_centres_on_the_mean_colour(parts):
    _, image_processor = parts
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    square = expand2square(image, (1, 2, 3))
    assert square.size == (30, 30)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((15, 15)) == (255, 0, 0)
    assert square.getpixel((15, 9)) == (1, 2, 3) and square.getpixel((15, 10)) == (255, 0, 0)
    assert ImageTransform(image_processor, "pad").background == tuple(
        int(x * 255) for x in image_processor.image_mean
    )
    with pytest.raises(ValueError, match="--image_aspect_ratio"):
        ImageTransform(image_processor, "anyres")


def test_collator_pads_right_and_masks_by_length(parts, tiny_data, tmp_path):
    tokenizer, _ = parts
    dataset = make_dataset(parts, tiny_data, tmp_path, [GOOD, TEXT])
    samples = [dataset[1], dataset[0]]
    batch = LlavaCollator(tokenizer.pad_token_id)(samples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values"}
    assert batch["pixel_values"].shape[0] == 1  # only the image sample contributes an image
    n = len(samples[0]["input_ids"])
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (
        batch["input_ids"][0, n:] == tokenizer.pad_token_id
    ).all()


def test_modality_sampler_gives_one_modality_per_step_on_every_rank():
    lengths = [(i % 7) + 1 for i in range(37)] + [-((i % 5) + 1) for i in range(23)]
    batch, world = 2, 3
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=batch, world_size=world, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    assert order == list(sampler)  # deterministic for a (seed, epoch)
    steps = [order[i : i + batch * world] for i in range(0, len(order), batch * world)]
    mixed = [step for step in steps if len({lengths[i] > 0 for i in step}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] is steps[-1])
    sampler.set_epoch(1)
    assert list(sampler) != order
    assert Counter(lengths[i] > 0 for i in order) == Counter(length > 0 for length in lengths)


def test_saved_tokenizer_does_not_record_the_offline_mode(backbones, tmp_path):
    """`local_files_only` (set from HF_HUB_OFFLINE when the process starts) stays out of checkpoints."""
    load_tokenizer(backbones["llama"], 2048).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "local_files_only" not in saved and saved["model_max_length"] == 2048
