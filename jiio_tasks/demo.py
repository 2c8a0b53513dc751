"""Demo: latent inversion on a small random DEQ, JIIO versus Adam over the DEQ.

``python -m jiio_tasks.demo`` (``./dev demo``) builds a random contractive tanh DEQ
``z = tanh(Wz + Ux + b)`` with a linear read-out ``h(z) = Hz``, draws targets ``y = h(z*(x_true))`` and recovers a latent
``x`` for each target, once by JIIO and once by Adam where every Adam step runs a full DEQ
forward and implicit backward solve. It prints one table row per method. It uses jiio_core
alone: an example of the library, not part of it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from jiio_core.accelerators import AndersonI, AndersonII
from jiio_core.baselines import Adam, optimize_input
from jiio_core.damping import Damping
from jiio_core.deq import DEQSolver
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective, Relation
from jiio_core.problem import JointProblem


class TanhDEQ(Layer):
    """``f(z, x) = tanh(W z + U x + b)`` with ``‖W‖₂ = contraction`` (so ``f`` contracts in z)."""

    def __init__(self, state: int, latent: int, contraction: float = 0.8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(state, state, generator=g)
        self.weight = nn.Parameter(contraction * w / torch.linalg.matrix_norm(w, 2))
        self.inject = nn.Parameter(torch.randn(state, latent, generator=g) / latent**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(state, generator=g))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        out: Tensor = torch.tanh(z @ self.weight.T + x @ self.inject.T + self.bias)
        return out

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.weight.shape[0])


class Reconstruction(InnerObjective):
    """``ℓ = mean((H z − y)²)`` per sample: the decoder's reconstruction error."""

    relation = Relation.SAME

    def __init__(self, state: int, out: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed + 1)
        self.head = nn.Parameter(torch.randn(out, state, generator=g) / state**0.5)

    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        pred = z @ self.head.T
        out: Tensor = ((pred - y) ** 2).mean(dim=1)
        return out

    def loss_scale(self, y: Any) -> float:
        """A mean over the ``out`` values of each target."""
        return float(self.head.shape[0])


@attrs.frozen
class DemoSetup:
    layer: TanhDEQ
    objective: Reconstruction
    targets: Tensor
    latent: int


def make_setup(
    batch: int = 32, state: int = 256, latent: int = 16, out: int = 128, seed: int = 0
) -> DemoSetup:
    """A random decoder and targets that it can reproduce exactly (at some latent)."""
    layer = TanhDEQ(state, latent, seed=seed)
    objective = Reconstruction(state, out, seed=seed)
    g = torch.Generator().manual_seed(seed + 2)
    x_true = torch.randn(batch, latent, generator=g)
    with torch.no_grad():
        z = DEQSolver(max_iter=200, tol=1e-7).solve(layer, x_true).z
        assert isinstance(z, Tensor)
        targets = z @ objective.head.detach().T
    return DemoSetup(layer=layer, objective=objective, targets=targets.contiguous(), latent=latent)


def run(batch: int, iterations: int, adam_steps: int, seed: int) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    setup = make_setup(batch=batch, seed=seed)
    rows: list[dict[str, Any]] = []
    x0 = setup.targets.new_zeros(batch, setup.latent)
    for name, acc in (("JIIO Anderson-I", AndersonI(memory=20)), ("JIIO Anderson-II", AndersonII(memory=20))):
        problem = JointProblem(
            setup.layer,
            setup.objective,
            accelerator=acc,
            damping=Damping(z=0.8, mu=0.6, x=0.008),  # ≈ 1/128: 1.0 on the per-value mean
            max_iter=iterations,
            tol=1e-6,
            x_shape=(setup.latent,),
        )
        start = time.perf_counter()
        with torch.no_grad():
            sol = problem.solve(setup.targets, x0)
        elapsed = time.perf_counter() - start
        # the loss of the returned input at its own equilibrium (what Adam's row reports too)
        final = problem.equilibrium(setup.targets, sol.x, tol=1e-6).loss
        rows.append(
            {
                "method": name,
                "steps": int(sol.iterations.max()),
                "f evals": int(sol.iterations.max()),
                "time (s)": elapsed,
                "final loss": float(final.mean()),
            }
        )
    deq = DEQSolver(max_iter=50, tol=1e-5, backward_max_iter=50, backward_tol=1e-5)
    start = time.perf_counter()
    res = optimize_input(setup.layer, setup.objective, setup.targets, x0, Adam(lr=0.1), adam_steps, deq=deq)
    elapsed = time.perf_counter() - start
    rows.append(
        {
            "method": "Adam over DEQ (lr 0.1)",
            "steps": adam_steps,
            "f evals": int(res.forward_iterations.max()),
            "time (s)": elapsed,
            "final loss": float(problem.equilibrium(setup.targets, res.x, tol=1e-6).loss.mean()),
        }
    )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = f"{'method':<26}{'steps':>7}{'f evals':>9}{'time (s)':>10}{'final loss':>13}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['method']:<26}{r['steps']:>7}{r['f evals']:>9}{r['time (s)']:>10.3f}{r['final loss']:>13.3e}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jiio_tasks.demo",
        description="Latent inversion on a random tanh DEQ: JIIO (Anderson I and II) versus Adam "
        "over the DEQ (each Adam step = full forward + implicit backward solve).",
    )
    parser.add_argument("--batch", type=int, default=32, help="number of targets (default 32)")
    parser.add_argument("--iterations", type=int, default=100, help="JIIO iterations (default 100)")
    parser.add_argument("--adam-steps", type=int, default=40, help="Adam steps (default 40, as Table 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for this small model)"
    )
    args = parser.parse_args(argv)
    for name in ("batch", "iterations", "adam_steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    print(format_table(run(args.batch, args.iterations, args.adam_steps, args.seed)))


if __name__ == "__main__":
    main()
