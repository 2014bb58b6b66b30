"""The attention function that trains the model and, in the first k layers, measures text->image attention.

BASIC weights each image patch by how much the text attends to it in the LLM's first k layers. Asking
transformers for `output_attentions` would force eager attention and keep a [heads, seq, seq] matrix
per layer. Instead, `enable(model)` switches the text model to `basic_<impl>` (registered here with
`AttentionInterface`, plus the same mask function as `<impl>`, without which transformers would silently
drop the causal mask): the output still comes from SDPA (or flash attention), and when the forward pass
carries a recorder (the `basic_recorder` keyword, see `basic.method.capture`) the recorder is shown the
layer's queries, keys and mask, and computes under no_grad the text queries' probabilities on image keys
(`image_attention`). Over SDPA, layers 1..k call one of SDPA's own kernels directly (CPU: its flash kernel;
CUDA: flash attention without a mask, else memory-efficient attention), so that it also returns each
row's log-normaliser: then only the [text queries x image keys] scores are needed. Otherwise (flash
attention, a kernel that refuses the inputs) whole rows of text queries are scored, a block at a time. No
[seq x seq] score matrix for all heads is ever held.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

logger = logging.getLogger(__name__)

PREFIX = "basic_"
# Implementations that cannot carry the recorder: eager is per-model code (and the slow path BASIC avoids),
# flex attention takes block masks.
UNSUPPORTED = ("eager", "paged|eager", "flex_attention")
# Elements of one float32 [rows, heads, queries, keys] score block (a few such blocks live at once).
SCORE_BLOCK_ELEMENTS = 2**25
_refusals: set[str] = set()  # kernel refusals already reported


def _basic_attention(base: str):
    def attention(module, query, key, value, attention_mask, *args, basic_recorder=None, **kwargs):
        if basic_recorder is None or module.layer_idx >= basic_recorder.k:
            return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, *args, **kwargs)
        # Layers 1..k: the same path in the forward pass and in a gradient-checkpointing recompute.
        fused = (
            sdpa_with_log_norm(module, query, key, value, attention_mask, **kwargs)
            if base == "sdpa"
            else None
        )
        if fused is None:
            basic_recorder.observe(module, query, key, attention_mask, kwargs)
            return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, *args, **kwargs)
        output, log_norm = fused
        basic_recorder.observe(module, query, key, attention_mask, kwargs, log_norm=log_norm)
        return output, None

    attention.__name__ = f"{PREFIX}{base}_attention_forward"
    return attention


def sdpa_with_log_norm(
    module,
    query,
    key,
    value,
    attention_mask,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """SDPA's output from one of SDPA's own kernels, called directly so that it also returns the
    log-normaliser (logsumexp) of every query row; None where that is not possible here.

    transformers' `sdpa_attention_forward` calls `F.scaled_dot_product_attention`, which picks a kernel and
    discards the log-normaliser the kernel computes. With it, a text query's probability on an image key
    needs only their two vectors. The arguments are prepared as transformers and PyTorch prepare them:
    key/value heads repeated, causal flag only without a mask, boolean masks made additive (and, for the
    memory-efficient kernel, aligned to 16 elements).
    """
    if any(kwargs.get(name) is not None for name in ("position_bias", "cache", "softcap")):
        return None
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len = query.shape[2]
    is_causal = (
        q_len > 1
        and attention_mask is None
        and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    )
    bias = attention_mask
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.where(bias, torch.zeros((), dtype=query.dtype, device=bias.device), -torch.inf)
    aten = torch.ops.aten
    if query.device.type == "cpu":
        kernels = [
            partial(
                aten._scaled_dot_product_flash_attention_for_cpu,
                query,
                key,
                value,
                dropout,
                is_causal,
                attn_mask=bias,
                scale=scaling,
            )
        ]
    elif query.device.type == "cuda":
        if bias is not None:
            kv_len = key.shape[2]
            bias = torch.nn.functional.pad(bias, (0, -kv_len % 16))[..., :kv_len]  # the kernel's alignment
            bias = bias.expand(query.shape[0], query.shape[1], q_len, kv_len)
        efficient = partial(
            aten._scaled_dot_product_efficient_attention,
            query,
            key,
            value,
            bias,
            True,
            dropout,
            is_causal,
            scale=scaling,
        )
        flash = partial(
            aten._scaled_dot_product_flash_attention, query, key, value, dropout, is_causal, scale=scaling
        )  # no mask, half precision only
        kernels = [efficient] if bias is not None else [flash, efficient]
    else:
        return None
    for kernel in kernels:
        try:
            output, log_norm = kernel()[:2]
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:  # a kernel that does not take these inputs (dtype, head size)
            reason = str(error).splitlines()[0]
            if reason not in _refusals:
                _refusals.add(reason)
                logger.warning(
                    "BASIC: an SDPA kernel refused these inputs (%s); trying the next path", reason
                )
            continue
        if log_norm.shape[:2] == query.shape[:2] and log_norm.shape[2] >= q_len:
            return output.transpose(1, 2).contiguous(), log_norm[:, :, :q_len]
    return None


def register(base: str) -> str:
    """Register `basic_<base>` (attention and mask functions) once; returns its name."""
    name = PREFIX + base
    if name in ALL_ATTENTION_FUNCTIONS._global_mapping:
        return name
    if (
        base in UNSUPPORTED
        or base not in ALL_ATTENTION_FUNCTIONS._global_mapping
        or base not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    ):
        raise ValueError(
            f"BASIC measures attention inside SDPA or flash attention; the text model uses {base!r}. "
            "Load it with attn_implementation='sdpa' (or a flash attention implementation)"
        )
    AttentionInterface.register(name, _basic_attention(base))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[base])
    return name


def text_implementation(model) -> str:
    return model.config.text_config._attn_implementation or "sdpa"


def enable(model) -> str:
    """Switch `model`'s LLM (not its vision tower) to the BASIC attention; returns the implementation before."""
    before = text_implementation(model)
    if not before.startswith(PREFIX):
        model.set_attn_implementation({"text_config": register(before)})
    return before


def restore(model, implementation: str) -> None:
    if text_implementation(model) != implementation:
        model.set_attn_implementation({"text_config": implementation})


def image_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    positions,
    *,
    scaling: float,
    sliding_window: int | None = None,
    log_norm: torch.Tensor | None = None,
    block_elements: int = SCORE_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Per image token, the sum over its image's text queries of the head-mean softmax probability on it.

    query [B, heads, S, hd] and key [B, kv_heads, S, hd] as the attention function receives them (after
    RoPE, key/value heads not repeated); `attention_mask` as the layer's mask function made it: None
    (causal, plus `sliding_window` when given, as flash attention applies it), a [B, S] padding mask
    (flash attention), or a 4-D boolean / additive mask. `positions` (`basic.method.capture.Positions`)
    gives per image its `row`, its tokens' positions `keys` [images, m], and the positions after it,
    `queries` [images, Q], with `q_valid` marking its text queries. With `log_norm` [B, heads, S] (the
    kernel's logsumexp of every row) only the query x image-key scores are computed; without it, the
    softmax needs every key a query may see, so whole rows are scored first for their log-normalisers,
    a block of queries at a time. Scores are float32 (float64 for float64 inputs). Returns [images, m].

    One product per block yields the log-probabilities themselves: the queries carry -logsumexp as extra
    columns (split in two, so that TF32 products keep it exact) against columns of ones beside the scaled
    keys. The block is exponentiated in place and summed over heads, then over the image's text queries
    (other query slots drop out there): three passes over it. The mask is read only for the image keys.
    A block holds whole images' query slots, or the slots of one image in chunks, so that each image's
    keys are read once per block.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    heads, S, hd = query.shape[1:]
    kv_heads = key.shape[1]
    group = heads // kv_heads
    row, keys, queries, q_valid = positions.row, positions.keys, positions.queries, positions.q_valid
    images, m = keys.shape
    slots = queries.shape[1]
    width = (
        -(-(hd + 2) // 4) * 4
    )  # scaled query | -lse (high, low) | zeros, a multiple of 16 bytes in float32
    image_keys = torch.zeros((images, kv_heads, m, width), dtype=dtype, device=query.device)
    image_keys[..., :hd] = _take(key, row, keys).transpose(1, 2)  # [images, kv_heads, m, hd]
    image_keys[..., :hd] *= scaling
    image_keys[..., hd : hd + 2] = 1
    row_keys = None
    if log_norm is None:  # whole rows of keys for the log-normalisers
        row_keys = key.index_select(0, row).to(dtype) * scaling  # [images, kv_heads, S, hd]
    per_slot = heads * (S if log_norm is None else m)
    if per_slot * slots <= block_elements:
        image_block, slot_block = block_elements // max(per_slot * slots, 1), max(slots, 1)
    else:
        image_block, slot_block = 1, max(1, block_elements // per_slot)
    totals = torch.zeros((images, m), dtype=dtype, device=query.device)
    for first in range(0, images, image_block):
        ii = slice(first, first + image_block)
        n = len(range(images)[ii])
        for start in range(0, slots, slot_block):
            qi, valid = queries[ii, start : start + slot_block], q_valid[ii, start : start + slot_block]
            c = qi.shape[1]
            q = torch.empty((n, heads, c, width), dtype=dtype, device=query.device)
            q[..., :hd] = _take(query, row[ii], qi).transpose(1, 2)  # [n, heads, c, hd]
            q[..., hd + 2 :] = 0
            if log_norm is None:
                scores = torch.matmul(
                    q[..., :hd].view(n, kv_heads, group * c, hd), row_keys[ii].transpose(-1, -2)
                )
                scores = scores.view(n, heads, c, S)
                every_key = torch.arange(S, device=query.device).expand(n, S)
                _apply(
                    scores, _visible(attention_mask, row[ii], qi, every_key, sliding_window, S, causal=True)
                )
                row_norm = scores.logsumexp(-1)
                del scores
            else:
                row_norm = log_norm[row[ii, None], :, qi].transpose(1, 2).to(dtype)  # [n, heads, c]
            # A row with no visible key (lse -inf: a slot that is no text query) gets 0 instead: nothing
            # overflows (nor runs into CPUs' slow exp of huge negatives); such slots drop out below.
            minus = torch.where(row_norm.isfinite(), -row_norm, 0.0)
            high = minus.to(torch.bfloat16).to(dtype)  # exact in TF32
            q[..., hd] = high
            q[..., hd + 1] = minus - high
            # Query heads h = kv * group + g share kv head `kv`, as repeat_kv pairs them, without copying keys.
            log_probs = torch.matmul(q.view(n, kv_heads, group * c, width), image_keys[ii].transpose(-1, -2))
            log_probs = log_probs.view(n, heads, c, m)
            visible = _visible(attention_mask, row[ii], qi, keys[ii], sliding_window, S, causal=False)
            shared = visible is not None and visible.dtype == torch.bool and visible.shape[1] == 1
            if not shared:
                _apply(log_probs, visible)
            probs = log_probs.exp_().sum(1)  # [n, c, m]
            if shared:  # one mask for all heads: applied after the sum over heads
                probs = torch.where(visible[:, 0], probs, 0.0)
            totals[ii] += torch.bmm(valid.to(dtype)[:, None, :], probs).view(n, m)  # the image's text queries
    return totals / heads


def _take(x: torch.Tensor, row: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x[row[:, None], :, positions] for x [B, heads, S, hd]: [n, p, heads, hd]. As a gather of whole
    [heads, hd] rows where x is laid out [B, S, heads, hd] (as the attention projections leave it)."""
    B, heads, S, hd = x.shape
    try:
        rows = x.transpose(1, 2).view(B * S, heads, hd)
    except RuntimeError:  # another layout: gather elements
        return x[row[:, None], :, positions]
    return rows.index_select(0, (row[:, None] * S + positions).flatten()).view(*positions.shape, heads, hd)


def _apply(scores: torch.Tensor, visible: torch.Tensor | None) -> None:
    """Mask `scores` in place: -inf where a boolean mask hides a key, or add an additive mask."""
    if visible is None:
        return
    if visible.dtype == torch.bool:
        scores.masked_fill_(~visible, -torch.inf)
    else:
        scores += visible.to(scores.dtype)


def _visible(
    attention_mask: torch.Tensor | None,
    row: torch.Tensor,
    qi: torch.Tensor,
    key_positions: torch.Tensor,
    sliding_window: int | None,
    kv_len: int,
    causal: bool,
) -> torch.Tensor | None:
    """What the layer's mask says about queries `qi` [images, c] and keys `key_positions` [images, n] of the
    images' rows: a boolean [images, 1, c, n] (or [images, heads, c, n]) tensor, an additive one for a float
    mask, or None when it hides nothing. `causal=False`: the keys come before every query (an image's keys)."""
    if attention_mask is None or attention_mask.ndim == 2:
        allowed = key_positions[:, None, :] <= qi[:, :, None] if causal else None
        if sliding_window is not None:
            inside = key_positions[:, None, :] > qi[:, :, None] - sliding_window
            allowed = inside if allowed is None else allowed & inside
        if attention_mask is not None:
            padding = (
                attention_mask[:, -kv_len:].bool()[row].gather(1, key_positions)
            )  # flash attention's mask
            allowed = padding[:, None, :] if allowed is None else allowed & padding[:, None, :]
        return None if allowed is None else allowed[:, None].expand(-1, -1, qi.shape[1], -1)
    mask_row = row if attention_mask.shape[0] > 1 else torch.zeros_like(row)
    if attention_mask.shape[1] == 1:  # the queries' whole mask rows (a row gather), then the keys' columns
        plane = attention_mask[:, 0]
        try:
            rows = plane.view(-1, plane.shape[-1])
        except RuntimeError:
            rows = None
        if rows is not None:
            picked = rows.index_select(0, (mask_row[:, None] * plane.shape[1] + qi).flatten()).view(
                *qi.shape, -1
            )
            return picked.gather(2, key_positions[:, None, :].expand(-1, qi.shape[1], -1))[:, None]
    mask = attention_mask[
        mask_row[:, None, None], :, qi[:, :, None], key_positions[:, None, :]
    ]  # [images, c, n, 1|h]
    return mask.permute(0, 3, 1, 2)
