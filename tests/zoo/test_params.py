"""Parameter counts: ``python -m jiio_zoo.params`` against an independent hand count."""

from __future__ import annotations

import itertools
import math

import pytest

from jiio_zoo.configs import CONFIGS, MDEQConfig
from jiio_zoo.params import count_parameters, main

# ---- hand count, written from the architecture description (no model is built) -------------


def conv(cin: int, cout: int, k: int, bias: bool = False, wn: bool = False) -> int:
    """Weights, optional bias, and weight norm's per-output-channel gain g."""
    return cin * cout * k * k + (cout if bias else 0) + (cout if wn else 0)


def gn(c: int) -> int:
    return 2 * c  # affine weight and bias


def cell_count(m: MDEQConfig) -> int:
    ch, e, wn = m.channels, m.expansion, m.weight_norm
    total = 0
    for c in ch:  # residual block: conv3×3 C→eC, GN, conv3×3 eC→C, GN, GN
        total += conv(c, e * c, 3, wn=wn) + gn(e * c) + conv(e * c, c, 3, wn=wn) + gn(c) + gn(c)
    for i, ci in enumerate(ch):  # fusion into branch i
        for j, cj in enumerate(ch):
            if j > i:
                total += conv(cj, ci, 1) + gn(ci)
            elif j < i:
                steps = i - j
                total += (steps - 1) * (conv(cj, cj, 3) + gn(cj)) + conv(cj, ci, 3) + gn(ci)
        total += conv(ci, ci, 1, wn=wn) + gn(ci)  # post-fusion
    return total


def injection_count(m: MDEQConfig) -> int:
    sizes = m.branch_sizes()
    if m.injection == "latent":
        return sum(m.latent_dim * c * s * s + c * s * s for c, s in zip(m.channels, sizes, strict=True))
    c0 = m.channels[0]
    stem = conv(m.image_channels, c0, 3) + gn(c0) + conv(c0, c0, 3) + gn(c0)
    spread = sum(conv(c0, c, 1) + gn(c) for c in m.channels[1:]) if m.inject_all_branches else 0
    film = 0
    if m.injection == "film":
        out = sum(2 * m.expansion * c for c in m.channels)
        film = m.latent_dim * out + out
    return stem + spread + film


def head_count(m: MDEQConfig) -> int:
    if m.head == "image":
        t = sum(m.channels)
        return conv(t, t, 1, bias=True) + gn(t) + conv(t, m.image_channels, 1, bias=True)
    if m.head_channels:
        total = 0
        for c, h in zip(m.channels, m.head_channels, strict=True):  # bottleneck + shortcut
            total += conv(c, h, 1) + gn(h) + conv(h, h, 3) + gn(h) + conv(h, 4 * h, 1) + gn(4 * h)
            total += conv(c, 4 * h, 1) + gn(4 * h)
        w = [4 * h for h in m.head_channels]
        total += sum(conv(a, b, 3, bias=True) + gn(b) for a, b in itertools.pairwise(w))
        total += conv(w[-1], m.final_channels, 1, bias=True) + gn(m.final_channels)
        return total + m.final_channels * m.num_classes + m.num_classes
    grids = [math.ceil(m.pool_size / 2**i) for i in range(m.num_branches)]
    feats = sum(c * g * g for c, g in zip(m.channels, grids, strict=True))
    if m.task_head_dim:  # embedding, its bias and the logit scale; the classifier is in x
        return sum(gn(c) for c in m.channels) + feats * m.task_head_dim + m.task_head_dim + 1
    return sum(gn(c) for c in m.channels) + feats * m.num_classes + m.num_classes


MDEQ_NAMES = [n for n, c in CONFIGS.items() if isinstance(c.model, MDEQConfig)]


@pytest.mark.parametrize("name", MDEQ_NAMES)
def test_counts_match_hand_count(name: str) -> None:
    m = CONFIGS[name].model
    assert isinstance(m, MDEQConfig)
    c = count_parameters(CONFIGS[name])
    assert c.f == cell_count(m)
    assert c.injection == injection_count(m)
    assert c.head == head_count(m)
    assert c.total == c.f + c.injection + c.head


def test_prior_art_sizes() -> None:
    """PRIOR-ART: 2-branch [24, 24] ≈ 159 K (f ≈ 112 K); 4-branch [32, 64, 128, 256] f ≈ 8.7 M
    here (the quoted 11.1 M total depends on the injection and head, see docs/zoo.md)."""
    cifar = count_parameters(CONFIGS["cifar10_adv"])
    assert cifar.f == 111_792
    assert abs(cifar.total - 159_000) / 159_000 < 0.01
    assert count_parameters(CONFIGS["celeba_gen"]).f == 8_716_192


def test_opteq_count() -> None:
    m = CONFIGS["opteq_small"].model
    c = count_parameters(CONFIGS["opteq_small"])
    n, d, o = m.state_dim, m.input_dim, m.output_dim  # type: ignore[union-attr]
    assert (c.f, c.head) == (n * n + n * d + n, n * o + o)


def test_main_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cifar10_adv", "opteq_small"]) == 0
    out = capsys.readouterr().out
    assert "cifar10_adv" in out and "159,898" in out and "111,792" in out
    assert main(["nope"]) == 2
    assert "unknown config(s) nope" in capsys.readouterr().err
