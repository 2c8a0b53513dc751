"""jiio_core: joint inference and input optimisation (JIIO) for deep equilibrium models.

The public API: abstract pieces ([`Layer`][jiio_core.layer.Layer], [`InnerObjective`][jiio_core.objective.InnerObjective], [`Constraint`][jiio_core.constraint.Constraint],
[`Accelerator`][jiio_core.accelerators.Accelerator], [`OuterGradient`][jiio_core.outer.OuterGradient]) composed into a [`JointProblem`][jiio_core.problem.JointProblem] whose
[`JointProblem.solve`][jiio_core.problem.JointProblem.solve] returns a [`JointSolution`][jiio_core.problem.JointSolution]. [`DEQSolver`][jiio_core.deq.DEQSolver] is the plain
DEQ solve (forward fixed point, implicit backward). Per-batch conditioning (a clean image, a
task's images, a measurement operator) is passed to every solve as ``context=``
([`jiio_core.context`][jiio_core.context]), never set on a module.
"""

from jiio_core.accelerators import Accelerator, AndersonI, AndersonII, Broyden, Picard
from jiio_core.augmented import AugmentedMap
from jiio_core.baselines import (
    PGD,
    SGD,
    Adam,
    InputOptimizationResult,
    InputOptimizer,
    optimize_input,
)
from jiio_core.constraint import Box, Constraint, Intersection, L2Ball, Unconstrained
from jiio_core.context import accepts_context
from jiio_core.damping import Damping
from jiio_core.deq import DEQBackwardStats, DEQSolution, DEQSolver
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective, Relation
from jiio_core.outer import (
    AdjointShortcut,
    BackwardSolveError,
    BackwardStats,
    FixedInput,
    ImplicitKKT,
    OuterGradient,
    Unrolled,
    with_implicit_backward,
)
from jiio_core.problem import Equilibrium, JointProblem, JointSolution, SolveError
from jiio_core.prox import L1, GroupL1, Indicator, NonNegative, NonSmooth, TotalVariation2D
from jiio_core.regularizer import JacobianPenalty, hutchinson_jacobian_norm
from jiio_core.solver import (
    CostResidualTradeoff,
    FixedPointResult,
    LowestCost,
    LowestResidual,
    Selection,
    Status,
    StepOutput,
    Trace,
    fixed_point,
)
from jiio_core.state import State, StateSpec, pack

__version__ = "0.1.0"

__all__ = [
    "L1",
    "PGD",
    "SGD",
    "Accelerator",
    "Adam",
    "AdjointShortcut",
    "AndersonI",
    "AndersonII",
    "AugmentedMap",
    "BackwardSolveError",
    "BackwardStats",
    "Box",
    "Broyden",
    "Constraint",
    "CostResidualTradeoff",
    "DEQBackwardStats",
    "DEQSolution",
    "DEQSolver",
    "Damping",
    "Equilibrium",
    "FixedInput",
    "FixedPointResult",
    "GroupL1",
    "ImplicitKKT",
    "Indicator",
    "InnerObjective",
    "InputOptimizationResult",
    "InputOptimizer",
    "Intersection",
    "JacobianPenalty",
    "JointProblem",
    "JointSolution",
    "L2Ball",
    "Layer",
    "LowestCost",
    "LowestResidual",
    "NonNegative",
    "NonSmooth",
    "OuterGradient",
    "Picard",
    "Relation",
    "Selection",
    "SolveError",
    "State",
    "StateSpec",
    "Status",
    "StepOutput",
    "TotalVariation2D",
    "Trace",
    "Unconstrained",
    "Unrolled",
    "__version__",
    "accepts_context",
    "fixed_point",
    "hutchinson_jacobian_norm",
    "optimize_input",
    "pack",
    "with_implicit_backward",
]
