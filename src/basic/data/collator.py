"""Batches of LLaVA samples: right padding, an attention mask from the true lengths, stacked images.

The attention mask comes from each sample's length, not from `input_ids != pad_token_id` as in LLaVA:
the pad token is often `<unk>` or `</s>`, which also occur inside real text (`</s>` ends every answer).
Text-only samples add no image; `pixel_values` holds the images of the batch's image samples in order,
which is how `LlavaForConditionalGeneration` matches them to the placeholder tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from basic.data.labels import IGNORE_INDEX


@dataclass
class LlavaCollator:
    pad_token_id: int

    def __call__(self, samples: list[dict]) -> dict:
        longest = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = sample["input_ids"]
            labels[row, :n] = sample["labels"]
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [s["pixel_values"] for s in samples if "pixel_values" in s]
        if images:
            batch["pixel_values"] = torch.stack(images)
        skipped = [name for s in samples for name in s.get("skipped", ())]
        if skipped:
            batch["skipped"] = skipped
        return batch
