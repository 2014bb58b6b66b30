"""What a training objective returns: the interface between the trainer and the BASIC method.

The trainer (`basic.train`) computes the LLaVA-1.5 loss itself when no objective is set, so the
baseline is Trainer's own code path. An objective (`basic.method.objective.BasicObjective`) runs the
forward pass itself, so it can record what it needs from that same pass, and returns the model outputs
(whose `.loss` is the language-modelling loss exactly as the model computes it) plus its extra loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class ObjectiveOutput:
    outputs: Any
    """The model's forward outputs; `outputs.loss` is the LM loss as the model computed it."""
    extra_loss: torch.Tensor | None
    """Weighted sum of the extra terms for this micro-batch (a mean over its images), or None.
    The trainer scales it so that accumulation and data parallelism average it over the global batch."""
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars to log (unweighted terms, e.g. `das`, `sds`), averaged by the trainer per window."""


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any]) -> ObjectiveOutput:
        """Run the forward pass on `inputs` (which already carry `num_items_in_batch` when the Trainer
        passes it) and return outputs plus extra loss."""
        ...
