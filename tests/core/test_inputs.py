"""Bad inputs fail early with errors that name the argument, the value and what was expected."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jiio_core import (
    AdjointShortcut,
    AndersonI,
    AndersonII,
    Broyden,
    CostResidualTradeoff,
    Damping,
    FixedInput,
    ImplicitKKT,
    InnerObjective,
    JacobianPenalty,
    JointProblem,
    L2Ball,
    Layer,
    Picard,
    Relation,
    StepOutput,
    Unrolled,
    fixed_point,
    hutchinson_jacobian_norm,
)

DT = torch.float64
NZ, NX, B = 3, 2, 4


class TanhLayer(Layer):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(0.3 * torch.randn(NZ, NZ, dtype=DT, generator=gen))
        self.u = nn.Parameter(torch.randn(NZ, NX, dtype=DT, generator=gen))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        return torch.tanh(z @ self.w.T + x @ self.u.T)

    def init_state(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], NZ, dtype=x.dtype, device=x.device)


class Match(InnerObjective):
    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        target = y[0] if isinstance(y, tuple) else y
        return ((z - target) ** 2).sum(1)


class MatchOther(Match):
    relation = Relation.OTHER


class WrongShape(InnerObjective):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        per_sample = ((z - y) ** 2).sum(1)
        return per_sample.sum() if self.kind == "scalar" else per_sample.unsqueeze(1)


def problem(**kw: Any) -> JointProblem:
    kw.setdefault("max_iter", 5)
    return JointProblem(TanhLayer(), kw.pop("objective", Match()), x_shape=(NX,), **kw)


def x0() -> Tensor:
    return torch.zeros(B, NX, dtype=DT)


def y0() -> Tensor:
    return torch.zeros(B, NZ, dtype=DT)


# --------------------------------------------------------------------------- solve() inputs


def test_valid_inputs_solve() -> None:
    sol = problem().solve(y0(), x0())
    assert sol.x.shape == (B, NX) and sol.loss.shape == (B,)
    sol = problem().solve((y0(), torch.arange(B)))  # tuple y with integer labels, no x0
    assert sol.x.shape == (B, NX) and sol.x.dtype == DT


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_x0(bad: float) -> None:
    x = x0()
    x[2, 1] = bad
    with pytest.raises(
        ValueError, match=r"x0 must be finite, but it holds 1 NaN/Inf value\(s\) \(shape \(4, 2\)\)"
    ):
        problem().solve(y0(), x)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_y(bad: float) -> None:
    y = y0()
    y[0, 0] = y[3, 2] = bad
    with pytest.raises(ValueError, match=r"y must be finite, but it holds 2 NaN/Inf value\(s\)"):
        problem().solve(y, x0())
    with pytest.raises(ValueError, match=r"y\[0\] must be finite"):
        problem().solve((y, torch.arange(B)), x0())


def test_x0_shape_and_type() -> None:
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 2\) to match x_shape, got \(4, 5\)"):
        problem().solve(y0(), torch.zeros(B, 5, dtype=DT))
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 2\) to match x_shape, got \(4, 2, 1\)"):
        problem().solve(y0(), torch.zeros(B, 2, 1, dtype=DT))
    with pytest.raises(ValueError, match=r"x0 must have at least 1 dimension\(s\).*got shape \(\)"):
        problem().solve(y0(), torch.tensor(0.0, dtype=DT))
    with pytest.raises(TypeError, match=r"x0 must be a torch\.Tensor, got list"):
        problem().solve(y0(), [[0.0, 0.0]] * B)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor, got dtype torch\.int64"):
        problem().solve(y0(), torch.zeros(B, NX, dtype=torch.int64))


def test_batch_mismatch_between_y_and_x0() -> None:
    with pytest.raises(
        ValueError, match=r"y must have batch size 4 in dimension 0 \(like x\), got shape \(3, 3\)"
    ):
        problem().solve(torch.zeros(3, NZ, dtype=DT), x0())
    with pytest.raises(ValueError, match=r"y\[1\] must have batch size 4 .* got shape \(5,\)"):
        problem().solve((y0(), torch.arange(5)), x0())
    with pytest.raises(ValueError, match=r"y must have batch size 4 .* got shape \(\)"):
        problem().solve(torch.tensor(1.0, dtype=DT), x0())


def test_dtype_mismatch() -> None:
    with pytest.raises(
        TypeError, match=r"x0 must have dtype torch\.float64 \(the parameters'\), got torch\.float32"
    ):
        problem().solve(y0(), torch.zeros(B, NX))
    with pytest.raises(
        TypeError, match=r"y must have dtype torch\.float64 \(like the batch\), got torch\.float32"
    ):
        problem().solve(torch.zeros(B, NZ), x0())


def test_device_mismatch() -> None:
    with pytest.raises(ValueError, match=r"x0 must be on device cpu \(the parameters'\), got meta"):
        problem().solve(y0(), torch.zeros(B, NX, dtype=DT, device="meta"))
    with pytest.raises(ValueError, match="y must be on device cpu, got meta"):
        problem().solve(torch.zeros(B, NZ, dtype=DT, device="meta"), x0())


def test_missing_x0_without_x_shape() -> None:
    p = JointProblem(TanhLayer(), Match(), max_iter=3)
    with pytest.raises(ValueError, match="solve needs x0 when the problem was built without x_shape"):
        p.solve(y0())
    with pytest.raises(ValueError, match="cannot infer the batch size from y"):
        problem().solve(None)


@pytest.mark.parametrize("kind", ["scalar", "column"])
def test_objective_returning_wrong_shape(kind: str) -> None:
    shape = r"\(\)" if kind == "scalar" else r"\(4, 1\)"
    with pytest.raises(
        ValueError, match=rf"WrongShape must return a per-sample loss of shape \(4,\), got {shape}"
    ):
        problem(objective=WrongShape(kind)).solve(y0(), x0())


def test_constraint_override_is_checked() -> None:
    with pytest.raises(TypeError, match="constraint must be a Constraint, got float"):
        problem().solve(y0(), x0(), constraint=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"L2Ball\.center must have the shape of x \(4, 2\), got \(4, 3\)"):
        problem().solve(y0(), x0(), constraint=L2Ball(1.0, center=torch.zeros(B, 3, dtype=DT)))
    with pytest.raises(ValueError, match=r"L2Ball\.radius must have shape \(4,\), got \(3,\)"):
        problem(constraint=L2Ball(torch.ones(3, dtype=DT))).solve(y0(), x0())


# --------------------------------------------------------------------------- JointProblem(...)


def test_component_types() -> None:
    with pytest.raises(TypeError, match=r"layer must be a jiio_core\.Layer, got Linear"):
        JointProblem(nn.Linear(2, 2), Match())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"objective must be a jiio_core\.InnerObjective, got function"):
        JointProblem(TanhLayer(), lambda z, x, y: z.sum(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="constraint must be a Constraint, got str"):
        problem(constraint="ball")
    with pytest.raises(TypeError, match="accelerator must be a Accelerator, got ABCMeta"):
        problem(accelerator=AndersonII)  # the class, not an instance
    with pytest.raises(TypeError, match="damping must be a Damping, got tuple"):
        problem(damping=(0.8, 0.6, 0.01))
    with pytest.raises(TypeError, match="outer must be a OuterGradient, got str"):
        problem(outer="implicit")
    with pytest.raises(TypeError, match="selection must be a Selection, got str"):
        problem(selection="lowest")
    with pytest.raises(TypeError, match="jacobian_penalty must be a JacobianPenalty or None, got float"):
        problem(jacobian_penalty=0.1)


def test_adjoint_shortcut_needs_a_plus_minus_inner_loss() -> None:
    match = r"outer=AdjointShortcut is exact only when the outer loss is ±ℓ, but MatchOther\.relation is Relation\.OTHER"
    with pytest.raises(ValueError, match=match):
        problem(objective=MatchOther(), outer=AdjointShortcut())
    with pytest.raises(ValueError, match=match):
        problem(objective=MatchOther())  # AdjointShortcut is the default
    for outer in (ImplicitKKT(), FixedInput(), Unrolled()):
        problem(objective=MatchOther(), outer=outer)  # these are fine


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_iter": 0}, "max_iter must be an int >= 1, got 0"),
        ({"max_iter": 2.5}, "max_iter must be an int >= 1, got 2.5"),
        ({"max_iter": True}, "max_iter must be an int >= 1, got True"),
        ({"tol": -1e-3}, "tol must be a finite number >= 0, got -0.001"),
        ({"tol": math.nan}, "tol must be a finite number >= 0, got nan"),
        ({"tol": math.inf}, "tol must be a finite number >= 0, got inf"),
        ({"check_every": 0}, "check_every must be an int >= 1, got 0"),
        ({"divergence_factor": 1.0}, "divergence_factor must be a number > 1, got 1.0"),
        ({"x_shape": (2, 0)}, r"x_shape must be a tuple of positive ints, got \(2, 0\)"),
        ({"x_shape": [2]}, r"x_shape must be a tuple of positive ints, got \[2\]"),
    ],
)
def test_bad_problem_settings(kw: dict[str, Any], match: str) -> None:
    kw.setdefault("x_shape", (NX,))
    with pytest.raises(ValueError, match=match):
        JointProblem(TanhLayer(), Match(), **kw)


# --------------------------------------------------------------------------- strategy configs


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Damping(z=0.0), r"Damping\.z must be in \(0, 1\], got 0\.0"),
        (lambda: Damping(z=1.5), r"Damping\.z must be in \(0, 1\], got 1\.5"),
        (lambda: Damping(mu=-0.1), r"Damping\.mu must be in \(0, 1\], got -0\.1"),
        (lambda: Damping(mu=math.nan), r"Damping\.mu must be in \(0, 1\], got nan"),
        (lambda: Damping(x=0.0), r"Damping\.x must be a finite number > 0, got 0\.0"),
        (
            lambda: Damping(x_late=-1.0, switch_at=3),
            r"Damping\.x_late must be a finite number > 0 or None, got -1\.0",
        ),
        (lambda: Damping(x_late=0.001), r"Damping\.x_late and Damping\.switch_at must be given together"),
        (lambda: Damping(switch_at=10), r"Damping\.x_late and Damping\.switch_at must be given together"),
        (
            lambda: Damping(x_late=0.1, switch_at=-1),
            r"Damping\.switch_at must be an int >= 0 or None, got -1",
        ),
    ],
)
def test_damping_validators(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_damping_schedule() -> None:
    d = Damping(x=0.1, x_late=0.01, switch_at=3)
    assert [d.alpha_x(k) for k in range(5)] == [0.1, 0.1, 0.1, 0.01, 0.01]
    assert Damping().alpha_x(1000) == Damping().x
    assert Damping.paper_code_switch(100) == 62 and Damping.paper_code_switch(40) == 50


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: AndersonI(memory=0), "memory must be an int >= 1, got 0"),
        (lambda: AndersonII(memory=2.0), "memory must be an int >= 1, got 2.0"),
        (lambda: AndersonII(memory=True), "memory must be an int >= 1, got True"),
        (lambda: Broyden(memory=0), "memory must be an int >= 1, got 0"),
        (lambda: AndersonII(beta=0.0), r"beta must be in \(0, 1\], got 0\.0"),
        (lambda: AndersonI(beta=1.2), r"beta must be in \(0, 1\], got 1\.2"),
        (lambda: Picard(beta=0), r"beta must be in \(0, 1\], got 0"),
        (lambda: Picard(beta=math.nan), r"beta must be in \(0, 1\], got nan"),
        (lambda: AndersonII(ridge=-1e-8), "ridge must be a finite number >= 0, got -1e-08"),
        (lambda: CostResidualTradeoff(warmup=-1), "warmup must be an int >= 0, got -1"),
        (lambda: CostResidualTradeoff(slack=0.9), "slack must be a finite number >= 1, got 0.9"),
        (lambda: JacobianPenalty(probes=0), r"JacobianPenalty\.probes must be an int >= 1, got 0"),
        (lambda: JacobianPenalty(probes=True), r"JacobianPenalty\.probes must be an int >= 1, got True"),
        (lambda: JacobianPenalty(start=-1), r"JacobianPenalty\.start must be an int >= 0, got -1"),
        (lambda: JacobianPenalty(start=1.5), r"JacobianPenalty\.start must be an int >= 0, got 1\.5"),
        (lambda: ImplicitKKT(max_iter=0), "max_iter must be an int >= 1, got 0"),
        (lambda: FixedInput(tol=-1.0), "tol must be a finite number >= 0, got -1.0"),
        (lambda: AdjointShortcut(refine_steps=-1), "refine_steps must be an int >= 0, got -1"),
    ],
)
def test_strategy_validators(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_strategy_accelerator_type() -> None:
    with pytest.raises(TypeError, match="accelerator must be an Accelerator, got str"):
        ImplicitKKT(accelerator="anderson")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="refine_accelerator must be an Accelerator, got ABCMeta"):
        AdjointShortcut(refine_accelerator=Broyden)  # type: ignore[arg-type]


def test_fixed_point_validators() -> None:
    def step(v: Tensor, k: int) -> StepOutput:
        return StepOutput(value=v, residual=torch.zeros(v.shape[0]))

    v0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1, got 0"):
        fixed_point(step, v0, Picard(), max_iter=0, tol=1e-3)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0, got -1"):
        fixed_point(step, v0, Picard(), max_iter=3, tol=-1)
    with pytest.raises(ValueError, match="check_every must be an int >= 1, got 0"):
        fixed_point(step, v0, Picard(), max_iter=3, tol=1e-3, check_every=0)
    with pytest.raises(ValueError, match=r"v0 must be packed to \(B, N\), got shape \(2, 3, 1\)"):
        fixed_point(step, v0.unsqueeze(-1), Picard(), max_iter=3, tol=1e-3)


def test_hutchinson_probes() -> None:
    x = torch.zeros(2, NX, dtype=DT)
    with pytest.raises(ValueError, match="probes must be >= 1, got 0"):
        hutchinson_jacobian_norm(TanhLayer(), torch.zeros(2, NZ, dtype=DT), x, probes=0)
