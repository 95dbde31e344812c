"""Eq. 3-4 on hand-computed values, the rank variant, and the gradient reversal layer."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from mmir_env import DomainDiscriminator, GradientReversal, grad_reverse, rank_reward, refinement_reward, relevance
from mmir_env.domains import SOURCE, TARGET


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_relevance_source_is_sigmoid_of_logit():
    logits = torch.tensor([-2.0, 0.0, 1.5])
    expected = [sigmoid(-2.0), 0.5, sigmoid(1.5)]
    assert relevance(logits, SOURCE).tolist() == pytest.approx(expected, abs=1e-6)


def test_relevance_target_is_one_minus_sigmoid():
    logits = torch.tensor([-2.0, 0.0, 1.5])
    expected = [1 - sigmoid(-2.0), 0.5, 1 - sigmoid(1.5)]
    assert relevance(logits, TARGET).tolist() == pytest.approx(expected, abs=1e-6)


def test_relevance_with_domain_tensor_broadcasts():
    logits = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    domain = torch.tensor([[0], [1]])
    out = relevance(logits, domain)
    assert out[0].tolist() == pytest.approx([sigmoid(1.0), sigmoid(-1.0)], abs=1e-6)
    assert out[1].tolist() == pytest.approx([1 - sigmoid(1.0), 1 - sigmoid(-1.0)], abs=1e-6)


@pytest.mark.parametrize(
    "domain, logit, tau, expected",
    [
        # source: relevance = sigmoid(logit); low relevance (looks source-only) -> +1
        (SOURCE, -1.0, 0.5, 1.0),  # 0.269 < 0.5
        (SOURCE, 1.0, 0.5, -1.0),  # 0.731 >= 0.5
        (SOURCE, 0.0, 0.5, -1.0),  # 0.5 is not < 0.5
        (SOURCE, 1.0, 0.8, 1.0),  # 0.731 < 0.8
        # target: relevance = 1 - sigmoid(logit); strongly target-like -> low relevance -> +1
        (TARGET, 2.0, 0.5, 1.0),  # 0.119 < 0.5
        (TARGET, -2.0, 0.5, -1.0),  # 0.881 >= 0.5
        (TARGET, -2.0, 0.9, 1.0),  # 0.881 < 0.9
        (TARGET, 2.0, 0.1, -1.0),  # 0.119 >= 0.1
    ],
)
def test_threshold_reward_hand_computed(domain, logit, tau, expected):
    rel = relevance(torch.tensor([logit]), domain)
    assert refinement_reward(rel, tau).item() == expected


def test_reward_is_vectorised_over_leading_shape():
    rel = torch.tensor([[[0.1, 0.6], [0.49, 0.51]]])
    out = refinement_reward(rel, 0.5)
    assert out.shape == rel.shape
    assert out.tolist() == [[[1.0, -1.0], [1.0, -1.0]]]


def test_reward_with_per_row_tau_tensor():
    rel = torch.tensor([0.3, 0.3])
    assert refinement_reward(rel, torch.tensor([0.2, 0.4])).tolist() == [-1.0, 1.0]


def test_rank_reward_lowest_remaining_row():
    rel = torch.tensor([[0.4, 0.1, 0.3], [0.4, 0.1, 0.3]])
    selectable = torch.tensor([[True, True, True], [True, False, True]])
    assert rank_reward(rel, torch.tensor([1, 2]), selectable).tolist() == [1.0, 1.0]
    assert rank_reward(rel, torch.tensor([2, 0]), selectable).tolist() == [-1.0, -1.0]


def test_grl_forward_identity_backward_flips_and_scales():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, upstream)
    assert torch.allclose(g, -0.7 * upstream)


def test_grl_gradcheck_against_negated_scaled_identity():
    # gradcheck of f(x) = -GRL(x) / coeff: its true Jacobian is -I/coeff but the analytic one
    # (through the reversed backward) is +I, so gradcheck must FAIL on the raw GRL ...
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda t: GradientReversal.apply(t, 2.0), (x,), raise_exception=True)
    # ... and the analytic gradient equals -coeff times the numerical one exactly.
    coeff = 2.0
    numerical = torch.autograd.functional.jacobian(lambda t: t.clone(), x)
    analytic = torch.autograd.functional.jacobian(lambda t: GradientReversal.apply(t, coeff), x)
    assert torch.allclose(analytic, -coeff * numerical)


def test_discriminator_architecture_and_reversed_feature_gradient():
    torch.manual_seed(0)
    disc = DomainDiscriminator(16, hidden_dim=128)
    layers = list(disc.net)
    assert [type(m).__name__ for m in layers] == ["Linear", "LeakyReLU", "Linear"]
    assert layers[0].in_features == 16 and layers[0].out_features == 128 and layers[2].out_features == 1
    f = torch.randn(5, 16, requires_grad=True)
    out = disc(grad_reverse(f, 0.5))  # as the adversarial loss feeds it
    assert out.shape == (5,)
    out.sum().backward()
    f2 = f.detach().clone().requires_grad_(True)
    disc(f2).sum().backward()  # the discriminator alone: no reversal
    assert torch.allclose(f.grad, -0.5 * f2.grad, atol=1e-6)
