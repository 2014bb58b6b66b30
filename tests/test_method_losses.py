"""The contract's math against direct float64 formulas: layer weights, DAS, SDS (blockwise) and their gradients."""

from __future__ import annotations

import pytest
import torch

from basic.method import das_loss, layer_weights, sds_loss


def test_layer_weights():
    k = 16
    i = torch.arange(1, k + 1, dtype=torch.float64)
    torch.testing.assert_close(layer_weights(k), i**2 / (i**2).sum(), rtol=0, atol=0)
    torch.testing.assert_close(
        layer_weights(k, "decreasing"), (k + 1 - i) ** 2 / (i**2).sum(), rtol=0, atol=0
    )
    torch.testing.assert_close(layer_weights(k, "constant"), torch.full((k,), 1 / k, dtype=torch.float64))
    for scheme in ("increasing", "constant", "decreasing"):
        assert layer_weights(20, scheme).sum().item() == pytest.approx(1.0, abs=1e-15)
    assert layer_weights(1).tolist() == [1.0]
    with pytest.raises(ValueError, match="'quadratic' is not one of increasing, constant, decreasing"):
        layer_weights(4, "quadratic")


def random_inputs(images=3, m=7, d=5, vocab=23, seed=0):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(images, m, d, dtype=torch.float64, generator=generator)
    v_hat = 3 * torch.randn(images, m, d, dtype=torch.float64, generator=generator)
    a = torch.rand(images, m, dtype=torch.float64, generator=generator) / m
    E = torch.randn(vocab, d, dtype=torch.float64, generator=generator)
    return v, v_hat, a, E


def direct_das(v, v_hat, a):
    total = 0.0
    for j in range(v.shape[0]):
        for i in range(v.shape[1]):
            total += a[j, i] * ((v[j, i] / v[j, i].norm() - v_hat[j, i] / v_hat[j, i].norm()) ** 2).sum()
    return total / v.shape[0]


def direct_sds(v, v_hat, a, E):
    total = 0.0
    for j in range(v.shape[0]):
        for i in range(v.shape[1]):
            p, q = torch.softmax(E @ v_hat[j, i], 0), torch.softmax(E @ v[j, i], 0)
            total += a[j, i] * (p * (p / q).log()).sum()
    return total / v.shape[0]


def test_das_equals_the_formula():
    v, v_hat, a, _ = random_inputs()
    torch.testing.assert_close(das_loss(v, v_hat, a), direct_das(v, v_hat, a), rtol=1e-13, atol=0)
    assert das_loss(v, v, a).item() == pytest.approx(0, abs=1e-14)
    assert das_loss(v, 5 * v, a).item() == pytest.approx(0, abs=1e-14)  # direction only


@pytest.mark.parametrize("block_elements", [2**24, 50, 23, 1])
def test_sds_equals_the_formula_in_any_blocking(block_elements):
    v, v_hat, a, E = random_inputs()
    torch.testing.assert_close(
        sds_loss(v, v_hat, a, E, block_elements), direct_sds(v, v_hat, a, E), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("block_elements", [2**24, 40])
def test_gradients_equal_autograd_of_the_formula(block_elements):
    v, v_hat, a, E = random_inputs(images=2, m=3, vocab=11)
    v.requires_grad_(True)
    v_hat.requires_grad_(True)
    for loss, direct in (
        (lambda x, y: sds_loss(x, y, a, E, block_elements), lambda x, y: direct_sds(x, y, a, E)),
        (lambda x, y: das_loss(x, y, a), lambda x, y: direct_das(x, y, a)),
    ):
        got = torch.autograd.grad(loss(v, v_hat), (v, v_hat))
        expected = torch.autograd.grad(direct(v, v_hat), (v, v_hat))
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(lambda x, y: sds_loss(x, y, a, E, block_elements), (v, v_hat))


def test_sds_gradient_only_where_asked_and_never_into_E_or_a():
    v, v_hat, a, E = random_inputs()
    v.requires_grad_(True)
    E.requires_grad_(True)
    a.requires_grad_(True)
    loss = sds_loss(v, v_hat, a, E)
    loss.backward()
    assert v.grad is not None and E.grad is None and a.grad is None
    with torch.no_grad():
        assert not sds_loss(v, v_hat, a, E).requires_grad


def test_a_low_precision_vocabulary_sets_the_products_precision_and_the_rest_is_float32():
    """A bf16 E: the patch rows are rounded to bf16 for the products (as on a GPU's mixed product), the
    products return float32, and the rest is float32: the value equals float64 on the rounded rows."""
    v, v_hat, a, E = random_inputs()
    got = sds_loss(v.bfloat16(), v_hat.float(), a.float(), E.bfloat16())
    assert got.dtype == torch.float32
    rounded = [t.bfloat16().double() for t in (v, v_hat)]
    expected = direct_sds(*rounded, a.float().double(), E.bfloat16().double())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)
    assert das_loss(v.bfloat16(), v_hat.bfloat16(), a.bfloat16()).dtype == torch.float32
    # a float32 vocabulary keeps float32 rows
    expected = direct_sds(v.bfloat16().double(), v_hat.float().double(), a.double(), E.float().double())
    torch.testing.assert_close(
        sds_loss(v.bfloat16(), v_hat.float(), a, E.float()).double(), expected, rtol=1e-5, atol=0
    )


def test_shapes_are_checked_and_no_images_give_zero():
    v, v_hat, a, E = random_inputs()
    with pytest.raises(ValueError, match=r"das_loss: expected v, v_hat \[images, m, d\]"):
        das_loss(v, v_hat[:, :3], a)
    with pytest.raises(ValueError, match=r"sds_loss: E must be \[vocab, 5\]"):
        sds_loss(v, v_hat, a, E[:, :4])
    empty = v[:0].requires_grad_(True)
    assert das_loss(empty, v_hat[:0], a[:0]).item() == 0 and sds_loss(empty, v_hat[:0], a[:0], E).item() == 0


# LLaVA-1.5-7B: a batch of 8 images of 576 patches, Vicuna-7B's width and vocabulary (with <image> and pad).
IMAGES_7B, PATCHES_7B, D_7B, VOCAB_7B = 8, 576, 4096, 32064
VOCAB_PRODUCT_7B = 2 * IMAGES_7B * PATCHES_7B * D_7B * VOCAB_7B  # one [patches x d] x [d x vocab] product


def sds_flops_7b(target_grad: bool = False) -> dict:
    """SDS forward + backward at 7B shapes on the meta device (bf16 v and E, float32 v_hat), counted."""
    from torch.utils.flop_counter import FlopCounterMode

    v = torch.empty(IMAGES_7B, PATCHES_7B, D_7B, dtype=torch.bfloat16, device="meta", requires_grad=True)
    v_hat = torch.empty(IMAGES_7B, PATCHES_7B, D_7B, device="meta", requires_grad=target_grad)
    a = torch.empty(IMAGES_7B, PATCHES_7B, device="meta")
    E = torch.empty(VOCAB_7B, D_7B, dtype=torch.bfloat16, device="meta")
    with FlopCounterMode(display=False) as counter:
        sds_loss(v, v_hat, a, E).backward()
    assert v.grad.shape == v.shape and v.grad.dtype == torch.bfloat16
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def test_sds_at_7b_shapes_does_three_vocabulary_products_and_no_more():
    """Student and target logits (one product), the gradient (q - p) E: 3 products; a fourth would be 1.33x."""
    flops = sds_flops_7b()
    assert sum(flops.values()) <= 1.05 * 3 * VOCAB_PRODUCT_7B
    assert flops["aten.mm"] == 3 * VOCAB_PRODUCT_7B  # the rest: per-row dot products over the vocabulary


def test_an_undetached_target_costs_exactly_one_more_product():
    assert sds_flops_7b(target_grad=True)["aten.mm"] == 4 * VOCAB_PRODUCT_7B


def test_bf16_sds_at_realistic_norms_is_close_to_float64():
    """v and E in bf16 (the model's), v_hat in float32 (as the objective accumulates it), |v_hat| 50-100 and
    Vicuna-like embedding rows (entries ~0.02, norm ~1.3), students near the target (KL ~0.01-0.06):
    against float64 on the same stored values the value is within 1e-3 relative (measured over 3 seeds:
    <= 4e-4 for such students, from v_hat rounded to bf16 for its product; <= 6e-5 at KL 0.1-1.8) and the
    gradient within 1.5e-2 relative in Frobenius norm (measured <= 7.5e-3, from q - p rounded to bf16 for
    its product, as a GPU's mixed product does; the gradient itself is returned in bf16)."""
    g = torch.Generator().manual_seed(0)
    m, d, vocab = 16, 4096, 32000
    E = (0.02 * torch.randn(vocab, d, dtype=torch.float64, generator=g)).bfloat16()
    for norm in (50.0, 100.0):
        v_hat = torch.randn(1, m, d, dtype=torch.float64, generator=g)
        v_hat = norm * v_hat / v_hat.norm(dim=-1, keepdim=True)
        v = v_hat + 0.1 * norm / d**0.5 * torch.randn(
            1, m, d, dtype=torch.float64, generator=g
        )  # a close student
        v = (0.8 * norm * v / v.norm(dim=-1, keepdim=True)).bfloat16()
        a = torch.rand(1, m, dtype=torch.float64, generator=g) / m
        student = v.double().requires_grad_(True)
        expected = direct_sds_batched(student, v_hat.float().double(), a, E.double())
        expected.backward()
        student_bf16 = v.clone().requires_grad_(True)
        got = sds_loss(student_bf16, v_hat.float(), a.float(), E)
        got.backward()
        torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-3, atol=0)
        error = (student_bf16.grad.double() - student.grad).norm() / student.grad.norm()
        assert error < 1.5e-2, (norm, error)


def direct_sds_batched(v, v_hat, a, E):
    """The formula with whole [images, m, vocab] tensors (fine in float64 for a few patches)."""
    log_p, log_q = torch.log_softmax(v_hat @ E.T, -1), torch.log_softmax(v @ E.T, -1)
    return (a * (log_p.exp() * (log_p - log_q)).sum(-1)).sum(1).mean()
