"""The Fréchet distance against closed forms (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from jiio_tasks.generative.frechet import GaussianStats, frechet_distance, gaussian_stats


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def _stats(mean: torch.Tensor, cov: torch.Tensor) -> GaussianStats:
    return GaussianStats(mean, cov, 100)


def test_identical_gaussians_are_at_distance_zero() -> None:
    s = _spd(12, 0)
    m = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(frechet_distance(_stats(m, s), _stats(m, s))) < 1e-9


def test_pure_mean_shift_is_the_squared_distance_of_the_means() -> None:
    s = _spd(6, 2)
    m1 = torch.zeros(6, dtype=torch.float64)
    m2 = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)
    assert frechet_distance(_stats(m1, s), _stats(m2, s)) == pytest.approx(1 + 4 + 0.25 + 9 + 1, abs=1e-9)


def test_diagonal_and_commuting_covariances() -> None:
    a = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 1.0, 9.0], dtype=torch.float64)
    m1 = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    m2 = torch.tensor([1.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    # diagonal: Σ (√a − √b)² + ‖Δμ‖² = (1−2)² + (2−1)² + (0.5−1)² + 0 + 1 + 4
    want = 1 + 1 + 0.25 + 0 + 5
    got = frechet_distance(_stats(m1, torch.diag(a)), _stats(m2, torch.diag(b)))
    assert got == pytest.approx(want, abs=1e-9)
    # the same spectra in a shared random eigenbasis (commuting covariances)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    got = frechet_distance(_stats(q @ m1, q @ torch.diag(a) @ q.T), _stats(q @ m2, q @ torch.diag(b) @ q.T))
    assert got == pytest.approx(want, abs=1e-9)


def test_non_commuting_2x2_against_the_trace_formula() -> None:
    # for 2×2 PSD M: tr √M = √(tr M + 2 √det M); here M = Σ1^½ Σ2 Σ1^½, so
    # tr M = tr(Σ1 Σ2) and det M = det Σ1 det Σ2
    s1 = torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    cross = math.sqrt(float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    m1 = torch.tensor([0.3, -1.0], dtype=torch.float64)
    m2 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    want = float((m1 - m2).pow(2).sum()) + float(torch.trace(s1) + torch.trace(s2)) - 2 * cross
    assert frechet_distance(_stats(m1, s1), _stats(m2, s2)) == pytest.approx(want, abs=1e-10)
    assert frechet_distance(_stats(m2, s2), _stats(m1, s1)) == pytest.approx(want, abs=1e-10)  # symmetric
    # one dimension: (μ1 − μ2)² + (σ1 − σ2)²
    one = frechet_distance(_stats(torch.tensor([1.0]), torch.tensor([[4.0]])), _stats(torch.tensor([-1.0]), torch.tensor([[9.0]])))
    assert one == pytest.approx(4 + 1, abs=1e-12)


def test_rank_deficient_sample_covariances_stay_real_and_non_negative() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 10, generator=g)  # 5 points in 10-d: rank-4 covariances
    b = torch.randn(5, 10, generator=g) + 0.5
    # zero eigenvalues: round-off below the relative cut-off must not leak in through √λ
    assert abs(frechet_distance(gaussian_stats(a), gaussian_stats(a))) < 1e-9
    d = frechet_distance(gaussian_stats(a), gaussian_stats(b))
    assert math.isfinite(d) and d > 0


def test_gaussian_stats_by_hand_and_errors() -> None:
    f = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    st = gaussian_stats(f)
    assert st.mean.dtype == torch.float64 and st.count == 3
    torch.testing.assert_close(st.mean, torch.tensor([3.0, 4.0], dtype=torch.float64))
    # deviations (−2, −2), (0, −2), (2, 4); unbiased Σ (f − μ)(f − μ)ᵀ / (N − 1) = [[8, 12], [12, 24]] / 2
    torch.testing.assert_close(st.covariance, torch.tensor([[4.0, 6.0], [6.0, 12.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(f[:1])
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        gaussian_stats(f.flatten())
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(st, gaussian_stats(torch.randn(4, 3)))
