"""LLaVA's conversation JSON as a lazy torch dataset, with every record checked before training starts.

Records (`[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}]`, `.json` or
`.jsonl`) are validated up front: structure, turns that start with the human and alternate and end with
an answer, one `<image>` (in a human turn) for image records and none otherwise, `plain`'s exactly two
turns, and that the image file exists. Bad records are skipped, counted and logged, and listed in
`report()`; more than `max_skip_fraction` of the file is an error naming the file and records.

Tokenization and image decoding stay lazy (`__getitem__`). A record that fails there (unreadable image,
too long for `model_max_length`) is a late skip: its slot is filled by the next record of the file so
batch shapes and step counts are unchanged, and the sample carries `skipped` = ["<file> record <i> (id
<id>): <reason>"] for the trainer to count against the same limit across all processes.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from basic.data.images import ImageTransform, UnreadableImage
from basic.data.labels import ANSWER_CLOSE, ANSWER_OPEN, ROLES, SkipSample, encode
from basic.data.templates import IMAGE_TOKEN, ChatTemplate

logger = logging.getLogger(__name__)

SHOW_AT_MOST = 20  # records listed by name in an error or warning


def load_records(path: str | Path) -> list:
    """The records of a LLaVA JSON list (or JSON-lines) file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            if path.suffix == ".jsonl":
                return [json.loads(line) for line in f if line.strip()]
            records = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--data_path {path}: cannot read LLaVA conversation data: {error}") from error
    if not isinstance(records, list):
        raise ValueError(  # noqa: TRY004 (a data error, reported with the file like the others)
            f"--data_path {path}: expected a JSON list of records, got {type(records).__name__}"
        )
    return records


def record_problem(record, template: ChatTemplate, require_image: bool) -> str | None:
    """Why `record` cannot be trained on (structure only, no I/O), or None if it is valid."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "'conversations' is missing or not a non-empty list"
    for k, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("value"), str)
            or turn.get("from") not in ROLES
        ):
            return f"turn {k} is not {{'from': 'human'|'gpt', 'value': str}}"
        if ANSWER_OPEN in turn["value"] or ANSWER_CLOSE in turn["value"]:
            return f"turn {k} contains reserved private-use characters U+E000/U+E001"
    expected = ["human", "gpt"] * (len(turns) // 2 + 1)
    if [turn["from"] for turn in turns] != expected[: len(turns)]:
        return "turns do not alternate human, gpt, ... starting with the human"
    if len(turns) % 2:
        return "the last human turn has no answer"
    if template.name == "plain" and len(turns) != 2:
        return f"template 'plain' needs exactly 2 turns, found {len(turns)}"
    has_image = "image" in record
    if has_image and not isinstance(record["image"], str):
        return f"'image' must be one file path (str), got {type(record['image']).__name__}"
    if require_image and not has_image:
        return "text-only record, but only the projector trains (it would get no gradient)"
    counts = [turn["value"].count(IMAGE_TOKEN) for turn in turns]
    if sum(counts) != int(has_image):
        expectation = "exactly one" if has_image else "none (no 'image' key)"
        return f"{sum(counts)} {IMAGE_TOKEN} placeholders, expected {expectation}"
    if has_image and any(count and turn["from"] != "human" for count, turn in zip(counts, turns)):
        return f"{IMAGE_TOKEN} is in an answer, not in a human turn"
    return None


def record_name(path: str | Path, index: int, record) -> str:
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"{path} record {index}" + (f" (id {record_id!r})" if record_id is not None else "")


@dataclass
class Skipped:
    index: int
    name: str
    reason: str


class LazySupervisedDataset(torch.utils.data.Dataset):
    """Validated LLaVA records; tokenized and with images decoded only when a sample is read."""

    def __init__(
        self,
        data_path: str | Path,
        image_folder: str | Path | None,
        template: ChatTemplate,
        tokenizer,
        image_transform: ImageTransform,
        *,
        image_token_id: int,
        image_seq_length: int,
        max_length: int,
        require_image: bool = False,
        max_skip_fraction: float = 0.001,
    ):
        self.data_path = str(data_path)
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.template, self.tokenizer, self.image_transform = template, tokenizer, image_transform
        self.image_token_id, self.image_seq_length, self.max_length = (
            image_token_id,
            image_seq_length,
            max_length,
        )
        records = load_records(data_path)
        self.total_records = len(records)
        self.skip_budget = math.floor(max_skip_fraction * self.total_records)
        self.skipped: list[Skipped] = []
        self.records: list[tuple[int, dict]] = []
        for index, record in enumerate(tqdm(records, desc=f"checking {Path(data_path).name}", mininterval=5)):
            problem = record_problem(record, template, require_image)
            if problem is None and "image" in record:
                problem = self._missing_image(record["image"])
            if problem is None:
                self.records.append((index, record))
            else:
                self.skipped.append(Skipped(index, record_name(data_path, index, record), problem))
        self._check_budget()
        if not self.records:
            raise ValueError(f"--data_path {data_path}: no usable records")

    def _missing_image(self, image: str) -> str | None:
        if self.image_folder is None:
            return "the record has an 'image' but no --image_folder was given"
        path = self.image_folder / image
        return None if path.is_file() else f"image file {path} does not exist"

    def _check_budget(self) -> None:
        if not self.skipped:
            return
        listing = "\n".join(f"  {s.name}: {s.reason}" for s in self.skipped[:SHOW_AT_MOST])
        more = (
            f"\n  ... and {len(self.skipped) - SHOW_AT_MOST} more" if len(self.skipped) > SHOW_AT_MOST else ""
        )
        summary = (
            f"{len(self.skipped)} of {self.total_records} records in {self.data_path} cannot be used:\n"
            f"{listing}{more}"
        )
        if len(self.skipped) > self.skip_budget:
            raise ValueError(
                f"{summary}\nThis exceeds --max_skip_fraction (at most {self.skip_budget} records); fix the data "
                "or raise the limit."
            )
        logger.warning("skipping %s", summary)

    def report(self) -> dict:
        """Machine-readable account of the up-front check (the trainer writes it next to the outputs)."""
        return {
            "data_path": self.data_path,
            "records": self.total_records,
            "used": len(self.records),
            "skip_budget": self.skip_budget,
            "skipped": [{"index": s.index, "record": s.name, "reason": s.reason} for s in self.skipped],
        }

    def __len__(self) -> int:
        return len(self.records)

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's grouping key: word count of all turns, negative for text-only records."""
        lengths = []
        for _, record in self.records:
            words = sum(len(turn["value"].split()) for turn in record["conversations"])
            lengths.append(max(words, 1) if "image" in record else -max(words, 1))
        return lengths

    def sample(self, i: int) -> dict:
        """Sample `i`, or `SkipSample` if it cannot be used."""
        _, record = self.records[i]
        has_image = "image" in record
        encoded = encode(
            record["conversations"],
            self.template,
            self.tokenizer,
            has_image=has_image,
            image_token_id=self.image_token_id,
            image_seq_length=self.image_seq_length,
            max_length=self.max_length,
        )
        sample = {"input_ids": torch.tensor(encoded.input_ids), "labels": torch.tensor(encoded.labels)}
        if has_image:
            try:
                sample["pixel_values"] = self.image_transform(self.image_folder / record["image"])
            except UnreadableImage as error:
                raise SkipSample(str(error)) from error
        return sample

    def __getitem__(self, i: int) -> dict:
        skipped = []
        for attempt in range(len(self.records)):
            j = (i + attempt) % len(self.records)
            try:
                sample = self.sample(j)
            except SkipSample as error:
                index, record = self.records[j]
                skipped.append(f"{record_name(self.data_path, index, record)}: {error}")
                logger.warning("skipping %s; its slot is filled by the next record", skipped[-1])
                if len(skipped) > max(self.skip_budget, 1):
                    raise RuntimeError(
                        f"{len(skipped)} consecutive records cannot be used, more than --max_skip_fraction "
                        "allows:\n  " + "\n  ".join(skipped)
                    ) from error
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"no record of {self.data_path} can be used")
