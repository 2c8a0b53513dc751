"""The Fréchet distance between two Gaussians fitted to feature sets (FID when the features
are Inception-v3 pool3 activations, Heusel et al. 2017).

``d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})``

computed in float64 with symmetric eigendecompositions only: ``Σ₁^{1/2} = V diag(√λ) Vᵀ`` from
``eigh(Σ₁)``, then the trace of the square root of the symmetric PSD matrix
``M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` is ``Σ √λᵢ(M)``. Eigenvalues that round-off pushes below zero
are clipped to zero, so the result is real and (up to round-off) non-negative even for the
rank-deficient covariances of small sample sets; eigenvalues of ``M`` below
``d · ε₆₄ · λ_max`` count as zero (they are round-off, and ``√`` would magnify them).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

__all__ = ["GaussianStats", "frechet_distance", "gaussian_stats"]


@attrs.frozen(eq=False)
class GaussianStats:
    """Mean ``(d,)`` and covariance ``(d, d)`` (float64) of ``count`` feature vectors."""

    mean: Tensor
    covariance: Tensor
    count: int


def gaussian_stats(features: Tensor) -> GaussianStats:
    """Sample mean and unbiased sample covariance (divisor ``N − 1``, as in the FID
    reference code) of ``features (N, d)``, in float64. Needs ``N >= 2``."""
    if features.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"features need at least 2 rows for a covariance, got {features.shape[0]}")
    f = features.detach().to(torch.float64)
    if not torch.isfinite(f).all():
        raise ValueError("features hold NaN or Inf")
    return GaussianStats(f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1]), int(f.shape[0]))


def _psd_sqrt(a: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped)."""
    evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
    root: Tensor = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    return root


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` (float64)."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(
            f"feature dimensions differ: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}"
        )
    mu1, mu2 = a.mean.to(torch.float64), b.mean.to(torch.float64)
    s1, s2 = a.covariance.to(torch.float64), b.covariance.to(torch.float64)
    root1 = _psd_sqrt(s1)
    m = root1 @ s2 @ root1
    evals = torch.linalg.eigvalsh(0.5 * (m + m.T))
    cutoff = evals.abs().max() * m.shape[0] * torch.finfo(torch.float64).eps
    trace_cross = torch.where(evals > cutoff, evals, torch.zeros_like(evals)).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_cross
    return float(d2)
