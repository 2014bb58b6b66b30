"""The mini backbones' optimiser: AdamW with a linear warmup to a high learning rate and cosine decay."""

from __future__ import annotations

import math

import torch


def adamw_warmup_cosine(model: torch.nn.Module, lr: float, steps: int, warmup: float, weight_decay: float,
                        floor: float = 0.05):
    """(optimizer, scheduler): AdamW (no weight decay on norms and biases), `warmup` of the steps linear,
    then cosine down to `floor` x `lr`."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-8)
    warm = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
