"""Small helpers for several processes, shared by the trainer, the method, the evaluation and the tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

import torch


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (for a rendezvous or a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gathered(parameters: Iterable[torch.nn.Parameter], modifier_rank: int | None = None):
    """Full parameters inside the block even when DeepSpeed ZeRO-3 has partitioned them; changes made on
    `modifier_rank` are written back (None: read only). A no-op without ZeRO-3."""
    parameters = list(parameters)
    if any(hasattr(p, "ds_id") for p in parameters):
        import deepspeed

        return deepspeed.zero.GatheredParameters(parameters, modifier_rank=modifier_rank)
    return contextlib.nullcontext()
