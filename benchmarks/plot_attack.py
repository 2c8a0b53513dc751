"""The adversarial page's figure: attack success against CPU time, JIIO-k and the best PGD-k,
from ``attack-cpu.json`` (written by ``bench_attack.py``); runs nothing.

    python benchmarks/plot_attack.py [--results benchmarks/results] [--out docs/img/attack-success-vs-cpu.png]

Every point is one measured run of the benchmark (single-run CPU seconds of the sweep): PGD-k at
its best relative step size (swept until interior), JIIO-k with the config's tuned settings.
Success is scored at a tight DEQ equilibrium of each attack's images. The dashed line is the
target (the best PGD-20's success); the benchmark's ratio compares the timed JIIO-k* with the
cheapest PGD-k reaching it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _figures import save

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img" / "attack-success-vs-cpu.png")
    args = parser.parse_args()
    d = json.loads((args.results / "attack-cpu.json").read_text(encoding="utf8"))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    pgd = sorted(d["pgd_sweep"], key=lambda r: r["steps"])
    ax.plot([r["cpu_seconds"] for r in pgd], [100 * r["success"] for r in pgd], "s-", color="C3", ms=4,
            label="PGD-k (best step size each)")
    for r in pgd:
        ax.annotate(str(r["steps"]), (r["cpu_seconds"], 100 * r["success"]), fontsize=6, xytext=(2, -8),
                    textcoords="offset points", color="C3")
    jiio = sorted(d["jiio_sweep"], key=lambda r: r["iterations"])
    ax.plot([r["cpu_seconds"] for r in jiio], [100 * r["success"] for r in jiio], "o-", color="C0", ms=4,
            label="JIIO-k")
    ax.axhline(100 * d["target_success"], ls="--", color="gray", lw=1,
               label=f"target: best PGD-{d['reference_pgd_steps']} ({100 * d['target_success']:.1f}%)")
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU seconds for {d['batch']} held-out digits (1 thread)")
    ax.set_ylabel("attack success (%)")
    eq = d["equal_success"]
    ax.set_title(f"L2 attack (ε = {d['eps']:g}) on {d['model']}: JIIO-{eq['jiio_iterations']} vs the cheapest "
                 f"PGD reaching the target, {d['ratio_median']:.1f}× ({d['ratio_min']:.1f}–{d['ratio_max']:.1f})",
                 fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, args.out)


if __name__ == "__main__":
    main()
