"""Per-batch context: fixed conditioning handed to the layer and the objective as an argument.

Some problems need per-batch data that is neither the optimised input ``x`` nor the target
``y``: the clean image an adversarial perturbation is added to, the support images of a
few-shot task, the measurement operator of an inverse problem. Every solve takes it as
``context=`` ([`JointProblem.solve`][jiio_core.problem.JointProblem.solve],
[`JointProblem.equilibrium`][jiio_core.problem.JointProblem.equilibrium], [`DEQSolver.solve`][jiio_core.deq.DEQSolver.solve],
[`optimize_input`][jiio_core.baselines.optimize_input], [`hutchinson_jacobian_norm`][jiio_core.regularizer.hutchinson_jacobian_norm])
and hands it, unchanged and for that call only, to every evaluation of the layer and of the
objective, including those that the outer gradients make in the backward pass. Nothing is stored
on a module between calls, so one model serves any number of batches (and threads) at once.

A piece receives the context when its method declares a parameter named ``context`` (or
``**kwargs``):

```
class MyLayer(Layer):
    def forward(self, z, x, context=None): ...   # receives it
    def init_state(self, x): ...                 # does not
```

A piece that declares none needs no change and never sees it; one that declares it without a
default (``forward(self, z, x, context)``) cannot run without one, and a call without a context
raises a `TypeError` that says so. The core never inspects the context: it may be a
tensor, a tuple of tensors or any object; the pieces that read it validate it. A solve given a context that neither its layer nor its objective declares raises
`TypeError`, since the context would be silently lost.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["accepts_context", "missing_context", "require_taker", "requires_context"]


@functools.cache
def _signature(fn: Callable[..., Any]) -> tuple[bool, bool]:
    """``(accepts, requires)`` a ``context`` keyword."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False, False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = [p for p in params if p.name == "context" and p.kind in kinds]
    accepts = bool(named) or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return accepts, any(p.default is inspect.Parameter.empty for p in named)


def _lookup(fn: Callable[..., Any]) -> tuple[bool, bool]:
    target = getattr(fn, "__func__", fn)  # a bound method: its function (cached per class)
    if inspect.isfunction(target):
        return _signature(target)
    return _signature.__wrapped__(fn)  # callable objects: not cached (they may be many)


def accepts_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function, a bound method or a callable object) can be called with a
    ``context=`` keyword: it declares a parameter named ``context`` or takes ``**kwargs``."""
    return _lookup(fn)[0]


def requires_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` declares a ``context`` parameter without a default (it cannot run
    without one)."""
    return _lookup(fn)[1]


def missing_context(owner: str) -> TypeError:
    """The error of a piece that needs a context called without one."""
    return TypeError(
        f"{owner} requires a context (its `context` parameter has no default) but none was "
        "given: pass this batch's context to the solve, e.g. problem.solve(y, context=...)"
    )


def require_taker(context: Any, pieces: dict[str, bool], where: str) -> None:
    """Raise `TypeError` if ``context`` is given but none of ``pieces`` (name → whether
    it declares a ``context`` parameter) would receive it."""
    if context is None or any(pieces.values()):
        return
    names = list(pieces)
    who = f"{names[0]} takes none" if len(names) == 1 else f"neither {' nor '.join(names)} takes one"
    raise TypeError(
        f"{where} got a context ({type(context).__name__}), but {who}: "
        "declare a `context` parameter in forward (e.g. forward(self, z, x, context=None)) to "
        "receive per-batch context, or pass none"
    )
