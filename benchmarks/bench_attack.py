"""L2 attack on a zoo DEQ classifier (paper Table 2): JIIO vs PGD-N at equal success.

Same model (default: the pretrained ``digits_adv_small``), same held-out batch (the fixed
subset of the embedded digits used by its test), same ε, same machine.

- PGD-N: ``N`` normalised L2 steps, each a full DEQ forward solve and implicit backward solve.
  Success = fraction of the batch misclassified at the attack's images.
- JIIO: attacks with an increasing iteration budget (``--jiio-iterations``); the first budget
  whose success reaches PGD's (and, separately, whose mean cross-entropy reaches PGD's) is
  timed on its own.
- One DEQ forward solve of the clean batch (classification = inference) as the unit of cost.
- Peak memory of one PGD-N attack and of the equal-success JIIO attack (see ``_common``).

Run: ``python benchmarks/bench_attack.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch
import torch.nn.functional as F

from jiio_tasks.adversarial import JIIOAttack, PGDAttack
from jiio_tasks.adversarial.attacks import default_deq, deq_logits, evaluating
from jiio_tasks.adversarial.train import eval_subset, fit_images, load_split
from jiio_zoo import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits_adv_small")
    parser.add_argument("--weights", default=None, help="checkpoint to attack instead of the shipped weights")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--jiio-iterations", default="5,10,15,20,30,40,60,80")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)

    model = load(args.model, weights=args.weights, device=device).eval()
    images, labels = load_split("embedded", "test", None)
    images, labels = eval_subset(fit_images(images, model), labels, args.batch)
    images, labels = images.to(device), labels.to(device)
    deq = default_deq(model)

    def score(adv: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad(), evaluating(model):
            logits = deq_logits(model, adv, deq)
        return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) != labels).float().mean())

    clean_ce, clean_err = score(images)
    pgd = PGDAttack(args.eps, steps=args.pgd_steps)

    def pgd_run() -> torch.Tensor:
        return pgd.perturb(model, images, labels, deq)

    pgd_s, pgd_adv = C.timed(pgd_run, device, args.repeats, args.warmup)
    pgd_ce, pgd_success = score(pgd_adv)
    print(f"machine: {C.machine(device)}")
    print(f"clean: CE {clean_ce:.3f}, error {clean_err:.3f}")
    print(f"PGD-{args.pgd_steps}: {pgd_s * 1e3:.0f} ms, CE {pgd_ce:.3f}, success {pgd_success:.3f}")

    sweep: list[dict[str, float]] = []
    for k in (int(v) for v in args.jiio_iterations.split(",")):
        adv, _ = JIIOAttack(args.eps, iterations=k).perturb(model, images, labels)
        ce, success = score(adv)
        sweep.append({"iterations": k, "ce": ce, "success": success})
        print(f"JIIO-{k}: CE {ce:.3f}, success {success:.3f}")
    result: dict[str, Any] = {
        "model": args.model, "weights": args.weights, "batch": args.batch, "eps": args.eps,
        "clean_ce": clean_ce, "clean_error": clean_err, "pgd_steps": args.pgd_steps, "pgd_seconds": pgd_s,
        "pgd_ce": pgd_ce, "pgd_success": pgd_success, "jiio_sweep": sweep,
    }

    def time_jiio(k: int) -> float:
        attack = JIIOAttack(args.eps, iterations=k)
        t, _ = C.timed(lambda: attack.perturb(model, images, labels), device, args.repeats, args.warmup)
        return t

    for key, field in (("success", "success"), ("ce", "ce")):
        target = pgd_success if key == "success" else pgd_ce
        hit = next((r for r in sweep if r[field] >= target), None)
        if hit is None:
            print(f"JIIO never reached PGD's {key} within {sweep[-1]['iterations']} iterations")
            result[f"equal_{key}"] = None
            continue
        k = int(hit["iterations"])
        t = time_jiio(k)
        result[f"equal_{key}"] = {"jiio_iterations": k, "jiio_seconds": t, "speedup": pgd_s / t}
        print(f"equal {key}: JIIO-{k} {t * 1e3:.0f} ms -> PGD/JIIO {pgd_s / t:.2f}x")

    def forward_run() -> Any:
        with torch.no_grad(), evaluating(model):
            return deq_logits(model, images, deq)

    fwd_s, _ = C.timed(forward_run, device, args.repeats, args.warmup)
    result["forward_solve_seconds"] = fwd_s
    result["pgd_over_forward"] = pgd_s / fwd_s
    eq = result.get("equal_success")
    k_mem = eq["jiio_iterations"] if eq else sweep[-1]["iterations"]
    if eq:
        result["jiio_over_forward"] = eq["jiio_seconds"] / fwd_s
    attack = JIIOAttack(args.eps, iterations=int(k_mem))
    pgd_mem = C.peak_memory(pgd_run, device)
    jiio_mem = C.peak_memory(lambda: attack.perturb(model, images, labels), device)
    result.update({"pgd_peak_bytes": pgd_mem, "jiio_peak_bytes": jiio_mem, "jiio_memory_iterations": k_mem,
                   "memory_ratio": None if not pgd_mem or jiio_mem is None else jiio_mem / pgd_mem})
    print(f"one DEQ forward solve: {fwd_s * 1e3:.0f} ms (PGD = {pgd_s / fwd_s:.1f} forward solves"
          + ("" if not eq else f", JIIO = {eq['jiio_seconds'] / fwd_s:.1f}") + ")")
    print(f"peak memory: PGD {C.mb(pgd_mem)}, JIIO-{k_mem} {C.mb(jiio_mem)}")
    C.write("attack", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
