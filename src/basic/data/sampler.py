"""LLaVA's `group_by_modality_length` sampler: every optimizer step sees one modality, lengths balanced.

Indices of image samples and of text-only samples (negative lengths) are shuffled separately, cut into
megabatches of `batch_size * world_size` (LLaVA passes world size x gradient accumulation as
`world_size`, so a megabatch is one optimizer step over all processes), and each megabatch is sorted by
length and dealt into `world_size` per-device batches of similar total length. Megabatches of both
modalities are then shuffled together; the two incomplete tails form one last, mixed megabatch.
The order depends only on (seed, epoch), so every process and a resumed run see the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def balanced_chunks(indices: list[int], lengths: list[int], n_chunks: int) -> list[list[int]]:
    """Deal `indices` (longest first) into `n_chunks` equal-size chunks, each to the currently shortest."""
    if len(indices) % n_chunks:
        return [indices[k::n_chunks] for k in range(n_chunks)]
    size = len(indices) // n_chunks
    chunks: list[list[int]] = [[] for _ in range(n_chunks)]
    totals = [0.0] * n_chunks
    for index in indices:
        k = totals.index(min(totals))
        chunks[k].append(index)
        totals[k] = float("inf") if len(chunks[k]) == size else totals[k] + lengths[index]
    return chunks


def length_grouped(
    lengths: list[int], batch_size: int, world_size: int, generator: torch.Generator
) -> list[int]:
    """A random order in which each megabatch is sorted by length and split evenly across processes."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * world_size
    result = []
    for start in range(0, len(order), size):
        megabatch = sorted(order[start : start + size], key=lambda i: lengths[i], reverse=True)
        for chunk in balanced_chunks(megabatch, lengths, world_size):
            result.extend(chunk)
    return result


def modality_grouped(
    lengths: list[int], batch_size: int, world_size: int, generator: torch.Generator
) -> list[int]:
    """Indices in an order where each megabatch holds one modality (sign of `lengths`), lengths balanced."""
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return length_grouped([abs(x) for x in lengths], batch_size, world_size, generator)
    size = batch_size * world_size
    megabatches, tail = [], []
    for sign in (1, -1):
        members = [i for i, length in enumerate(lengths) if length * sign > 0]
        order = [
            members[i]
            for i in length_grouped([abs(lengths[i]) for i in members], batch_size, world_size, generator)
        ]
        groups = [order[start : start + size] for start in range(0, len(order), size)]
        megabatches.extend(groups[:-1])
        tail.extend(groups[-1])
    shuffled = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]
    if tail:
        shuffled.append(sorted(tail))
    return [i for megabatch in shuffled for i in megabatch]


class ModalityLengthGroupedSampler(torch.utils.data.Sampler[int]):
    def __init__(self, lengths: list[int], batch_size: int, world_size: int, seed: int = 0):
        if any(length == 0 for length in lengths):
            raise ValueError("modality lengths must be non-zero (positive: image, negative: text-only)")
        self.lengths, self.batch_size, self.world_size, self.seed = lengths, batch_size, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped(self.lengths, self.batch_size, self.world_size, generator))
