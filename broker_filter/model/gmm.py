"""The Gaussian mixture whose energy says how unlike the known classes an input is.

As in DAGMM (Zong et al. 2018) and Tsang & Schultz (2019), the mixture has one component
per class; its parameters are the membership-weighted moments of the estimation-network
inputs ``z``::

    phi_k = mean_i gamma_ik
    mu_k = sum_i gamma_ik z_i / sum_i gamma_ik
    Sigma_k = sum_i gamma_ik (z_i - mu_k)(z_i - mu_k)^T / sum_i gamma_ik + eps I

and the energy of a sample is ``E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k)``.

Unlike the published code (which exponentiates densities and normalises with
``sqrt(2 pi det Sigma)``), the energy here is computed from Cholesky factors
(``log det Sigma = 2 sum log diag L``, Mahalanobis distances by triangular solves) and a
log-sum-exp over components, in a correct normalisation ``det(2 pi Sigma)``: finite for
any input, and differentiable for joint training. For serving, phi, mu and the Cholesky
factors are fitted once on the training set and frozen in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

#: Added to every covariance diagonal: keeps near-singular components (a class whose
#: embeddings collapse onto a line) invertible; DAGMM's penalty on small diagonals has
#: the same purpose.
COVARIANCE_EPS = 1e-3
_TINY = 1e-12


@dataclass
class GMMParameters:
    """phi (K,), mu (K, D) and the lower Cholesky factors chol (K, D, D) of the covariances."""

    phi: torch.Tensor
    mu: torch.Tensor
    chol: torch.Tensor

    @property
    def num_components(self) -> int:
        return int(self.phi.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mu.shape[1])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GMMParameters:
        return GMMParameters(*(t.to(device=device, dtype=dtype or t.dtype) for t in (self.phi, self.mu, self.chol)))

    def to_dict(self) -> dict[str, list]:
        """Plain lists of float64 values, for the bundle's JSON (exact round trip)."""
        return {name: getattr(self, name).detach().double().cpu().tolist() for name in ("phi", "mu", "chol")}

    @classmethod
    def from_dict(cls, data: Mapping) -> GMMParameters:
        params = cls(*(torch.tensor(data[name], dtype=torch.float64) for name in ("phi", "mu", "chol")))
        k, d = params.mu.shape
        if params.phi.shape != (k,) or params.chol.shape != (k, d, d):
            raise ValueError(f"inconsistent GMM shapes phi {tuple(params.phi.shape)}, mu {(k, d)}, chol {tuple(params.chol.shape)}")
        return params


def fit_gmm(z: torch.Tensor, gamma: torch.Tensor, eps: float = COVARIANCE_EPS) -> GMMParameters:
    """Membership-weighted mixture parameters of ``z`` (N, D) under ``gamma`` (N, K).

    Differentiable in both arguments (joint training fits a mixture per batch).
    """
    weight = gamma.sum(dim=0).clamp_min(_TINY)  # (K,)
    phi = weight / gamma.shape[0]
    mu = (gamma.T @ z) / weight[:, None]  # (K, D)
    centred = z[None, :, :] - mu[:, None, :]  # (K, N, D)
    sigma = torch.einsum("nk,knd,kne->kde", gamma, centred, centred) / weight[:, None, None]
    sigma = sigma + eps * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return GMMParameters(phi=phi, mu=mu, chol=torch.linalg.cholesky(sigma))


def log_component_densities(z: torch.Tensor, params: GMMParameters) -> torch.Tensor:
    """log N(z_i; mu_k, Sigma_k) for every sample and component: (N, K)."""
    d = z.shape[1]
    centred = (z[None, :, :] - params.mu[:, None, :]).transpose(1, 2)  # (K, D, N)
    solved = torch.linalg.solve_triangular(params.chol, centred, upper=False)  # L^-1 (z - mu)
    mahalanobis = (solved**2).sum(dim=1)  # (K, N)
    log_det = 2.0 * torch.log(torch.diagonal(params.chol, dim1=-2, dim2=-1)).sum(dim=-1)  # (K,)
    return (-0.5 * (mahalanobis + log_det[:, None] + d * math.log(2.0 * math.pi))).T


def energy(z: torch.Tensor, params: GMMParameters) -> torch.Tensor:
    """Sample energies E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k), shape (N,)."""
    log_phi = torch.log(params.phi.clamp_min(_TINY))
    return -torch.logsumexp(log_phi[None, :] + log_component_densities(z, params), dim=1)
