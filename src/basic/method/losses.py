"""BASIC's layer weights and its two loss terms, exactly as docs/method.md states them.

Batched inputs: initial embeddings `v` and supervision embeddings `v_hat` shaped [images, m, d], patch
weights `a` shaped [images, m]. Each loss is a sum over an image's m patches, averaged over the images.

- DAS: sum_i a_i * || v_i/|v_i| - v_hat_i/|v_hat_i| ||^2
- SDS: sum_i a_i * KL( softmax(v_hat_i E^T) || softmax(v_i E^T) ), E the vocabulary matrix [vocab, d].

DAS is computed in float32 (float64 when given float64). SDS runs as one autograd function over blocks of
patches that forms its gradient while it goes, so no [images, m, vocab] tensor is ever held, and it does
the least arithmetic the loss needs: three [patches x d] x [d x vocab] products (student and target
logits in one, then the gradient (q - p) E); a fourth only when the target is not detached. Its
products take the vocabulary matrix as stored: for a bf16/fp16 E the patch rows (and q - p) are rounded
to E's precision and the products accumulate and return float32 (on CPU, which has no such mixed
product, the same rounding with float32 products), so E is never copied; softmax, KL and gradient are
float32. A float32 or float64 E keeps its precision throughout. E gets no gradient: it is the teacher's
vocabulary, and BASIC's gradient must reach only the projector (and the LLM, when the target is not
detached, through `v_hat`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from basic.method.config import LAYER_WEIGHT_SCHEMES

# At most this many elements in one [patches, vocab] block of SDS (student and target rows: twice that).
SDS_BLOCK_ELEMENTS = 2**24
LOW_PRECISION = (torch.bfloat16, torch.float16)
# Mixed products (bf16/fp16 operands, float32 result) exist on CUDA (and meta) in recent PyTorch.
_MIXED_PRODUCT = "dtype" in torch.ops.aten.mm.overloads()
# Devices that take the GPU's code path (meta: counting FLOPs on shapes alone).
GPU_DEVICES = ("cuda", "meta")


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


def sds_loss(
    v: torch.Tensor, v_hat: torch.Tensor, a: torch.Tensor, E: torch.Tensor, block_elements: int | None = None
) -> torch.Tensor:
    """Semantic distribution supervision: weighted KL(softmax(v_hat E^T) || softmax(v E^T)).

    `E` is used as given (no gradient); a model that scales its input embeddings (Gemma: x sqrt(d)) is
    served by passing E pre-scaled or, equivalently and without a copy of E, `v` and `v_hat` scaled.
    `block_elements` bounds a [patches, vocab] block (default: an eighth of the patches, at most 2**24
    elements).
    """
    _check_shapes("sds_loss", v, v_hat, a)
    if E.ndim != 2 or E.shape[1] != v.shape[-1]:
        raise ValueError(f"sds_loss: E must be [vocab, {v.shape[-1]}], got {tuple(E.shape)}")
    images, d = v.shape[0], v.shape[-1]
    grad = torch.is_grad_enabled()
    total = _KL.apply(
        v.reshape(-1, d),
        v_hat.reshape(-1, d),
        a.reshape(-1).detach(),
        E.detach(),
        block_elements,
        grad and v.requires_grad,
        grad and v_hat.requires_grad,
    )
    return total / images if images else total


class _Vocabulary:
    """E for the products `rows @ E^T` (logits) and `rows @ E` (gradients), float32 or float64 results."""

    def __init__(self, E: torch.Tensor, dtype: torch.dtype):
        self.low = E.dtype if E.dtype in LOW_PRECISION and dtype == torch.float32 else None
        mixed = self.low is not None and _MIXED_PRODUCT and E.device.type in GPU_DEVICES
        # Without a mixed product the operands are rounded the same way and multiplied in float32: products
        # of bf16/fp16 numbers are exact there, so only the order of the sums differs.
        self.matrix = E if mixed else E.to(dtype)
        self.mixed, self.dtype = mixed, dtype

    def operand(self, rows: torch.Tensor) -> torch.Tensor:
        if self.low is None:
            return rows.to(self.dtype)
        return rows.to(self.low) if self.mixed else rows.to(self.low).to(self.dtype)

    def product(self, rows: torch.Tensor, transpose: bool) -> torch.Tensor:
        matrix = self.matrix.T if transpose else self.matrix
        if self.mixed:
            return torch.mm(rows, matrix, out_dtype=self.dtype)
        return rows @ matrix


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[n, v] b[n, v]: on a GPU a batched 1 x vocab x 1 product (no [n, vocab] temporary); on CPU,
    where such small batched products are slow, elementwise."""
    if a.device.type not in GPU_DEVICES:
        return torch.linalg.vecdot(a, b)
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _KL(torch.autograd.Function):
    """sum_n a_n KL(softmax(Y_n E^T) || softmax(X_n E^T)) over blocks of rows, its gradient formed in forward.

    With zq = x E^T and zp = y E^T (one product for both), q and p their softmaxes:
    KL = sum p (log p - log q); dKL/dzq = q - p; dKL/dzp = p (log p - log q - KL).
    The gradients w.r.t. the rows are those times E: one more product for the student, and one more for a
    target that is not detached (both in one). Logits, probabilities and gradients live for one block.
    """

    @staticmethod
    def forward(ctx, x, y, a, E, block_elements, need_x, need_y):
        dtype = _compute_dtype(x, y, E)
        vocab = _Vocabulary(E, dtype)
        rows, d = x.shape
        n_vocab = E.shape[0]
        if block_elements is None:
            block = min(-(-rows // 8), SDS_BLOCK_ELEMENTS // max(n_vocab, 1))
        else:
            block = block_elements // max(n_vocab, 1)
        block = max(1, min(rows, block))
        total = torch.zeros((), dtype=dtype, device=x.device)
        grad_x = torch.empty((rows, d), dtype=dtype, device=x.device) if need_x else None
        grad_y = torch.empty((rows, d), dtype=dtype, device=x.device) if need_y else None
        for start in range(0, rows, block):
            r = slice(start, min(start + block, rows))
            n = r.stop - r.start
            # student rows, then target rows: one product for both
            z = vocab.product(torch.cat([vocab.operand(x[r]), vocab.operand(y[r])]), transpose=True)
            log_probs = torch.log_softmax(z, -1)  # one fused pass over the logits
            del z
            log_q, log_p = log_probs[:n], log_probs[n:]
            p = log_p.exp()
            log_ratio = log_p.sub_(log_q)  # log p - log q, in place
            kl = _row_dot(p, log_ratio)
            weight = a[r].to(dtype)
            total = total + (weight * kl).sum()
            if not (need_x or need_y):
                continue
            g_dtype = vocab.low if vocab.mixed else dtype  # the gradient product's operand, as the logits'
            q = log_q.exp_()
            if need_y:
                g = torch.empty((2 * n if need_x else n, n_vocab), dtype=g_dtype, device=x.device)
                torch.mul(
                    log_ratio.sub_(kl[:, None]), p, out=g[n:] if need_x else g
                )  # p (log p - log q - KL)
                if need_x:
                    torch.sub(q, p, out=g[:n])
            elif g_dtype == dtype:
                g = q.sub_(p)
            else:
                g = torch.sub(q, p, out=torch.empty((n, n_vocab), dtype=g_dtype, device=x.device))
            grads = vocab.product(g if vocab.mixed else vocab.operand(g), transpose=False)
            grads.view(-1, n, d).mul_(weight[:, None])  # student rows, then target rows
            if need_x:
                grad_x[r] = grads[:n]
            if need_y:
                grad_y[r] = grads[n:] if need_x else grads
            del log_probs, log_q, log_p, p, q, g, grads
        ctx.save_for_backward(*(g for g in (grad_x, grad_y) if g is not None))
        ctx.input_dtypes, ctx.needed = (x.dtype, y.dtype), (need_x, need_y)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        saved = list(ctx.saved_tensors)
        grads = []
        for needed, dtype in zip(ctx.needed, ctx.input_dtypes):
            grads.append((saved.pop(0) * grad_total).to(dtype) if needed else None)
        return grads[0], grads[1], None, None, None, None, None
