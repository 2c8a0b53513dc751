"""Projections onto the feasible sets, checked against closed forms and an independent
Lagrangian-dual reference for ``L2Ball ∩ Box``.

Tensor contents come from a torch generator seeded by hypothesis; hypothesis chooses the
structure (shapes, per-sample vs scalar radius, centre, radius 0, bounds).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from jiio_core import Box, Constraint, Intersection, L2Ball, Unconstrained

DT = torch.float64
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.sampled_from([(3,), (1,), (2, 3), (1, 2, 2)])
batches = st.integers(1, 4)
seeds = st.integers(0, 2**31 - 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flat_norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def _per_sample(r: Tensor, x: Tensor) -> Tensor:
    return r.reshape(-1, *([1] * (x.ndim - 1)))


@st.composite
def balls(draw: st.DrawFn) -> tuple[L2Ball, Tensor, Tensor, Tensor]:
    """An ``L2Ball`` with its data: returns ``(ball, x, center (zeros if none), radius (B,))``."""
    b, shape, seed = draw(batches), draw(shapes), draw(seeds)
    gen = _gen(seed)
    x = 3 * torch.randn(b, *shape, dtype=DT, generator=gen)
    kind = draw(st.sampled_from(["float", "per-sample", "zero"]))
    if kind == "float":
        r_val = draw(st.floats(0.01, 5.0))
        radius: Tensor | float = r_val
        r = torch.full((b,), r_val, dtype=DT)
    elif kind == "per-sample":
        r = 0.01 + 4 * torch.rand(b, dtype=DT, generator=gen)
        r[0] = 0.0 if draw(st.booleans()) else r[0]  # one sample with radius 0
        radius = r
    else:
        radius, r = 0.0, torch.zeros(b, dtype=DT)
    if draw(st.booleans()):
        center = torch.randn(b, *shape, dtype=DT, generator=gen)
        return L2Ball(radius, center=center), x, center, r
    return L2Ball(radius), x, torch.zeros_like(x), r


def closed_form_ball(x: Tensor, c: Tensor, r: Tensor) -> Tensor:
    """``c + r (x − c) / max(r, ‖x − c‖)`` (and ``c`` when ``r = 0``)."""
    d = x - c
    den = torch.maximum(r, _flat_norm(d))
    scale = torch.where(r > 0, r / torch.where(den > 0, den, 1.0), 0.0)
    return c + _per_sample(scale, x) * d


def inside_ball(c: Tensor, r: Tensor, gen: torch.Generator) -> Tensor:
    """Random points of each sample's ball (strictly inside, unless ``r = 0``)."""
    d = torch.randn(c.shape, dtype=DT, generator=gen)
    u = torch.rand(c.shape[0], dtype=DT, generator=gen) * 0.999
    return c + _per_sample(u * r / _flat_norm(d), c) * d


# --------------------------------------------------------------------------- L2Ball


@SETTINGS
@given(balls())
def test_l2ball_matches_closed_form_and_is_feasible(case: tuple[L2Ball, Tensor, Tensor, Tensor]) -> None:
    ball, x, c, r = case
    ball.validate(x)
    p = ball.project(x)
    assert p.shape == x.shape and p.dtype == x.dtype
    torch.testing.assert_close(p, closed_form_ball(x, c, r), rtol=1e-12, atol=1e-12)
    assert bool((_flat_norm(p - c) <= r * (1 + 1e-12) + 1e-12).all())


@SETTINGS
@given(balls(), seeds)
def test_l2ball_projection_is_idempotent_and_optimal(
    case: tuple[L2Ball, Tensor, Tensor, Tensor], seed: int
) -> None:
    ball, x, c, r = case
    p = ball.project(x)
    torch.testing.assert_close(ball.project(p), p, rtol=1e-12, atol=1e-12)
    gen = _gen(seed)
    dist = _flat_norm(x - p)
    for _ in range(20):
        q = inside_ball(c, r, gen)  # feasible
        assert bool((dist <= _flat_norm(x - q) + 1e-12).all())


@SETTINGS
@given(balls(), seeds)
def test_l2ball_leaves_feasible_points_unchanged(
    case: tuple[L2Ball, Tensor, Tensor, Tensor], seed: int
) -> None:
    ball, _, c, r = case
    q = inside_ball(c, r, _gen(seed))
    torch.testing.assert_close(ball.project(q), q, rtol=1e-14, atol=1e-14)


def test_l2ball_radius_zero_maps_to_center_and_zero_norm_input() -> None:
    x = torch.zeros(2, 3, dtype=DT)
    assert torch.equal(L2Ball(0.0).project(x), x)
    assert torch.equal(L2Ball(1.0).project(x), x)  # ‖x‖ = 0: no division by zero
    c = torch.randn(2, 3, dtype=DT)
    torch.testing.assert_close(L2Ball(0.0, center=c).project(torch.randn(2, 3, dtype=DT)), c)
    assert torch.equal(L2Ball(0.0, center=c).project(c.clone()), c)


def test_l2ball_per_sample_radius_is_per_sample() -> None:
    x = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.3, 0.4]], dtype=DT)  # norms 5, 5, 0.5
    p = L2Ball(torch.tensor([1.0, 10.0, 0.1], dtype=DT)).project(x)
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.8], [3.0, 4.0], [0.06, 0.08]], dtype=DT))


def test_l2ball_float32_input_and_float64_radius() -> None:
    x = torch.randn(3, 4) * 5
    p = L2Ball(torch.tensor([1.0, 2.0, 3.0], dtype=DT)).project(x)
    assert p.dtype == torch.float32
    torch.testing.assert_close(_flat_norm(p), torch.tensor([1.0, 2.0, 3.0]).clamp(max=_flat_norm(x)))


# --------------------------------------------------------------------------- Box


@SETTINGS
@given(batches, shapes, seeds, st.sampled_from(["float", "per-sample", "full", "lo-only", "hi-only"]))
def test_box_is_elementwise_clamp(b: int, shape: tuple[int, ...], seed: int, kind: str) -> None:
    gen = _gen(seed)
    x = 2 * torch.randn(b, *shape, dtype=DT, generator=gen)
    a = torch.randn(b, *shape, dtype=DT, generator=gen)
    w = torch.rand(b, *shape, dtype=DT, generator=gen)
    lo_t: Tensor | None
    hi_t: Tensor | None
    if kind == "float":
        box, lo_t, hi_t = Box(-0.5, 0.7), torch.full_like(x, -0.5), torch.full_like(x, 0.7)
    elif kind == "per-sample":
        lo_s, hi_s = a.reshape(b, -1)[:, 0], a.reshape(b, -1)[:, 0] + w.reshape(b, -1)[:, 0]
        box = Box(lo_s, hi_s)
        lo_t, hi_t = _per_sample(lo_s, x).expand_as(x), _per_sample(hi_s, x).expand_as(x)
    elif kind == "full":
        box, lo_t, hi_t = Box(a, a + w), a, a + w
    elif kind == "lo-only":
        box, lo_t, hi_t = Box(lo=a), a, None
    else:
        box, lo_t, hi_t = Box(hi=0.25), None, torch.full_like(x, 0.25)
    box.validate(x)
    p = box.project(x)
    expected = x
    if lo_t is not None:
        expected = torch.where(expected < lo_t, lo_t, expected)
    if hi_t is not None:
        expected = torch.where(expected > hi_t, hi_t, expected)
    assert torch.equal(p, expected)
    assert torch.equal(box.project(p), p)


def test_box_per_sample_bounds_broadcast_over_all_dims() -> None:
    x = torch.full((2, 2, 3), 5.0, dtype=DT)
    p = Box(torch.tensor([0.0, -1.0], dtype=DT), torch.tensor([1.0, 2.0], dtype=DT)).project(x)
    assert torch.equal(p[0], torch.ones(2, 3, dtype=DT))
    assert torch.equal(p[1], torch.full((2, 3), 2.0, dtype=DT))


# --------------------------------------------------------------------------- Intersection


def ball_box_reference(y: Tensor, c: Tensor, r: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Exact projection onto ``{‖x − c‖ ≤ r} ∩ [lo, hi]`` (``c`` inside the box) by duality:
    ``x(t) = clamp((1 − t) y + t c, lo, hi)`` minimises ``‖x − y‖² + λ‖x − c‖²`` over the box
    (``t = λ / (1 + λ)``); ``‖x(t) − c‖`` decreases in ``t``, so bisect ``t`` for the active
    ball (complementary slackness)."""

    def x_of(t: Tensor) -> Tensor:
        t = _per_sample(t, y)
        return torch.minimum(torch.maximum((1 - t) * y + t * c, lo), hi)

    b = y.shape[0]
    t_lo, t_hi = torch.zeros(b, dtype=DT), torch.ones(b, dtype=DT)
    for _ in range(200):
        mid = (t_lo + t_hi) / 2
        outside = _flat_norm(x_of(mid) - c) > r
        t_lo, t_hi = torch.where(outside, mid, t_lo), torch.where(outside, t_hi, mid)
    feasible_at_zero = _flat_norm(x_of(torch.zeros(b, dtype=DT)) - c) <= r
    return torch.where(_per_sample(feasible_at_zero, y), x_of(torch.zeros(b, dtype=DT)), x_of(t_hi))


@st.composite
def ball_boxes(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y, c, r, lo, hi)`` with the centre inside the box, so the intersection is nonempty."""
    b, shape, seed = draw(batches), draw(shapes), draw(seeds)
    gen = _gen(seed)
    lo = -torch.rand(b, *shape, dtype=DT, generator=gen) if draw(st.booleans()) else torch.zeros(b, *shape)
    lo = lo.to(DT)
    hi = lo + 0.2 + torch.rand(b, *shape, dtype=DT, generator=gen)
    c = lo + (hi - lo) * (0.1 + 0.8 * torch.rand(b, *shape, dtype=DT, generator=gen))
    r = 0.05 + 1.5 * torch.rand(b, dtype=DT, generator=gen)
    y = c + 2 * torch.randn(b, *shape, dtype=DT, generator=gen)
    return y, c, r, lo, hi


@SETTINGS
@given(ball_boxes())
def test_intersection_default_is_feasible(case: tuple[Tensor, Tensor, Tensor, Tensor, Tensor]) -> None:
    y, c, r, lo, hi = case
    inter = L2Ball(r, center=c) & Box(lo, hi)
    assert isinstance(inter, Intersection)
    inter.validate(y)
    p = inter.project(y)
    assert bool(((p >= lo) & (p <= hi)).all())  # the last set holds exactly
    assert bool((_flat_norm(p - c) <= r * (1 + 1e-6)).all())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ball_boxes(), seeds)
def test_intersection_converges_to_true_projection(
    case: tuple[Tensor, Tensor, Tensor, Tensor, Tensor], seed: int
) -> None:
    y, c, r, lo, hi = case
    expected = ball_box_reference(y, c, r, lo, hi)
    # Dykstra's rate depends on the geometry: 2000 sweeps suffice for ~99 % of the cases drawn
    # here; the rest get a larger budget (convergence, not a fixed budget, is what is checked)
    for sweeps in (2000, 40000):
        p = Intersection((L2Ball(r, center=c), Box(lo, hi)), iterations=sweeps, tol=0.0).project(y)
        if bool(((p - expected).abs() <= 1e-6).all()):
            break
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-6)
    # variational inequality <y − p, q − p> ≤ 0 for feasible q (q: points of the ball clamped
    # into the box stay in the ball, because the box holds c and clamping contracts toward it)
    gen = _gen(seed)
    for _ in range(10):
        q = torch.minimum(torch.maximum(inside_ball(c, r, gen), lo), hi)
        assert bool((_flat_norm(q - c) <= r).all())
        inner = ((y - p) * (q - p)).reshape(y.shape[0], -1).sum(1)
        assert bool((inner <= 1e-5).all()), inner


def test_intersection_closed_form_cases() -> None:
    gen = _gen(0)
    y = 3 * torch.randn(4, 5, dtype=DT, generator=gen)
    # ball inside the box: the projection onto the ball
    small = L2Ball(0.5) & Box(-1.0, 1.0)
    torch.testing.assert_close(small.project(y), L2Ball(0.5).project(y), rtol=0, atol=1e-14)
    # box inside the ball: the clamp
    big = L2Ball(10.0) & Box(-1.0, 1.0)
    torch.testing.assert_close(big.project(y), y.clamp(-1, 1), rtol=0, atol=1e-14)
    # feasible points are unchanged
    q = 0.1 * torch.randn(4, 5, dtype=DT, generator=gen)
    torch.testing.assert_close((L2Ball(0.6) & Box(-0.3, 0.3)).project(q.clamp(-0.3, 0.3)), q.clamp(-0.3, 0.3))
    # 1-D: the intersection of intervals [-0.5, 0.5] ∩ [0.2, 3] = [0.2, 0.5]
    x = torch.tensor([[-2.0], [0.3], [2.0]], dtype=DT)
    p = (L2Ball(0.5) & Box(0.2, 3.0)).project(x)
    torch.testing.assert_close(p, torch.tensor([[0.2], [0.3], [0.5]], dtype=DT))


def test_intersection_projection_of_a_sample_does_not_depend_on_the_batch() -> None:
    """A large feasible sample in the batch must not loosen the stopping test of another."""
    n = 7
    gen = _gen(1)
    worst = 0.0
    for _ in range(20):
        y = 3 * torch.randn(2, n, dtype=DT, generator=gen)
        y[0] = 200.0  # feasible for its own (huge) set: converges in one sweep
        c = 0.1 + 0.8 * torch.rand(2, n, dtype=DT, generator=gen)
        c[0] = 0.0
        r = torch.tensor([1e3, 0.05 + 1.5 * float(torch.rand((), generator=gen))], dtype=DT)
        lo, hi = torch.tensor([-1e3, 0.0], dtype=DT), torch.tensor([1e3, 1.0], dtype=DT)
        both = Intersection((L2Ball(r, center=c), Box(lo, hi)), iterations=2000).project(y)
        alone = Intersection((L2Ball(r[1:], center=c[1:]), Box(lo[1:], hi[1:])), iterations=2000).project(
            y[1:]
        )
        worst = max(worst, float((both[1] - alone[0]).abs().max()))
    assert worst <= 1e-12


def test_intersection_default_sweeps_are_accurate() -> None:
    """Ball ∩ box is projected exactly (this case was 0.22 off with 50 Dykstra sweeps)."""
    y = torch.tensor([[-2.446, -5.451, 4.251, 0.829, -1.988, -3.82]], dtype=DT)
    c = torch.tensor([[0.254, 0.455, 0.442, 0.525, 0.509, 0.369]], dtype=DT)
    r = torch.tensor([1.06], dtype=DT)
    lo, hi = torch.zeros_like(y), torch.ones_like(y)
    p = (L2Ball(r, center=c) & Box(0.0, 1.0)).project(y)
    torch.testing.assert_close(p, ball_box_reference(y, c, r, lo, hi), rtol=0, atol=1e-4)


def test_intersection_chaining_flattens_and_checks_parts() -> None:
    a, b, c = L2Ball(1.0), Box(-1.0, 1.0), Box(lo=0.0)
    abc = (a & b) & c
    assert isinstance(abc, Intersection)
    assert abc.parts == (a, b, c)
    x = torch.tensor([[-3.0, 0.5]], dtype=DT)
    torch.testing.assert_close(abc.project(x), torch.tensor([[0.0, 0.5]], dtype=DT))
    with pytest.raises(ValueError, match="at least 2"):
        Intersection((a,))
    with pytest.raises(TypeError, match=r"parts\[1\] must be a Constraint"):
        Intersection((a, "box"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iterations must be an int >= 1"):
        Intersection((a, b), iterations=0)


# --------------------------------------------------------------------------- Unconstrained


def test_unconstrained_is_identity() -> None:
    x = torch.randn(3, 2, 2, dtype=DT)
    u = Unconstrained()
    assert u.project(x) is x
    assert u.is_unconstrained
    assert not L2Ball(1.0).is_unconstrained and not Box(lo=0.0).is_unconstrained
    assert isinstance(u, Constraint)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("radius", "exc", "match"),
    [
        (-1.0, ValueError, r"radius must be a finite number >= 0, got -1\.0"),
        (math.nan, ValueError, r"radius must be a finite number >= 0, got nan"),
        (math.inf, ValueError, r"radius must be a finite number >= 0"),
        (torch.tensor([1.0, -0.5]), ValueError, r"radius must be finite and >= 0 for every sample"),
        (torch.tensor([1.0, math.nan]), ValueError, r"radius must be finite and >= 0 for every sample"),
        (torch.ones(2, 2), ValueError, r"radius must be a float or a \(B,\) tensor, got shape \(2, 2\)"),
        ("1", TypeError, r"radius must be a float or a tensor, got str"),
    ],
)
def test_l2ball_rejects_bad_radius(radius: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        L2Ball(radius)  # type: ignore[arg-type]


def test_l2ball_validate_rejects_wrong_center_and_radius_shape() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"L2Ball\.center must have the shape of x \(3, 4\), got \(3, 5\)"):
        L2Ball(1.0, center=torch.zeros(3, 5)).validate(x)
    with pytest.raises(ValueError, match=r"L2Ball\.center must have the shape of x \(3, 4\), got \(4,\)"):
        L2Ball(1.0, center=torch.zeros(4)).validate(x)
    with pytest.raises(ValueError, match=r"L2Ball\.radius must have shape \(3,\), got \(2,\)"):
        L2Ball(torch.ones(2)).validate(x)
    with pytest.raises(ValueError, match="center must be finite"):
        L2Ball(1.0, center=torch.tensor([[math.nan, 0.0]]))


def test_box_validation() -> None:
    with pytest.raises(ValueError, match="Box needs at least one of lo, hi"):
        Box()
    with pytest.raises(ValueError, match="Box requires lo <= hi everywhere"):
        Box(1.0, 0.0)
    with pytest.raises(ValueError, match="Box requires lo <= hi everywhere"):
        Box(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]))
    Box(0.5, 0.5)  # a degenerate box is fine
    with pytest.raises(ValueError, match=r"Box\.hi of shape \(3, 4\) does not broadcast to x \(2, 5\)"):
        Box(hi=torch.ones(3, 4)).validate(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="lo must be a tensor, a float or None, got str"):
        Box(lo="0")  # type: ignore[arg-type]


def test_dykstra_path_on_two_boxes_matches_their_intersection_box() -> None:
    """Combinations other than ball ∩ box go through Dykstra; two boxes intersect in a box."""
    gen = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(5, 7, dtype=DT, generator=gen)
    lo1, lo2 = -torch.rand(2, 1, 7, dtype=DT, generator=gen)  # (1, 7): shared by all samples
    hi1, hi2 = torch.rand(2, 1, 7, dtype=DT, generator=gen)
    both = Intersection((Box(lo=lo1, hi=hi1), Box(lo=lo2, hi=hi2)))
    expected = Box(lo=torch.maximum(lo1, lo2), hi=torch.minimum(hi1, hi2)).project(x)
    torch.testing.assert_close(both.project(x), expected, rtol=0, atol=1e-12)
