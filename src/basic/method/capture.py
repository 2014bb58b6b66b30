"""What BASIC takes from one forward pass of LLaVA: supervision embeddings and patch weights.

`Capture(model, inputs, k, ...)` is entered around the forward pass (the training forward itself, so
nothing is run twice) and handed to it as the `basic_recorder` keyword, which transformers passes down to
the attention function (`basic.method.attention`). During the pass it

- keeps, through forward hooks on decoder layers 1..k, only the image positions of each layer's output
  (the raw residual stream, before any final norm), summed with the layer weights into v_hat as the pass
  goes: one [image tokens, d] buffer, detached unless the target is meant to carry gradient;
- adds up, in layers 1..k, the head-mean attention probability of each text query on each image token
  that comes before it.

Every layer is taken once: a gradient-checkpointing recompute in backward calls the attention function
again, and is ignored. `patch_weights(model, inputs, k, scheme)` runs the same code path for a
processor's batch and returns the weights alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from typing_extensions import Self  # typing.Self from Python 3.11

from basic.method import attention
from basic.method.config import ATTENTION_QUERIES, PATCH_WEIGHT_SCHEMES

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of tokens not trained on (transformers' cross-entropy ignore_index)


def decoder_layers(model) -> torch.nn.ModuleList:
    try:
        return model.model.language_model.layers
    except AttributeError as error:
        raise TypeError(f"expected a LlavaForConditionalGeneration, got {type(model).__name__}") from error


def default_layers(model) -> int:
    """k = half the LLM's layers (16 of 32, 20 of 40), as in the paper."""
    layers = model.config.text_config.num_hidden_layers
    if layers < 2:
        raise ValueError(f"the LLM has {layers} layer(s); BASIC needs at least 2 (k = half of them)")
    return layers // 2


def _packed(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions where each row of `mask` [B, S] is true, left-aligned: (index, valid), both [B, max count]."""
    counts = mask.sum(1)
    width = int(counts.max()) if mask.numel() else 0
    index = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=mask.device)[None, :] < counts[:, None]
    return index, valid


@dataclass
class Positions:
    """Where the images and their text queries are in a batch (rows with at least one image token only)."""

    image_mask: torch.Tensor  # [B, S], image token positions
    images: int
    m: int  # tokens per image
    rows: torch.Tensor  # [R], batch rows holding image tokens
    q_index: torch.Tensor  # [R, Q] text query positions (after the row's first image)
    q_valid: torch.Tensor
    k_index: torch.Tensor  # [R, N] image token positions
    k_valid: torch.Tensor
    k_end: torch.Tensor  # [R, N] last position of the token's image
    k_token: torch.Tensor  # [R, N] index of the token among all the batch's image tokens (row-major)
    queries_per_token: torch.Tensor  # [R, N] text queries after the token's image


def locate(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None,
           image_token_id: int, images: int, queries: str = "text") -> Positions:
    """Image tokens and text queries of a batch; each image's m tokens must lie in one row, in image order."""
    if queries not in ATTENTION_QUERIES:
        raise ValueError(f"attention queries {queries!r} is not one of {', '.join(ATTENTION_QUERIES)}")
    image = input_ids == image_token_id
    tokens = int(image.sum())
    if tokens == 0 or images == 0 or tokens % images:
        raise ValueError(f"{tokens} image tokens in input_ids for {images} images: each image needs the same number")
    m = tokens // images
    rows = image.any(1).nonzero().squeeze(1)
    k_index, k_valid = _packed(image[rows])
    rank = image.flatten().cumsum(0).view_as(image) - 1
    k_token = rank[rows].gather(1, k_index)
    k_image = torch.where(k_valid, k_token // m, 0)
    local_row = torch.arange(len(rows), device=image.device)[:, None].expand_as(k_index)
    valid_image, valid_row, valid_pos = k_image[k_valid], local_row[k_valid], k_index[k_valid]
    first_row = torch.full((images,), len(rows), device=image.device).scatter_reduce(0, valid_image, valid_row, "amin")
    last_row = torch.full((images,), -1, device=image.device).scatter_reduce(0, valid_image, valid_row, "amax")
    if (first_row != last_row).any():
        raise ValueError(f"the image tokens of an image span two rows: is m = {m} tokens per image right?")
    ends = torch.full((images,), -1, device=image.device).scatter_reduce(0, valid_image, valid_pos, "amax")
    k_end = torch.where(k_valid, ends[k_image], -1)

    text = ~image
    if attention_mask is not None:
        text &= attention_mask.bool()
    if queries != "text":
        if labels is None:
            raise ValueError(f"attention queries {queries!r} need labels to tell prompt from response")
        text &= (labels == IGNORE_INDEX) if queries == "prompt" else (labels != IGNORE_INDEX)
    first_end = torch.where(k_valid, k_end, image.shape[1]).min(1).values
    positions = torch.arange(image.shape[1], device=image.device)
    q_index, q_valid = _packed(text[rows] & (positions[None, :] > first_end[:, None]))
    per_image = ((q_index[first_row] > ends[:, None]) & q_valid[first_row]).sum(1)
    return Positions(image, images, m, rows, q_index, q_valid, k_index, k_valid, k_end, k_token,
                     torch.where(k_valid, per_image[k_image], 0))


class Capture:
    """Records v_hat (when `layer_weights` is given) and text->image attention in layers 1..k of one pass."""

    def __init__(self, model, inputs: dict[str, Any], k: int, *, layer_weights: torch.Tensor | None = None,
                 detach_target: bool = True, queries: str = "text"):
        layers = decoder_layers(model)
        if not 1 <= k <= len(layers):
            raise ValueError(f"BASIC's k = {k}, but the LLM has {len(layers)} layers")
        if layer_weights is not None and len(layer_weights) != k:
            raise ValueError(f"{len(layer_weights)} layer weights for k = {k}")
        pixel_values = inputs.get("pixel_values")
        self.positions = locate(inputs["input_ids"], inputs.get("attention_mask"), inputs.get("labels"),
                                model.config.image_token_id, 0 if pixel_values is None else len(pixel_values),
                                queries)
        self.k, self.layers, self.detach_target = k, layers[:k], detach_target
        self.layer_weights = None if layer_weights is None else layer_weights.tolist()
        self.target: torch.Tensor | None = None
        self.attention_totals: torch.Tensor | None = None
        self._attention_seen: set[int] = set()
        self._hidden_seen: set[int] = set()
        self._handles: list = []

    @property
    def forward_kwargs(self) -> dict[str, Any]:
        return {"basic_recorder": self}

    def __enter__(self) -> Self:
        if self.layer_weights is not None:
            self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int):
        def keep_image_positions(module, args, output):
            if index in self._hidden_seen:
                return
            self._hidden_seen.add(index)
            hidden = output[0] if isinstance(output, tuple) else output
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_target):
                part = hidden[self.positions.image_mask].to(torch.promote_types(hidden.dtype, torch.float32))
                part = part.detach() if self.detach_target else part
                weighted = self.layer_weights[index] * part
                self.target = weighted if self.target is None else self.target + weighted

        return keep_image_positions

    def observe(self, module, query: torch.Tensor, key: torch.Tensor, attention_mask, kwargs: dict,
                log_norm: torch.Tensor | None = None) -> None:
        """Called by the attention function of layers 1..k (with the kernel's row logsumexp when it has it);
        counts each layer once."""
        layer = module.layer_idx
        if layer >= self.k or layer in self._attention_seen:
            return
        self._attention_seen.add(layer)
        if query.shape[2] != key.shape[2] or query.shape[2] != self.positions.image_mask.shape[1]:
            raise RuntimeError(
                f"BASIC records attention over the whole sequence ({self.positions.image_mask.shape[1]} tokens) "
                f"in one pass; layer {layer} got {query.shape[2]} queries and {key.shape[2]} keys (a KV cache?)"
            )
        p = self.positions
        with torch.no_grad():
            totals = attention.image_attention(
                query, key, attention_mask, scaling=kwargs.get("scaling") or module.scaling,
                sliding_window=kwargs.get("sliding_window"), rows=p.rows, q_index=p.q_index, q_valid=p.q_valid,
                k_index=p.k_index, k_end=p.k_end, k_valid=p.k_valid, log_norm=log_norm,
            )
        self.attention_totals = totals if self.attention_totals is None else self.attention_totals + totals

    def _check(self, seen: set[int], what: str) -> None:
        if seen != set(range(self.k)):
            raise RuntimeError(
                f"BASIC recorded the {what} of layers {sorted(i + 1 for i in seen)}, not of all of 1..{self.k}: "
                "was the forward pass given `**capture.forward_kwargs`, with the LLM on basic_* attention?"
            )

    def supervision(self) -> torch.Tensor:
        """v_hat, [images, m, d] (float32, or float64 for a float64 model)."""
        self._check(self._hidden_seen, "hidden states")
        return self.target.view(self.positions.images, self.positions.m, -1)

    def patch_weights(self, scheme: str = "attention") -> torch.Tensor:
        """a, [images, m]: per image token, the mean over layers 1..k, heads and the text queries after its image
        of the attention probability on it; `uniform` gives every patch its image's mean. Detached."""
        if scheme not in PATCH_WEIGHT_SCHEMES:
            raise ValueError(f"patch weight scheme {scheme!r} is not one of {', '.join(PATCH_WEIGHT_SCHEMES)}")
        self._check(self._attention_seen, "attention")
        p = self.positions
        counts = p.queries_per_token
        per_token = torch.where(counts > 0, self.attention_totals / (self.k * counts.clamp(min=1)), 0.0)
        flat = per_token.new_zeros(p.images * p.m)
        flat[p.k_token[p.k_valid]] = per_token[p.k_valid]
        weights = flat.view(p.images, p.m)
        silent = int((weights.sum(1) == 0).sum())
        if silent:
            logger.warning("%d of %d images have no text query after them: their BASIC terms are 0", silent, p.images)
        if scheme == "uniform":
            weights = weights.mean(1, keepdim=True).expand_as(weights).clone()
        return weights


def patch_weights(model, inputs: dict[str, Any], k: int | None = None, scheme: str = "attention", *,
                  queries: str = "text") -> torch.Tensor:
    """BASIC's patch weights [images, m] for a LLaVA model and its processor's batch (input_ids,
    attention_mask, pixel_values; any padding side, text-only rows allowed), through the training code path."""
    k = default_layers(model) if k is None else k
    device = next(model.parameters()).device
    batch = {key: inputs[key].to(device) for key in ("input_ids", "attention_mask", "pixel_values", "labels")
             if inputs.get(key) is not None}
    before = attention.enable(model)
    try:
        capture = Capture(model, batch, k, queries=queries)
        model_inputs = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad(), capture:
            model.model(**model_inputs, use_cache=False, **capture.forward_kwargs)
        return capture.patch_weights(scheme)
    finally:
        attention.restore(model, before)
