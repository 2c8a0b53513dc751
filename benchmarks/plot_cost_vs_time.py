"""The home page's figure: JIIO versus Adam, score against CPU time, from the benchmark JSON.

    python benchmarks/plot_cost_vs_time.py [--results benchmarks/results] [--out docs/img/jiio-vs-adam-cpu.png]

Reads ``inversion-cpu.json`` (``faces_gen_small``, held-out faces) and ``core_inversion-cpu.json``
(the small tanh DEQ, Anderson-II) as written by ``bench_inversion.py`` and
``bench_core_inversion.py``; runs nothing. Both methods are scored at the DEQ equilibrium of the
input they return. Adam's point is its measured run (median CPU time, min–max bar, the best
learning rate of the sweep). JIIO's curve is its score after k iterations; the benchmark times
one JIIO run, at k*, the fewest iterations reaching Adam's score, so the curve's time axis is
k times the measured time per iteration of that run (marked with its min–max bar).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def _panel(ax: Any, title: str, scores: dict[str, float], k_star: int, jiio_s: list[float],
           adam_s: list[float], adam_loss: float, adam_label: str, ylabel: str, log_y: bool) -> None:
    ks = sorted(int(k) for k in scores)
    per_iter = sorted(jiio_s)[len(jiio_s) // 2] / k_star
    ax.plot([k * per_iter for k in ks], [scores[str(k)] for k in ks], "o-", ms=3, color="C0",
            label="JIIO: score after k iterations")
    jiio_med = sorted(jiio_s)[len(jiio_s) // 2]
    ax.errorbar([jiio_med], [scores[str(k_star)]], xerr=[[jiio_med - min(jiio_s)], [max(jiio_s) - jiio_med]],
                fmt="o", color="C0", mfc="white", ms=7, capsize=3, label=f"JIIO-{k_star}, timed")
    adam_med = sorted(adam_s)[len(adam_s) // 2]
    ax.errorbar([adam_med], [adam_loss], xerr=[[adam_med - min(adam_s)], [max(adam_s) - adam_med]],
                fmt="s", color="C3", ms=7, capsize=3, label=adam_label)
    ax.axhline(adam_loss, color="C3", lw=0.8, ls="--")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("CPU seconds (1 thread)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{adam_med / jiio_med:.1f}× less CPU time to Adam's score", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def plot(results: Path, out: Path) -> Path:
    faces: dict[str, Any] = json.loads((results / "inversion-cpu.json").read_text(encoding="utf8"))
    core: dict[str, Any] = json.loads((results / "core_inversion-cpu.json").read_text(encoding="utf8"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _panel(axes[0], f"latent inversion, {faces['model']}, {faces['images']} held-out faces",
           faces["jiio_scores"], faces["jiio_iterations_to_adam_loss"], faces["jiio_cpu_seconds"],
           faces["baseline_cpu_seconds"], faces["adam_loss"],
           f"Adam-{faces['adam_steps']} (lr {faces['adam_lr']}), timed", "per-pixel MSE at equilibrium",
           log_y=False)
    acc = core["jiio"]["Anderson-II"]
    _panel(axes[1], f"latent inversion, small tanh DEQ, batch {core['batch']} (Anderson-II)",
           acc["jiio_scores"], acc["jiio_iterations_to_baseline_loss"], acc["jiio_cpu_seconds"],
           acc["baseline_cpu_seconds"], acc["baseline_loss"],
           f"Adam-{core['adam_steps']} (lr {acc['baseline_step_size']}), timed", "loss at equilibrium",
           log_y=True)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img" / "jiio-vs-adam-cpu.png")
    args = parser.parse_args()
    print(plot(args.results, args.out))


if __name__ == "__main__":
    main()
