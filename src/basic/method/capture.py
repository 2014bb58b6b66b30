"""What BASIC takes from one forward pass of LLaVA: supervision embeddings and patch weights.

`Capture(model, inputs, k, ...)` is entered around the forward pass (the training forward itself, so
nothing is run twice) and handed to it as the `basic_recorder` keyword, which transformers passes down to
the attention function (`basic.method.attention`). During the pass it

- takes the tokens per image, m, from the projector's output shape, and locates the images and their
  text queries (`locate`) with tensors of static shapes only: no host synchronisation in a step;
- keeps, through forward hooks on decoder layers 1..k, only the image positions of each layer's output
  (the raw residual stream, before any final norm), summed with the layer weights into v_hat as the pass
  goes: one [image tokens, d] buffer, detached unless the target is meant to carry gradient;
- adds up, in layers 1..k, the head-mean attention probability of each text query on each token of the
  image before it.

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

from basic.data.labels import IGNORE_INDEX
from basic.method import attention
from basic.method.config import ATTENTION_QUERIES, PATCH_WEIGHT_SCHEMES

logger = logging.getLogger(__name__)


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


@dataclass
class Positions:
    """Where the images and their text queries are in a batch, per image, in static shapes."""

    images: int
    m: int  # tokens per image
    flat: torch.Tensor  # [images * m] flat position (row * S + position) of every image token, in image order
    row: torch.Tensor  # [images] batch row of each image
    keys: torch.Tensor  # [images, m] positions of its tokens in that row
    queries: (
        torch.Tensor
    )  # [images, S - m] the positions after the image (the last position repeats past the end)
    q_valid: torch.Tensor  # [images, S - m] which of them are the image's text queries
    query_count: torch.Tensor  # [images] text queries after each image


def locate(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    image_token_id: int,
    images: int,
    m: int,
    queries: str = "text",
) -> Positions:
    """Image tokens and text queries of a batch whose image tokens are `images` runs of m (the model checks
    the count), each in one row, in image order. Only device operations of static shapes: an image split
    across rows is reported by an asynchronous device assertion."""
    if queries not in ATTENTION_QUERIES:
        raise ValueError(f"attention queries {queries!r} is not one of {', '.join(ATTENTION_QUERIES)}")
    S = input_ids.shape[1]
    image = input_ids == image_token_id
    # Image positions first, in order (a stable sort: no data-dependent shape as with nonzero).
    flat = torch.sort((~image).flatten().to(torch.int8), stable=True).indices[: images * m]
    per_image = flat.view(images, m)
    row = per_image[:, 0] // S
    torch._assert_async(
        (per_image[:, -1] // S == row).all(),
        f"the image tokens of an image span two rows: is m = {m} tokens per image right?",
    )
    keys = per_image % S
    text = ~image
    if attention_mask is not None:
        text &= attention_mask.bool()
    if queries != "text":
        if labels is None:
            raise ValueError(f"attention queries {queries!r} need labels to tell prompt from response")
        text &= (labels == IGNORE_INDEX) if queries == "prompt" else (labels != IGNORE_INDEX)
    # At most S - m positions come after an image of m tokens: the query slots of every image.
    after = keys[:, -1:] + 1 + torch.arange(S - m, device=input_ids.device)
    inside = after < S
    after = after.clamp(max=S - 1)
    q_valid = inside & text[row[:, None], after]
    return Positions(images, m, flat, row, keys, after, q_valid, q_valid.sum(1))


def check_image_tokens(input_ids: torch.Tensor, image_token_id: int, images: int) -> None:
    """A clear error for a batch whose image tokens do not divide among its images (reads the count: for
    use outside a training step, where the model's own check reports the same)."""
    tokens = int((input_ids == image_token_id).sum())
    if tokens == 0 or images == 0 or tokens % images:
        raise ValueError(
            f"{tokens} image tokens in input_ids for {images} images: each image needs the same number"
        )


class SilentImages:
    """Warns about images without a text query after them (their BASIC terms are 0) without waiting for the
    device: a CUDA count is copied to the host as it is produced and read at a later step."""

    def __init__(self):
        self._pending: list[tuple[torch.Tensor, Any, int]] = []

    def add(self, silent: torch.Tensor, images: int) -> None:
        from torch._subclasses.fake_tensor import is_fake

        if silent.device.type == "meta" or is_fake(silent):  # counting FLOPs: there is no count
            return
        if silent.device.type == "cuda":
            host = torch.empty((), dtype=silent.dtype, pin_memory=True)
            host.copy_(silent, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending.append((host, done, images))
        else:
            self._pending.append((silent, None, images))
        self.report()

    def report(self, wait: bool = False) -> None:
        pending, self._pending = self._pending, []
        for count, done, images in pending:
            if done is not None and not wait and not done.query():
                self._pending.append((count, done, images))
                continue
            if done is not None:
                done.synchronize()
            if int(count):
                logger.warning(
                    "%d of %d images have no text query after them: their BASIC terms are 0",
                    int(count),
                    images,
                )


class Capture:
    """Records v_hat (when `layer_weights` is given) and text->image attention in layers 1..k of one pass."""

    def __init__(
        self,
        model,
        inputs: dict[str, Any],
        k: int,
        *,
        layer_weights: torch.Tensor | None = None,
        detach_target: bool = True,
        queries: str = "text",
    ):
        layers = decoder_layers(model)
        if not 1 <= k <= len(layers):
            raise ValueError(f"BASIC's k = {k}, but the LLM has {len(layers)} layers")
        if layer_weights is not None and len(layer_weights) != k:
            raise ValueError(f"{len(layer_weights)} layer weights for k = {k}")
        if queries not in ATTENTION_QUERIES:
            raise ValueError(f"attention queries {queries!r} is not one of {', '.join(ATTENTION_QUERIES)}")
        if queries != "text" and inputs.get("labels") is None:
            raise ValueError(f"attention queries {queries!r} need labels to tell prompt from response")
        pixel_values = inputs.get("pixel_values")
        self.images = 0 if pixel_values is None else len(pixel_values)
        if self.images == 0:
            raise ValueError("BASIC needs a batch with images (pixel_values)")
        self._batch = (
            inputs["input_ids"],
            inputs.get("attention_mask"),
            inputs.get("labels"),
            model.config.image_token_id,
            queries,
        )
        self.projector = model.model.multi_modal_projector
        self.k, self.layers, self.detach_target = k, layers[:k], detach_target
        self.layer_weights = None if layer_weights is None else layer_weights.tolist()
        self.m: int | None = None
        self._positions: Positions | None = None
        self.target: torch.Tensor | None = None
        self.attention_totals: torch.Tensor | None = None
        self.silent: torch.Tensor | None = None
        self._attention_seen: set[int] = set()
        self._hidden_seen: set[int] = set()
        self._handles: list = []

    @property
    def forward_kwargs(self) -> dict[str, Any]:
        return {"basic_recorder": self}

    @property
    def positions(self) -> Positions:
        if self._positions is None:
            if self.m is None:
                raise RuntimeError(
                    "BASIC: the projector has not run in this forward pass (no image features)"
                )
            input_ids, attention_mask, labels, image_token_id, queries = self._batch
            self._positions = locate(
                input_ids, attention_mask, labels, image_token_id, self.images, self.m, queries
            )
        return self._positions

    def __enter__(self) -> Self:
        self._handles = [self.projector.register_forward_hook(self._image_features)]
        if self.layer_weights is not None:
            self._handles += [
                layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)
            ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _image_features(self, module, args, output) -> None:
        """The projector's output, [images, m, d]: m from its (static) shape."""
        self.m = output.numel() // (self.images * output.shape[-1])

    def _hook(self, index: int):
        def hook(module, args, output):
            self.keep_image_positions(index, output[0] if isinstance(output, tuple) else output)

        return hook

    def keep_image_positions(self, index: int, hidden: torch.Tensor) -> None:
        """Adds layer `index`'s output at the image positions, weighted, to v_hat (once per layer)."""
        if index in self._hidden_seen:
            return
        self._hidden_seen.add(index)
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_target):
            part = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.positions.flat)
            part = part.detach() if self.detach_target else part
            weight = self.layer_weights[index]
            if self.target is None:
                self.target = part.to(dtype) * weight
            else:
                self.target.add_(part, alpha=weight)

    def observe(
        self,
        module,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask,
        kwargs: dict,
        log_norm: torch.Tensor | None = None,
    ) -> None:
        """Called by the attention function of layers 1..k (with the kernel's row logsumexp when it has it);
        counts each layer once."""
        layer = module.layer_idx
        if layer >= self.k or layer in self._attention_seen:
            return
        self._attention_seen.add(layer)
        sequence = self._batch[0].shape[1]
        if query.shape[2] != key.shape[2] or query.shape[2] != sequence:
            raise RuntimeError(
                f"BASIC records attention over the whole sequence ({sequence} tokens) in one pass; layer "
                f"{layer} got {query.shape[2]} queries and {key.shape[2]} keys (a KV cache?)"
            )
        with torch.no_grad():
            totals = attention.image_attention(
                query,
                key,
                attention_mask,
                self.positions,
                scaling=kwargs.get("scaling") or module.scaling,
                sliding_window=kwargs.get("sliding_window"),
                log_norm=log_norm,
            )
        self.attention_totals = (
            totals if self.attention_totals is None else self.attention_totals.add_(totals)
        )

    def _check(self, seen: set[int], what: str) -> None:
        if seen != set(range(self.k)):
            raise RuntimeError(
                f"BASIC recorded the {what} of layers {sorted(i + 1 for i in seen)}, not of all of 1..{self.k}: "
                "was the forward pass given `**capture.forward_kwargs`, with the LLM on basic_* attention?"
            )

    def supervision(self) -> torch.Tensor:
        """v_hat, [images, m, d] (float32, or float64 for a float64 model)."""
        self._check(self._hidden_seen, "hidden states")
        return self.target.view(self.images, self.m, -1)

    def patch_weights(self, scheme: str = "attention") -> torch.Tensor:
        """a, [images, m]: per image token, the mean over layers 1..k, heads and the text queries after its image
        of the attention probability on it; `uniform` gives every patch its image's mean. Detached. `silent`
        then holds the number of images without text queries (their weights are 0), on the device."""
        if scheme not in PATCH_WEIGHT_SCHEMES:
            raise ValueError(
                f"patch weight scheme {scheme!r} is not one of {', '.join(PATCH_WEIGHT_SCHEMES)}"
            )
        self._check(self._attention_seen, "attention")
        counts = self.positions.query_count[:, None]
        weights = torch.where(counts > 0, self.attention_totals / (self.k * counts.clamp(min=1)), 0.0)
        self.silent = (counts == 0).sum()
        if scheme == "uniform":
            weights = weights.mean(1, keepdim=True).expand_as(weights).clone()
        return weights


def patch_weights(
    model, inputs: dict[str, Any], k: int | None = None, scheme: str = "attention", *, queries: str = "text"
) -> torch.Tensor:
    """BASIC's patch weights [images, m] for a LLaVA model and its processor's batch (input_ids,
    attention_mask, pixel_values; any padding side, text-only rows allowed), through the training code path."""
    k = default_layers(model) if k is None else k
    device = next(model.parameters()).device
    batch = {
        key: inputs[key].to(device)
        for key in ("input_ids", "attention_mask", "pixel_values", "labels")
        if inputs.get(key) is not None
    }
    check_image_tokens(batch["input_ids"], model.config.image_token_id, len(batch.get("pixel_values", ())))
    before = attention.enable(model)
    try:
        capture = Capture(model, batch, k, queries=queries)
        model_inputs = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad(), capture:
            model.model(**model_inputs, use_cache=False, **capture.forward_kwargs)
        weights = capture.patch_weights(scheme)
        silent = SilentImages()
        silent.add(capture.silent, capture.images)
        silent.report(wait=True)
        return weights
    finally:
        attention.restore(model, before)
