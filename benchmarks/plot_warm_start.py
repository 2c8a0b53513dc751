"""The generative page's warm-start figure: held-out PSNR against training CPU time for every arm
and seed of ``warm-start-cpu.json`` (written by ``warm_start.py``); runs nothing.

    python benchmarks/plot_warm_start.py [--results benchmarks/results] [--out docs/img/warm-start.png]

One line per (arm, seed): the fixed evaluator's mean PSNR on the 20 held-out faces after each
block of training steps, against the process CPU time of the training steps so far. The dotted
lines are each seed's target (the PSNR ``cold40`` reaches at the end of its budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _figures import save
from report import WARM_ARMS

HERE = Path(__file__).resolve().parent
STYLE = {"cold40": ("C0", "-"), "cold20": ("C2", "--"), "warm20": ("C3", "-"), "warm40": ("C1", "-."),
         "warmz20": ("C4", ":")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img" / "warm-start.png")
    args = parser.parse_args()
    d = json.loads((args.results / "warm-start-cpu.json").read_text(encoding="utf8"))
    seeds = sorted(d["curves"])
    fig, axes = plt.subplots(1, len(seeds), figsize=(3.2 * len(seeds), 3.4), sharey=True, squeeze=False)
    for ax, seed in zip(axes[0], seeds, strict=True):
        for arm, curve in d["curves"][seed].items():
            color, ls = STYLE.get(arm, ("k", ":"))
            ax.plot([p["cpu_seconds"] / 60 for p in curve], [p["psnr"] for p in curve], ls, color=color, lw=1.2,
                    label=WARM_ARMS.get(arm, arm))
        ax.axhline(d["per_seed"][seed]["target_psnr"], ls=":", color="gray", lw=1)
        ax.set_title(f"seed {seed}", fontsize=9)
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out PSNR (dB)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{d['config']} trained from scratch, batch {d['batch_size']}: warm starts vs cold starts", fontsize=9)
    save(fig, args.out)


if __name__ == "__main__":
    main()
