"""The total-variation prior of MeasurementObjective, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from jiio_tasks.imaging.objectives import MeasurementObjective, smoothed_tv
from jiio_tasks.imaging.operators import BoxMask


def test_smoothed_tv_by_explicit_loops() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    eps = 0.05
    want = []
    for b in range(2):
        total = 0.0
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    dh = float(img[b, c, i, j + 1] - img[b, c, i, j]) if j + 1 < 5 else 0.0
                    dv = float(img[b, c, i + 1, j] - img[b, c, i, j]) if i + 1 < 4 else 0.0
                    total += math.sqrt(dh * dh + dv * dv + eps * eps) - eps
        want.append(total / (3 * 4 * 5))
    torch.testing.assert_close(smoothed_tv(img, eps), torch.tensor(want, dtype=torch.float64))
    assert float(smoothed_tv(torch.ones(1, 1, 3, 3), eps)[0]) == 0.0  # constant image: no variation


def test_objective_adds_the_weighted_prior_of_the_reconstruction() -> None:
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Identity()  # h(z) = z: the state is the image
    z = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).double()
    y = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    op = BoxMask(mask)
    plain = MeasurementObjective(head, op)(z, z, y)  # type: ignore[arg-type]
    with_tv = MeasurementObjective(head, op, tv_weight=0.3, tv_eps=1e-2)(z, z, y)  # type: ignore[arg-type]
    torch.testing.assert_close(plain, ((mask * z - y) ** 2).flatten(1).mean(1))
    torch.testing.assert_close(with_tv, plain + 0.3 * smoothed_tv(z, 1e-2))
    with pytest.raises(ValueError, match="tv_weight must be a number >= 0, got -1"):
        MeasurementObjective(head, tv_weight=-1)  # type: ignore[arg-type]
