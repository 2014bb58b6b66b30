"""The attention function that trains the model and, in the first k layers, measures text->image attention.

BASIC weights each image patch by how much the text attends to it in the LLM's first k layers. Asking
transformers for `output_attentions` would force eager attention and keep a [heads, seq, seq] matrix
per layer. Instead, `enable(model)` switches the text model to `basic_<impl>` (registered here with
`AttentionInterface`, plus the same mask function as `<impl>`, without which transformers would silently
drop the causal mask): the output still comes from SDPA (or flash attention), and when the forward pass
carries a recorder (the `basic_recorder` keyword, see `basic.method.capture`) the recorder is shown the
layer's queries, keys and mask. It computes, under no_grad, only the rows of text queries against image
keys (`image_attention`), a block of queries at a time.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "basic_"
# Implementations that cannot carry the recorder: eager is per-model code (and the slow path BASIC avoids),
# flex attention takes block masks.
UNSUPPORTED = ("eager", "paged|eager", "flex_attention")
# Elements of one float32 [rows, heads, queries, keys] score block (a few such blocks live at once).
SCORE_BLOCK_ELEMENTS = 2**25


def _basic_attention(base: str):
    def attention(module, query, key, value, attention_mask, *args, basic_recorder=None, **kwargs):
        if basic_recorder is not None:
            basic_recorder.observe(module, query, key, attention_mask, kwargs)
        return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, *args, **kwargs)

    attention.__name__ = f"{PREFIX}{base}_attention_forward"
    return attention


def register(base: str) -> str:
    """Register `basic_<base>` (attention and mask functions) once; returns its name."""
    name = PREFIX + base
    if name in ALL_ATTENTION_FUNCTIONS._global_mapping:
        return name
    if base in UNSUPPORTED or base not in ALL_ATTENTION_FUNCTIONS._global_mapping \
            or base not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
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


def image_attention(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, *,
                    scaling: float, sliding_window: int | None, rows: torch.Tensor, q_index: torch.Tensor,
                    q_valid: torch.Tensor, k_index: torch.Tensor, k_end: torch.Tensor, k_valid: torch.Tensor,
                    block_elements: int = SCORE_BLOCK_ELEMENTS) -> torch.Tensor:
    """Per image token, the sum over its text queries of the head-mean softmax probability on it.

    query [B, heads, S, hd] and key [B, kv_heads, S, hd] as the attention function receives them (after
    RoPE, key/value heads not repeated); `attention_mask` as the layer's mask function made it: None
    (causal, plus `sliding_window` when given, as flash attention applies it), a [B, S] padding mask
    (flash attention), or a 4-D boolean / additive mask. `rows` selects batch rows; per selected row,
    `q_index`/`q_valid` [R, Q] are the text query positions, `k_index`/`k_valid` [R, N] the image token
    positions and `k_end` [R, N] the last position of each token's image: a query counts for an image only
    when it comes after it. The softmax runs over every key the query may see, so each row needs all its
    scores, but only a block of queries is scored at a time. Returns [R, N] in float32 (float64 for
    float64 inputs).
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    q, k = query[rows], key[rows]
    R, heads, S, hd = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    N = k_index.shape[1]
    positions = torch.arange(S, device=q.device)
    block = max(1, block_elements // max(R * heads * S, 1))
    totals = torch.zeros((R, N), dtype=dtype, device=q.device)
    for start in range(0, q_index.shape[1], block):
        qi = q_index[:, start:start + block]
        c = qi.shape[1]
        qc = q.gather(2, qi[:, None, :, None].expand(R, heads, c, hd))
        # Query heads h = kv * group + g share kv head `kv`, as repeat_kv pairs them, without copying keys.
        scores = torch.matmul(qc.view(R, kv_heads, group * c, hd), k.transpose(-1, -2)).view(R, heads, c, S)
        scores = (scores * scaling).to(dtype)
        if attention_mask is None or attention_mask.ndim == 2:
            allowed = positions[None, None, :] <= qi[:, :, None]
            if sliding_window is not None:
                allowed &= positions[None, None, :] > qi[:, :, None] - sliding_window
            if attention_mask is not None:
                allowed &= attention_mask[rows][:, None, -S:].bool()
            scores.masked_fill_(~allowed[:, None], -torch.inf)
        else:
            mask = attention_mask[rows] if attention_mask.shape[0] > 1 else attention_mask.expand(R, -1, -1, -1)
            mask = mask[torch.arange(R, device=q.device)[:, None], :, qi].transpose(1, 2)  # [R, 1|heads, c, S]
            if mask.dtype == torch.bool:
                scores.masked_fill_(~mask, -torch.inf)
            else:
                scores += mask.to(dtype)
        log_norm = scores.logsumexp(-1, keepdim=True)
        on_image = scores.gather(-1, k_index[:, None, None, :].expand(R, heads, c, N))
        probs = (on_image - log_norm).exp().sum(1)  # [R, c, N], summed over heads
        counts = (qi[:, :, None] > k_end[:, None, :]) & q_valid[:, start:start + block, None] & k_valid[:, None, :]
        totals += torch.where(counts, probs, 0.0).sum(1)  # where, not *: padded query slots may be NaN
    return totals / heads
