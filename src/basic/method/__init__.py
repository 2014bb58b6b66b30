"""The BASIC method: the LLM's own shallow-layer visual embeddings supervise the projector's output.

The contract (DESIGN.md, "The method, precisely"): `layer_weights(k, scheme)`, `patch_weights(model,
inputs, k, scheme)`, `das_loss(v, v_hat, a)`, `sds_loss(v, v_hat, a, E)`. The trainer uses
`basic.method.objective.BasicObjective`, which computes everything from the training forward pass itself.
"""

from basic.method.capture import patch_weights
from basic.method.losses import das_loss, layer_weights, sds_loss

__all__ = ["das_loss", "layer_weights", "patch_weights", "sds_loss"]
