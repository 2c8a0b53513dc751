"""The JIIO-vs-PGD attack speed comparison (``bench``): on a tiny DEQ classifier, every choice
it returns (the target, the cheapest PGD-k and its step size, JIIO's k*) is re-checked
against its definition with the attacks re-scored at an equilibrium found by plain
fixed-point iteration (independent of the DEQ solver ``bench`` scores with); the timing
summary is re-derived from the raw CPU seconds; bad arguments name themselves."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_tasks.adversarial import JIIOAttack, PGDAttack
from jiio_tasks.adversarial.attacks import default_deq
from jiio_tasks.adversarial.evaluate import (
    PGD_STEPS_GRID,
    attack_score,
    bench,
    bench_summary,
    sweep_objective,
    tight_deq,
)
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import deq_solver
from tests.zoo.tiny import tiny_model

EPS = 0.3
N = 16
PGD_GRID = (1, 2, 4)
REFERENCE = 4
JIIO_GRID = (4, 8, 12, 16, 20, 30)


def reference_score(model: ZooModel, images: Tensor, labels: Tensor, iters: int = 100) -> tuple[int, float]:
    """Misclassified count and mean CE at the equilibrium reached by plain iteration
    ``z ← f(z, x)`` (checked converged), in float64."""
    with torch.no_grad():
        z = model.layer.init_state(images)
        for _ in range(iters):
            z = model.layer(z, images)
        nxt = model.layer(z, images)
        res = max(float((a - b).abs().max()) for a, b in zip(nxt, z, strict=True))
        assert res < 1e-9, f"plain iteration did not converge (residual {res:.2e})"
        logits = model.head(nxt)
    return int((logits.argmax(1) != labels).sum()), float(F.cross_entropy(logits, labels))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = tiny_model("adversarial").eval()  # float64
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(N, 1, 8, 8, generator=g, dtype=torch.float64) > 0.6).to(torch.float64)
    with torch.no_grad():  # labels = the clean predictions, so every success is the attack's
        z = model.layer.init_state(images)
        for _ in range(100):
            z = model.layer(z, images)
        labels = model.head(z).argmax(1)
    out = tmp_path_factory.mktemp("bench")
    result = bench(model, images, labels, EPS, out, pgd_steps=REFERENCE, pgd_grid=PGD_GRID,
                   jiio_iterations=JIIO_GRID, repeats=3)
    return {"model": model, "images": images, "labels": labels, "out": out, "r": result}


def test_pgd_sweep_target_and_cheapest_k_match_their_definitions(setup: dict[str, Any]) -> None:
    model, x, y, r = setup["model"], setup["images"], setup["labels"], setup["r"]
    deq = default_deq(model)
    assert r["clean_error"] == 0.0 and r["unconverged_max"] == 0
    assert [p["steps"] for p in r["pgd_sweep"]] == list(PGD_GRID)  # REFERENCE is in the grid
    best_success: dict[int, int] = {}
    for p in r["pgd_sweep"]:
        k = p["steps"]
        rels = [t["rel_step"] for t in p["tried"]]
        assert rels == sorted(rels) and p["rel_step"] in rels
        # interior: a tried step size on each side of the best
        assert p["interior"] and rels[0] < p["rel_step"] < rels[-1]
        # the first grid is 2.5/k × (0.5, 1, 2), extended by ×2 or ÷2 only
        for f in (0.5, 1.0, 2.0):
            assert any(math.isclose(rel, f * 2.5 / k) for rel in rels)
        ref: dict[float, tuple[int, float]] = {}
        for t in p["tried"]:
            adv = PGDAttack(EPS, steps=k, rel_step=t["rel_step"]).perturb(model, x, y, deq)
            ref[t["rel_step"]] = reference_score(model, adv, y)
            assert t["success"] * N == ref[t["rel_step"]][0]
            assert t["ce"] == pytest.approx(ref[t["rel_step"]][1], rel=1e-5)
        top = max(c for c, _ in ref.values())
        best_success[k] = top
        # the best step size: highest success, and among those the highest CE
        assert ref[p["rel_step"]][0] == top
        assert ref[p["rel_step"]][1] >= max(ce for c, ce in ref.values() if c == top) - 2e-4
        assert p["success"] * N == top
    target = best_success[REFERENCE]
    assert r["target_success"] * N == target
    # the cheapest PGD-k: smallest k of the grid whose best success reaches the target
    cheapest = min(k for k, c in best_success.items() if c >= target)
    assert r["pgd_steps"] == cheapest
    assert cheapest > PGD_GRID[0], "the tiny case should have PGD-k below the target"
    chosen = next(p for p in r["pgd_sweep"] if p["steps"] == cheapest)
    assert r["pgd_rel_step"] == chosen["rel_step"] and r["pgd_step_size"] == pytest.approx(EPS * chosen["rel_step"])
    adv = PGDAttack(EPS, steps=cheapest, rel_step=r["pgd_rel_step"]).perturb(model, x, y, deq)
    assert reference_score(model, adv, y)[0] >= target


def test_jiio_k_star_matches_its_definition(setup: dict[str, Any]) -> None:
    model, x, y, r = setup["model"], setup["images"], setup["labels"], setup["r"]
    target = round(r["target_success"] * N)
    wrong: dict[int, int] = {}
    for row in r["jiio_sweep"]:
        adv, _ = JIIOAttack(EPS, iterations=row["iterations"]).perturb(model, x, y)
        count, ce = reference_score(model, adv, y)
        wrong[row["iterations"]] = count
        assert row["success"] * N == count and row["ce"] == pytest.approx(ce, rel=1e-5)
    k_star = r["jiio_iterations"]
    assert k_star is not None and k_star in JIIO_GRID
    assert all(wrong[k] >= target for k in JIIO_GRID if k >= k_star)
    below = [k for k in JIIO_GRID if k < k_star]
    assert below, "the tiny case should have JIIO-k below the target"
    assert wrong[below[-1]] < target  # k* is the first from which on success stays ≥ target
    assert r["jiio_success"] * N == wrong[k_star] and r["equal_success"]["jiio_iterations"] == k_star


def test_timing_summary_is_derived_from_the_paired_cpu_seconds(setup: dict[str, Any]) -> None:
    r = setup["r"]
    pgd, jiio, fwd = r["pgd_cpu_seconds"], r["jiio_cpu_seconds"], r["forward_solve_cpu_seconds"]
    assert len(pgd) == len(jiio) == len(fwd) == 3 and min(pgd + jiio + fwd) > 0
    ratios = [b / j for b, j in zip(pgd, jiio, strict=True)]
    assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
    assert r["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert (r["ratio_min"], r["ratio_max"]) == pytest.approx((min(ratios), max(ratios)))
    assert r["equal_success"]["speedup"] == r["ratio_median"]
    assert r["pgd_over_forward"] == pytest.approx(statistics.median(pgd) / statistics.median(fwd))
    assert r["jiio_over_forward"] == pytest.approx(statistics.median(jiio) / statistics.median(fwd))
    text = bench_summary(r)
    assert f"PGD-{r['pgd_steps']} / JIIO-{r['jiio_iterations']}: {r['ratio_median']:.2f}x" in text
    missing = bench_summary({**r, "jiio_iterations": None})
    assert "no ratio" in missing and "/ JIIO" not in missing


def test_outputs_written(setup: dict[str, Any]) -> None:
    out: Path = setup["out"]
    assert json.loads((out / "bench.json").read_text(encoding="utf8")) == json.loads(json.dumps(setup["r"]))
    png = (out / "attack_loss_vs_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_attack_score_reports_unconverged_samples(setup: dict[str, Any]) -> None:
    model, x, y = setup["model"], setup["images"], setup["labels"]
    loose = attack_score(model, x, y, deq_solver(model, max_iter=1, tol=1e-12))
    assert loose["unconverged"] == N
    tight = attack_score(model, x, y, tight_deq(model))
    count, ce = reference_score(model, x, y)
    assert tight["unconverged"] == 0 and tight["success"] * N == count and tight["ce"] == pytest.approx(ce, rel=1e-6)


def test_sweep_objective_orders_by_success_then_ce() -> None:
    b = 16
    # one more misclassified sample beats any CE
    assert sweep_objective(5 / b, 0.0, b) < sweep_objective(4 / b, 1e6, b)
    # equal success: the larger CE wins; float noise below 1e-4 is a tie
    assert sweep_objective(5 / b, 2.0, b) < sweep_objective(5 / b, 1.9, b)
    assert sweep_objective(5 / b, 2.0, b) == sweep_objective(5 / b, 2.0 + 1e-9, b)


def test_cli_help_and_defaults() -> None:
    import argparse

    from jiio_tasks.cli import build_parser

    parser = build_parser()
    b = parser.parse_args(["bench", "adversarial", "--out", "o"])
    assert b.pgd_steps == 20 and b.pgd_grid is None and b.repeats == 3 and not b.no_progress

    def sub(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        out: argparse.ArgumentParser = action.choices[name]
        return out

    help_text = " ".join(sub(sub(parser, "bench"), "adversarial").format_help().split())
    # the --pgd-grid default the help states is bench's
    assert f"(default: {' '.join(map(str, PGD_STEPS_GRID))})" in help_text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
        ({"pgd_grid": (0, 2)}, r"pgd_grid must be a non-empty sequence of ints >= 1, got \(0, 2\)"),
        ({"jiio_iterations": ()}, r"jiio_iterations must be a non-empty sequence of ints >= 1, got \(\)"),
        ({"pgd_steps": 2.5}, "pgd_steps must be an int >= 1, got 2.5"),
        ({"repeats": 0}, "repeats must be an int >= 1, got 0"),
        ({"rel_step_factors": (1.0, -1.0)}, r"rel_step_factors must be .* > 0, got \(1.0, -1.0\)"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, r"labels must be a tensor \(N,\) with N = .*4.*got \(3,\)"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], match: str) -> None:
    model = tiny_model("adversarial")
    args: dict[str, Any] = {"images": torch.zeros(4, 1, 8, 8, dtype=torch.float64),
                            "labels": torch.zeros(4, dtype=torch.long), "eps": 0.5}
    args.update({k: v for k, v in kwargs.items() if k in args})
    rest = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(ValueError, match=match):
        bench(model, args["images"], args["labels"], args["eps"], **rest)
