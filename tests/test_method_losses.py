"""The contract's math against direct float64 formulas: layer weights, DAS, SDS (blockwise) and their gradients."""

from __future__ import annotations

import pytest
import torch

from basic.method import das_loss, layer_weights, sds_loss


def test_layer_weights():
    k = 16
    i = torch.arange(1, k + 1, dtype=torch.float64)
    torch.testing.assert_close(layer_weights(k), i**2 / (i**2).sum(), rtol=0, atol=0)
    torch.testing.assert_close(layer_weights(k, "decreasing"), (k + 1 - i) ** 2 / (i**2).sum(), rtol=0, atol=0)
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
    torch.testing.assert_close(sds_loss(v, v_hat, a, E, block_elements), direct_sds(v, v_hat, a, E), rtol=1e-12,
                               atol=0)


@pytest.mark.parametrize("block_elements", [2**24, 40])
def test_gradients_equal_autograd_of_the_formula(block_elements):
    v, v_hat, a, E = random_inputs(images=2, m=3, vocab=11)
    v.requires_grad_(True)
    v_hat.requires_grad_(True)
    for loss, direct in ((lambda x, y: sds_loss(x, y, a, E, block_elements), lambda x, y: direct_sds(x, y, a, E)),
                         (lambda x, y: das_loss(x, y, a), lambda x, y: direct_das(x, y, a))):
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


def test_low_precision_inputs_are_computed_in_float32():
    v, v_hat, a, E = random_inputs()
    got = sds_loss(v.bfloat16(), v_hat.float(), a.float(), E.bfloat16())
    assert got.dtype == torch.float32
    expected = direct_sds(v.bfloat16().double(), v_hat.float().double(), a.float().double(), E.bfloat16().double())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)
    assert das_loss(v.bfloat16(), v_hat.bfloat16(), a.bfloat16()).dtype == torch.float32


def test_shapes_are_checked_and_no_images_give_zero():
    v, v_hat, a, E = random_inputs()
    with pytest.raises(ValueError, match=r"das_loss: expected v, v_hat \[images, m, d\]"):
        das_loss(v, v_hat[:, :3], a)
    with pytest.raises(ValueError, match=r"sds_loss: E must be \[vocab, 5\]"):
        sds_loss(v, v_hat, a, E[:, :4])
    empty = v[:0].requires_grad_(True)
    assert das_loss(empty, v_hat[:0], a[:0]).item() == 0 and sds_loss(empty, v_hat[:0], a[:0], E).item() == 0
