"""How the mini backbones train: AdamW with a linear warmup to a high learning rate and cosine decay, eager attention."""

from __future__ import annotations

import math

import torch

# The mini backbones train with transformers' eager attention: at their sizes on a CPU core it runs the
# encoders' steps 2x and the LLMs' 1.3x faster than SDPA, with the same outputs (to 1e-5). The choice is not
# saved in the checkpoints' configs, so they load with transformers' default (SDPA), which BASIC needs.
EAGER = "eager"


def adamw_warmup_cosine(
    model: torch.nn.Module, lr: float, steps: int, warmup: float, weight_decay: float, floor: float = 0.05
):
    """(optimizer, scheduler): AdamW (no weight decay on norms and biases), `warmup` of the steps linear,
    then cosine down to `floor` x `lr`."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    warm = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
