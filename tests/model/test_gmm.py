"""The GMM energy: stable (Cholesky + log-sum-exp), correct against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from broker_filter.model.gmm import COVARIANCE_EPS, GMMParameters, energy, fit_gmm


def _random_case(seed: int, n: int = 60, d: int = 3, k: int = 2):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1))
    logits = rng.normal(size=(n, k))
    gamma = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return torch.tensor(z), torch.tensor(gamma)


def test_fit_matches_weighted_moments():
    z, gamma = _random_case(0)
    params = fit_gmm(z, gamma)
    zn, gn = z.numpy(), gamma.numpy()
    for k in range(gn.shape[1]):
        w = gn[:, k]
        mu = (w[:, None] * zn).sum(0) / w.sum()
        cov = ((zn - mu).T * w) @ (zn - mu) / w.sum() + COVARIANCE_EPS * np.eye(zn.shape[1])
        np.testing.assert_allclose(params.mu[k].numpy(), mu, rtol=1e-10)
        np.testing.assert_allclose((params.chol[k] @ params.chol[k].T).numpy(), cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params.phi.numpy(), gn.mean(axis=0))


def test_energy_equals_direct_density_sum():
    z, gamma = _random_case(1)
    params = fit_gmm(z, gamma)
    sigma = (params.chol @ params.chol.transpose(1, 2)).numpy()
    direct = -np.log(sum(
        params.phi[k].item() * multivariate_normal(params.mu[k].numpy(), sigma[k]).pdf(z.numpy())
        for k in range(params.num_components)
    ))
    np.testing.assert_allclose(energy(z, params).numpy(), direct, rtol=1e-9)


def test_energy_is_finite_where_densities_underflow():
    z, gamma = _random_case(2)
    params = fit_gmm(z, gamma)
    far = torch.full((2, 3), 1e4, dtype=torch.float64)
    assert np.exp(-0.5 * 1e8) == 0.0  # a direct computation would give log(0)
    values = energy(far, params)
    assert torch.isfinite(values).all() and (values > 1e6).all()
    values32 = energy(far.float(), params.to("cpu", torch.float32))
    assert torch.isfinite(values32).all()


def test_energy_gradients_reach_z_and_gamma():
    z, gamma = _random_case(3)
    z.requires_grad_(True)
    gamma.requires_grad_(True)
    energy(z, fit_gmm(z, gamma)).mean().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert torch.isfinite(gamma.grad).all() and gamma.grad.abs().sum() > 0


def test_parameters_round_trip_exactly():
    z, gamma = _random_case(4)
    params = fit_gmm(z, gamma)
    again = GMMParameters.from_dict(params.to_dict())
    for name in ("phi", "mu", "chol"):
        assert torch.equal(getattr(again, name), getattr(params, name))
    with pytest.raises(ValueError, match="inconsistent"):
        GMMParameters.from_dict({"phi": [1.0], "mu": [[0.0, 1.0]], "chol": [[[1.0]]]})
