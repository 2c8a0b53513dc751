"""Parameter counts of every zoo configuration: ``python -m jiio_zoo.params``.

Models are built on PyTorch's ``meta`` device, so even the paper-scale ones cost no memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import attrs
import torch
from torch import nn

from jiio_zoo.configs import CONFIGS, ZooConfig
from jiio_zoo.model import build_model

__all__ = ["ParamCount", "count_parameters", "main"]


@attrs.frozen
class ParamCount:
    """Parameter counts of one model: ``f`` (the equilibrium cell alone), its injection, its
    head, and the total."""

    name: str
    total: int
    f: int
    injection: int
    head: int


def _numel(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def count_parameters(config: ZooConfig) -> ParamCount:
    """Count the parameters of ``config``'s model (built on the meta device)."""
    with torch.device("meta"):
        model = build_model(config)
    return ParamCount(
        name=config.name,
        total=_numel(model.parameters()),
        f=_numel(model.cell_parameters()),
        injection=_numel(model.injection_parameters()),
        head=_numel(model.head.parameters()),
    )


def main(argv: list[str] | None = None) -> int:
    """Print a table of parameter counts for the named configs (all by default)."""
    names = (sys.argv[1:] if argv is None else argv) or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        valid = ", ".join(CONFIGS)
        print(f"unknown config(s) {', '.join(unknown)}; valid: {valid}", file=sys.stderr)
        return 2
    header = (
        f"{'config':<18} {'scale':<6} {'total':>12} {'f only':>12} "
        f"{'injection':>12} {'head':>10}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        c = count_parameters(CONFIGS[name])
        print(
            f"{name:<18} {CONFIGS[name].scale:<6} {c.total:>12,} {c.f:>12,} "
            f"{c.injection:>12,} {c.head:>10,}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
