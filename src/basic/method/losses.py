"""BASIC's layer weights and its two loss terms, exactly as DESIGN.md's method contract states them.

Batched inputs: initial embeddings `v` and supervision embeddings `v_hat` shaped [images, m, d], patch
weights `a` shaped [images, m]. Each loss is a sum over an image's m patches, averaged over the images.

- DAS: sum_i a_i * || v_i/|v_i| - v_hat_i/|v_hat_i| ||^2
- SDS: sum_i a_i * KL( softmax(v_hat_i E^T) || softmax(v_i E^T) ), E the vocabulary matrix [vocab, d].

Both are computed in float32 (float64 when given float64). SDS runs as one autograd function that walks
the patches and the vocabulary in blocks and forms its gradient while it goes, so no [images, m, vocab]
tensor is ever held, neither for the forward pass nor for backward. E gets no gradient: it is the
teacher's vocabulary, and BASIC's gradient must reach only the projector (and the LLM, when the target is
not detached, through `v_hat`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from basic.method.config import LAYER_WEIGHT_SCHEMES

# At most this many elements in one float32 [patches, vocab] block of SDS (about three live at once).
SDS_BLOCK_ELEMENTS = 2**24


def layer_weights(k: int, scheme: str = "increasing") -> torch.Tensor:
    """w_1..w_k (float64, summing to 1): i^2, constant, or (k+1-i)^2, each over sum_j j^2 (or k)."""
    if k < 1:
        raise ValueError(f"layer_weights: k must be >= 1, got {k}")
    i = torch.arange(1, k + 1, dtype=torch.float64)
    if scheme == "increasing":
        raw = i**2
    elif scheme == "decreasing":
        raw = (k + 1 - i) ** 2
    elif scheme == "constant":
        raw = torch.ones_like(i)
    else:
        raise ValueError(f"layer weight scheme {scheme!r} is not one of {', '.join(LAYER_WEIGHT_SCHEMES)}")
    return raw / raw.sum()


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_shapes(name: str, v: torch.Tensor, v_hat: torch.Tensor, a: torch.Tensor) -> None:
    if v.ndim != 3 or v.shape != v_hat.shape or a.shape != v.shape[:2]:
        raise ValueError(
            f"{name}: expected v, v_hat [images, m, d] and a [images, m]; got {tuple(v.shape)}, "
            f"{tuple(v_hat.shape)}, {tuple(a.shape)}"
        )


def _mean_over_images(per_image_sum: torch.Tensor) -> torch.Tensor:
    # No images: nothing to supervise (not NaN), still connected to the graph.
    return per_image_sum.mean() if per_image_sum.numel() else per_image_sum.sum()


def das_loss(v: torch.Tensor, v_hat: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Directional alignment supervision: weighted squared distance of the unit vectors."""
    _check_shapes("das_loss", v, v_hat, a)
    dtype = _compute_dtype(v, v_hat)
    distance = (F.normalize(v.to(dtype), dim=-1) - F.normalize(v_hat.to(dtype), dim=-1)).pow(2).sum(-1)
    return _mean_over_images((a.to(dtype) * distance).sum(-1))


def sds_loss(v: torch.Tensor, v_hat: torch.Tensor, a: torch.Tensor, E: torch.Tensor,
             block_elements: int | None = None) -> torch.Tensor:
    """Semantic distribution supervision: weighted KL(softmax(v_hat E^T) || softmax(v E^T)).

    `E` is used as given (no gradient); a model that scales its input embeddings (Gemma: x sqrt(d)) is
    served by passing E pre-scaled or, equivalently and without a copy of E, `v` and `v_hat` scaled.
    `block_elements` bounds a [patches, vocab] block (default: an eighth of the whole, at most 2**24).
    """
    _check_shapes("sds_loss", v, v_hat, a)
    if E.ndim != 2 or E.shape[1] != v.shape[-1]:
        raise ValueError(f"sds_loss: E must be [vocab, {v.shape[-1]}], got {tuple(E.shape)}")
    images, d = v.shape[0], v.shape[-1]
    total = _BlockwiseKL.apply(v.reshape(-1, d), v_hat.reshape(-1, d), a.reshape(-1).detach(), E.detach(),
                               block_elements)
    return total / images if images else total


class _BlockwiseKL(torch.autograd.Function):
    """sum_n a_n KL(softmax(Y_n E^T) || softmax(X_n E^T)), blockwise, its gradient formed in the forward pass.

    With z = x E^T, dKL/dz_q = q - p for the student x, and dKL/dz_p = p * (log p - log q - KL) for the
    target y. A first pass over the vocabulary finds both log-normalisers; a second one accumulates the KL and
    the gradients (only those that are needed), in place, so a few [rows, vocab] blocks live at once. When the
    vocabulary fits in one block its logits are computed once: three matrix products in all (student and
    target logits, then (q - p) E), the least this loss needs.
    """

    @staticmethod
    def forward(ctx, x, y, a, E, block_elements):
        dtype = _compute_dtype(x, y, E)
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows, d = x.shape
        vocab = E.shape[0]
        if block_elements is None:  # ~1/8 of the whole [rows, vocab] problem: few blocks, little memory
            block_elements = min(max(rows * vocab // 8, 2**16), SDS_BLOCK_ELEMENTS)
        vocab_block = max(1, min(vocab, block_elements // max(d, 1)))
        row_block = max(1, min(rows, block_elements // vocab_block))
        vocab_slices = [slice(s, min(s + vocab_block, vocab)) for s in range(0, vocab, vocab_block)]
        total = torch.zeros((), dtype=dtype, device=x.device)
        grad_x = torch.zeros((rows, d), dtype=dtype, device=x.device) if need_x else None
        grad_y = torch.zeros((rows, d), dtype=dtype, device=x.device) if need_y else None
        for start in range(0, rows, row_block):
            r = slice(start, min(start + row_block, rows))
            n = r.stop - r.start
            xy = torch.cat([x[r], y[r]]).to(dtype)  # student rows, then target rows: one product for both

            def logits(vs: slice, xy: torch.Tensor = xy) -> tuple[torch.Tensor, torch.Tensor]:
                block = E[vs].to(dtype)
                return block, xy @ block.T

            if len(vocab_slices) == 1:  # one exp pass: normalise the exponentials directly
                block, z = logits(vocab_slices[0])
                top = z.amax(-1, keepdim=True)
                probs = (z - top).exp_()
                sums = probs.sum(-1, keepdim=True)
                log_norm = top + sums.log()
                blocks = iter([(block, z, probs.div_(sums))])
            else:
                log_norm = torch.full((2 * n, 1), -torch.inf, dtype=dtype, device=x.device)
                for vs in vocab_slices:
                    log_norm = torch.logaddexp(log_norm, logits(vs)[1].logsumexp(-1, keepdim=True))
                blocks = ((block, z, (z - log_norm).exp_()) for block, z in map(logits, vocab_slices))
            p_dot_diff = torch.zeros((n,), dtype=dtype, device=x.device)  # sum_v p_v (zp_v - zq_v)
            p_diff_e = torch.zeros((n, d), dtype=dtype, device=x.device) if need_y else None
            p_e = torch.zeros((n, d), dtype=dtype, device=x.device) if need_y else None
            for block, z, probs in blocks:
                q, p = probs[:n], probs[n:]
                diff = z[n:].sub_(z[:n])  # zp - zq
                p_dot_diff += torch.linalg.vecdot(p, diff)
                if need_y:
                    p_diff_e += (p * diff) @ block
                    p_e += p @ block
                if need_x:
                    grad_x[r] += q.sub_(p) @ block  # (q - p) E
                del block, z, probs, q, p, diff
            # KL = sum p (log p - log q) = sum p (zp - zq) - (lse_p - lse_q); its gradient for the target
            # rows is sum_v p_v (zp_v - zq_v - sum p (zp - zq)) E_v.
            kl = p_dot_diff - (log_norm[n:, 0] - log_norm[:n, 0])
            weight = a[r].to(dtype)
            total = total + (weight * kl).sum()
            if need_x:
                grad_x[r] *= weight[:, None]
            if need_y:
                grad_y[r] = weight[:, None] * (p_diff_e - p_dot_diff[:, None] * p_e)
        ctx.save_for_backward(*(g for g in (grad_x, grad_y) if g is not None))
        ctx.input_dtypes = (x.dtype, y.dtype)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        saved = list(ctx.saved_tensors)
        grads = []
        for needed, dtype in zip(ctx.needs_input_grad[:2], ctx.input_dtypes):
            grads.append((saved.pop(0) * grad_total).to(dtype) if needed else None)
        return grads[0], grads[1], None, None, None
