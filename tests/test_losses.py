"""The paper's losses against hand-computed values, and the overflow case."""
import math

import pytest
import torch

from raysearch.train.losses import (EXP_CLAMP, aux_loss, class_balance_weights, class_balanced_bce,
                              cf_reconstruction_loss, safe_exp, total_loss, triplet_loss)

LN2 = math.log(2.0)


def test_class_weights_inverse_frequency_mean_one():
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    w = class_balance_weights(y)
    # eta = (2, 1) -> raw (1/2, 1) -> mean 3/4 -> (2/3, 4/3)
    assert torch.allclose(w, torch.tensor([2 / 3, 4 / 3]))
    assert w.mean().item() == pytest.approx(1.0)


def test_class_weights_count_labelled_rows_only_and_zero_count_classes():
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    w = class_balance_weights(y, torch.tensor([True, False, True]))
    # labelled rows: eta = (1, 0 -> clamped to 1) -> equal weights
    assert torch.allclose(w, torch.tensor([1.0, 1.0]))


def test_class_balanced_bce_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cw = torch.tensor([2 / 3, 4 / 3])
    # row 0: both BCE = ln 2 -> 2/3 ln2 + 4/3 ln2 = 2 ln2
    r0 = 2 * LN2
    # row 1: BCE(y=0, z=2) = log(1 + e^2); BCE(y=1, z=-1) = log(1 + e^1)
    r1 = 2 / 3 * math.log(1 + math.e ** 2) + 4 / 3 * math.log(1 + math.e)
    assert class_balanced_bce(logits, y, cw).item() == pytest.approx((r0 + r1) / 2, rel=1e-6)
    # the unlabelled row contributes nothing; the mean is over labelled rows
    assert class_balanced_bce(logits, y, cw, torch.tensor([True, False])).item() == pytest.approx(r0, rel=1e-6)
    # a batch with no labelled row gives 0, not NaN
    assert class_balanced_bce(logits, y, cw, torch.tensor([False, False])).item() == 0.0


def test_cf_reconstruction_hand_computed():
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    tgt = torch.zeros(2, 4)
    # row 0: mean|d| = 1, sqrt(mean d^2) = 1 -> e^2
    # row 1: mean|d| = 0.5, sqrt(mean d^2) = sqrt(4/4) = 1 -> e^1.5
    got = cf_reconstruction_loss(pred, tgt)
    assert torch.allclose(got, torch.tensor([math.exp(2.0), math.exp(1.5)]), rtol=1e-6)
    # a perfect reconstruction is the minimum exp(0) = 1, with a finite (zero) gradient
    p = torch.zeros(1, 4, requires_grad=True)
    l = cf_reconstruction_loss(p, torch.zeros(1, 4))
    l.sum().backward()
    assert l.item() == pytest.approx(1.0)
    assert torch.isfinite(p.grad).all() and p.grad.abs().max() == 0


def test_overflow_stays_finite_with_useful_gradient():
    pred = torch.full((2, 64), 1000.0, requires_grad=True)
    tgt = torch.zeros(2, 64)
    naive = torch.exp((pred - tgt).abs().mean(1) + (pred - tgt).pow(2).mean(1).sqrt())
    assert torch.isinf(naive).all()  # the paper's raw form overflows float32
    l = cf_reconstruction_loss(pred, tgt)
    assert torch.isfinite(l).all()
    z = 2000.0  # L1 + L2
    assert l[0].item() == pytest.approx(math.exp(EXP_CLAMP) * (1 + z - EXP_CLAMP), rel=1e-5)
    l.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad > 0).all()  # still pushes the prediction towards the target


def test_safe_exp_is_continuous_at_the_clamp():
    z = torch.tensor([EXP_CLAMP - 1e-4, EXP_CLAMP, EXP_CLAMP + 1e-4], dtype=torch.float64)
    v = safe_exp(z)
    assert v[0] < v[1] < v[2]
    assert v[1].item() == pytest.approx(math.exp(EXP_CLAMP))


def test_aux_loss_weights_clipped_by_omega_and_only_cf_rows():
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
    tgt = torch.tensor([[0.0, 0.0], [0.0, 0.0], [float("nan"), 0.0]])  # row 2 has no CF vector
    w = torch.tensor([5.0, 1.0, 2.0])
    has = torch.tensor([True, True, False])
    # row 0: min(5, 3) * e^2 ; row 1: 1 * e^0 ; "mean": over the 2 rows with a vector
    expected = (3 * math.exp(2.0) + 1.0) / 2
    got = aux_loss(pred, tgt, w, 3.0, has, norm="mean")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # "weight_sum" (default, the authors' code): divided by the clipped weights 3 + 1
    assert aux_loss(pred, tgt, w, 3.0, has).item() == pytest.approx((3 * math.exp(2.0) + 1.0) / 4, rel=1e-6)
    assert aux_loss(pred, tgt, w, 3.0, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    with pytest.raises(KeyError, match="aux_norm"):  # raysearch.choices.AUX_NORMS (TrainConfig checks names)
        aux_loss(pred, tgt, w, 3.0, has, norm="sum")


def test_weights_all_clipped_at_omega_give_exactly_the_uniform_loss():
    """With weight_sum normalisation, interaction weights that all clip at Omega are relative
    weights 1: exactly the uniform loss (with ``mean`` they would be alpha x Omega)."""
    g = torch.Generator().manual_seed(0)
    pred, tgt = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    has = torch.ones(16, dtype=torch.bool)
    has[3] = False
    inter = torch.sqrt(torch.randint(9, 400, (16,), generator=g).float())  # sqrt|U_i| >= 3 = Omega
    uniform = torch.ones(16)
    a = aux_loss(pred, tgt, inter, 3.0, has)
    b = aux_loss(pred, tgt, uniform, 3.0, has)
    assert torch.equal(a, b)
    assert aux_loss(pred, tgt, inter, 3.0, has, norm="mean").item() == pytest.approx(3 * b.item(), rel=1e-6)


def test_triplet_hand_computed():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 10.0]])
    # row 0: 5 - 1 + 1 = 5 ; row 1: 1 - 10 + 1 < 0 -> 0
    assert triplet_loss(a, p, n, 1.0).item() == pytest.approx(2.5, rel=1e-6)
    assert triplet_loss(a, p, n, 1.0, torch.tensor([True, False])).item() == pytest.approx(5.0, rel=1e-6)


def test_total_loss():
    assert total_loss(torch.tensor(2.0), torch.tensor(3.0), 1.5).item() == pytest.approx(6.5)
    assert total_loss(torch.tensor(2.0), None, 1.5).item() == pytest.approx(2.0)
