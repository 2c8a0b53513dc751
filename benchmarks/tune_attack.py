"""Tune JIIO's attack settings (normalised α_x, late α_x, switch iteration) on TRAINING digits.

The validation set is a fixed random subset (``eval_subset(..., seed=1)``) of the embedded
*training* digits, never the held-out digits :mod:`bench_attack` measures on. On it:

- target = the best success of PGD-``--pgd-steps`` (20) over its step-size sweep (the same
  interior sweep and objective as :func:`jiio_tasks.adversarial.evaluate.bench`);
- for every JIIO setting, the success curve over ``--jiio-iterations`` and ``k*`` = the fewest
  iterations from which on success stays ≥ the target
  (:func:`jiio_tasks.speed.first_stable_k`).

Every attack is scored at a tight DEQ equilibrium (:func:`~jiio_tasks.adversarial.evaluate.tight_deq`).
The settings run in ``--workers`` processes of one thread each (success does not depend on timing).

Run: ``python benchmarks/tune_attack.py [--workers 2]``; writes
``benchmarks/results/attack-tuning-cpu.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import torch

from jiio_core.damping import Damping
from jiio_tasks.adversarial import JIIOAttack, PGDAttack
from jiio_tasks.adversarial.attacks import default_deq
from jiio_tasks.adversarial.evaluate import (
    JIIO_ITERATIONS_GRID,
    REL_STEP_FACTORS,
    attack_score,
    sweep_objective,
    tight_deq,
)
from jiio_tasks.adversarial.splits import eval_subset, training_digits
from jiio_tasks.speed import first_stable_k, interior_sweep
from jiio_zoo import load

ALPHAS = (0.3, 0.6, 1.0, 1.5)
"""Normalised α_x values tried; each with late α_x = α_x/3 from ``SWITCHES`` and with no switch."""

SWITCHES = (25, 40)


def _data(model_name: str, batch: int, seed: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    model = load(model_name).eval()
    images, labels = eval_subset(*training_digits(model), batch, seed=seed)
    return model, images, labels


def _init(threads: int) -> None:
    torch.set_num_threads(threads)


def _target(job: dict[str, Any]) -> dict[str, Any]:
    model, images, labels = _data(job["model"], job["batch"], job["seed"])
    eps, k, batch = job["eps"], job["pgd_steps"], int(labels.shape[0])
    deq, scorer = default_deq(model), tight_deq(model)
    tried: dict[float, dict[str, Any]] = {}

    def objective(rel: float) -> float:
        attack = PGDAttack(eps, steps=k, rel_step=rel)
        adv = attack.perturb(model, images, labels, deq)
        s = attack_score(model, adv, labels, scorer)
        tried[rel] = {"rel_step": rel, "step_size": attack.step_size, **s}
        return sweep_objective(s["success"], s["ce"], batch)

    best, _ = interior_sweep(objective, [f * 2.5 / k for f in REL_STEP_FACTORS])
    rels = sorted(tried)
    clean = attack_score(model, images, labels, scorer)
    return {"kind": "target", "steps": k, **tried[best], "interior": rels[0] < best < rels[-1],
            "tried": [tried[r] for r in rels], "clean_error": clean["success"]}


def _jiio(job: dict[str, Any]) -> dict[str, Any]:
    model, images, labels = _data(job["model"], job["batch"], job["seed"])
    scorer = tight_deq(model)
    s = model.config.solver
    damping = Damping(z=s.damping[0], mu=s.damping[1], x=job["alpha_x"], x_late=job["x_late"],
                      switch_at=job["switch_at"])
    curve = []
    for k in job["iterations"]:
        t0 = time.process_time()
        adv, _ = JIIOAttack(job["eps"], iterations=k, damping=damping).perturb(model, images, labels)
        secs = time.process_time() - t0
        curve.append({"iterations": k, "cpu_seconds": secs, **attack_score(model, adv, labels, scorer)})
    return {"kind": "jiio", "alpha_x": job["alpha_x"], "x_late": job["x_late"], "switch_at": job["switch_at"],
            "curve": curve}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    return _target(job) if job["kind"] == "target" else _jiio(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits_adv_small")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--subset-seed", type=int, default=1, help="eval_subset seed of the training digits")
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--jiio-iterations", type=lambda t: tuple(int(v) for v in t.split(",")),
                        default=JIIO_ITERATIONS_GRID)
    parser.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = load(args.model)
    s = model.config.solver
    config_setting = (float(s.damping[2]), s.damping_x_switch, s.damping_x_switch_iter)
    common = {"model": args.model, "batch": args.batch, "seed": args.subset_seed, "eps": args.eps}
    jobs: list[dict[str, Any]] = [{"kind": "target", "pgd_steps": args.pgd_steps, **common}]
    settings: list[tuple[float, float | None, int | None]] = []
    for a in ALPHAS:
        settings += [(a, round(a / 3, 6), sw) for sw in SWITCHES] + [(a, None, None)]
    if not any(a == config_setting[0] and sw == config_setting[2] and (xl is None) == (config_setting[1] is None)
               and (xl is None or abs(xl - float(config_setting[1] or 0)) < 1e-9) for a, xl, sw in settings):
        settings.insert(0, config_setting)
    jobs += [{"kind": "jiio", "alpha_x": a, "x_late": xl, "switch_at": sw,
              "iterations": list(args.jiio_iterations), **common} for a, xl, sw in settings]

    with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(1,)) as pool:
        done = pool.map(_run, jobs, chunksize=1)
    target_row = next(d for d in done if d["kind"] == "target")
    target = float(target_row["success"])
    rows = []
    for d in done:
        if d["kind"] != "jiio":
            continue
        k_star = first_stable_k({c["iterations"]: -c["success"] for c in d["curve"]}, -target)
        is_config = (d["alpha_x"] == config_setting[0] and d["switch_at"] == config_setting[2]
                     and (d["x_late"] is None) == (config_setting[1] is None)
                     and (d["x_late"] is None or abs(d["x_late"] - float(config_setting[1] or 0)) < 1e-9))
        rows.append({**d, "k_star": k_star, "is_config": is_config})
        label = f"alpha_x {d['alpha_x']:g}, " + (
            "no late switch" if d["x_late"] is None else f"late {d['x_late']:.3g} from {d['switch_at']}")
        curve = ", ".join(f"{c['iterations']}: {c['success']:.3f}" for c in d["curve"])
        print(f"{label}{' (config)' if is_config else ''}: k* = {k_star}  [{curve}]")

    def key(r: dict[str, Any]) -> tuple[float, int]:
        return (float("inf") if r["k_star"] is None else r["k_star"], 0 if r["is_config"] else 1)

    chosen = min(rows, key=key)
    config_row = next(r for r in rows if r["is_config"])
    print(f"clean error {target_row['clean_error']:.3f}; target (best PGD-{args.pgd_steps}) = {target:.3f} "
          f"at rel_step {target_row['rel_step']:.4g}")
    print(f"chosen: alpha_x {chosen['alpha_x']:g}, x_late {chosen['x_late']}, switch_at {chosen['switch_at']} "
          f"(k* {chosen['k_star']}; config's k* {config_row['k_star']})")
    result = {
        "purpose": "tune JIIO's attack settings on training digits (validation), not the held-out "
                   "digits of bench_attack.py",
        "validation": f"embedded train digits, eval_subset(size={args.batch}, seed={args.subset_seed})",
        "eps": args.eps,
        "scoring": "success at the DEQ equilibrium re-solved with max_iter 300, tol 1e-6",
        "target_definition": f"best success of PGD-{args.pgd_steps} over its step-size sweep",
        "target_success": target,
        "target_pgd": target_row,
        "config_setting": {"alpha_x": config_setting[0], "x_late": config_setting[1],
                           "switch_at": config_setting[2], "k_star": config_row["k_star"]},
        "settings": rows,
        "chosen": {"alpha_x": chosen["alpha_x"], "x_late": chosen["x_late"], "switch_at": chosen["switch_at"],
                   "k_star": chosen["k_star"]},
        "beats_config": chosen["k_star"] is not None and (config_row["k_star"] is None
                                                          or chosen["k_star"] < config_row["k_star"]),
    }
    ns = argparse.Namespace(json=args.json)
    C.write("attack-tuning", ns, torch.device("cpu"), result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
