"""The BASIC method: the LLM's own shallow-layer visual embeddings supervise the projector's output.

The contract (docs/method.md): `layer_weights(k, scheme)`, `patch_weights(model,
inputs, k, scheme)`, `das_loss(v, v_hat, a)`, `sds_loss(v, v_hat, a, E)`. The trainer uses
`basic.method.objective.BasicObjective`, which computes everything from the training forward pass itself.
"""

import importlib

__all__ = ["das_loss", "layer_weights", "patch_weights", "sds_loss"]
_SOURCES = {"patch_weights": "capture", "das_loss": "losses", "layer_weights": "losses", "sds_loss": "losses"}


def __getattr__(name: str):
    # Lazy, so that importing basic.method.config (the flags) does not import torch and transformers.
    if name in _SOURCES:
        return getattr(importlib.import_module(f"basic.method.{_SOURCES[name]}"), name)
    raise AttributeError(f"module 'basic.method' has no attribute {name!r}")
