"""Progress bars of the long-running evaluations, samplers and benchmarks.

Every library function that can run for more than a few seconds takes ``progress: bool``
(default ``False``: a library call prints nothing) and, when it is true, shows a tqdm bar on
**stderr** with a total, so that tqdm can give an ETA; stdout is left to results. The ``jiio``
commands pass ``progress=not args.no_progress`` (``--no-progress`` hides the bars).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

__all__ = ["progress_bar"]


def progress_bar(total: int | None, desc: str, *, enabled: bool, unit: str = "it") -> Any:
    """A tqdm bar on ``sys.stderr`` (looked up when called) counting ``total`` units of
    ``unit``, labelled ``desc``; a no-op bar when ``enabled`` is false. A caller that finds
    more work than planned raises ``bar.total`` (the ETA follows)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
