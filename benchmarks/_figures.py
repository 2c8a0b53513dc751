"""Shared pieces of the plotting scripts (which draw docs figures from committed results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save(fig: Any, out: Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``out`` (creating the folder) and say so."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    print(f"wrote {out}")
    return out
