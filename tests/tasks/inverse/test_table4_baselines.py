"""The Table 4 baselines (jiio_tasks.inverse.baselines) against independent references, and a
smoke run of benchmarks/table4.py: the MDEQ-AE's implicit gradient against autograd through the
unrolled iteration, Adam on eq. 21 against the least-squares latent of a linear decoder, the
bootstrap interval against the exact bootstrap distribution of a tiny sample and the normal
asymptotics of the median, the supervised trainer's resume against a straight run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from jiio_core import DEQSolver
from jiio_core.validators import FieldError
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.operators import BoxMask, Identity, mse
from jiio_tasks.inverse.baselines import (
    ConvAE,
    MDEQAutoencoder,
    SupervisedSettings,
    adam_inverse,
    build_supervised_model,
    decode,
    load_supervised_baseline,
    median_ci,
    train_supervised_baseline,
)
from jiio_tasks.runs import RunDir
from tests.tasks.generative.tiny import image_source, params, tiny_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- MDEQ-AE gradient


def test_mdeq_ae_implicit_gradient_matches_autograd_through_the_unrolled_iteration() -> None:
    """float64, tiny MDEQ: the DEQ's implicit backward (IFT) gives the parameter gradient of the
    supervised loss that autograd gives through 200 plain iterations of f (which converge to
    1e-15 here); a one-step (Jacobian-free) gradient is 30 % off, so the check has power."""
    torch.manual_seed(0)
    deq = DEQSolver(max_iter=400, tol=1e-13, backward_max_iter=400, backward_tol=1e-13)
    model = MDEQAutoencoder(tiny_config(), deq=deq).double()
    g = torch.Generator().manual_seed(1)
    observed = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    clean = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    weights = list(model.parameters())
    implicit = torch.autograd.grad(mse(model(observed), clean).mean(), weights)
    z = model.layer.init_state(observed)
    for _ in range(200):
        z = model.layer(z, observed)
    with torch.no_grad():
        assert max(float((f - s).abs().max()) for f, s in zip(model.layer(z, observed), z, strict=True)) < 1e-12
    unrolled = torch.autograd.grad(mse(model.head(z), clean).mean(), weights)
    layer = {id(p) for p in model.layer.parameters()}
    for part in (lambda p: id(p) in layer, lambda p: id(p) not in layer):  # the DEQ's parameters, the head's
        a = torch.cat([gi.flatten() for gi, p in zip(implicit, weights, strict=True) if part(p)])
        b = torch.cat([gi.flatten() for gi, p in zip(unrolled, weights, strict=True) if part(p)])
        assert float(b.norm()) > 1e-3
        assert float((a - b).norm() / b.norm()) < 1e-8
    # the scored reconstruction is the equilibrium's image, to the tight solve's relative 1e-5
    torch.testing.assert_close(model.reconstruct(observed), model.head(z).detach(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- Adam on eq. 21


def _linear_decoder(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)


def test_adam_inverse_finds_the_least_squares_latent_of_a_linear_decoder() -> None:
    """G(x) = W x + b (as 1×4×4 images), A an inpainting mask: the minimiser of eq. 21 is the
    least-squares solution of (A W) x = ŷ − A b, computed in closed form."""
    w, b = _linear_decoder()

    def decoder(x: torch.Tensor) -> torch.Tensor:
        return (x @ w.T + b).reshape(-1, 1, 4, 4)

    mask = torch.ones(2, 1, 4, 4, dtype=torch.float64)
    mask[0, :, :2, :2] = 0
    mask[1, :, 1:3, 2:] = 0
    op = BoxMask(mask)
    g = torch.Generator().manual_seed(3)
    observed = op.apply(torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64))  # not in G's range
    x = adam_inverse(decoder, observed, op, 3, steps=1000, lr=1e-2)
    for i in range(2):
        m = mask[i].flatten()
        ref = torch.linalg.lstsq(m[:, None] * w, observed[i].flatten() - m * b).solution
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-6)
        loss = ((op.select(i, i + 1).apply(decoder(x[i : i + 1])) - observed[i : i + 1]) ** 2).mean()
        best = ((op.select(i, i + 1).apply(decoder(ref[None])) - observed[i : i + 1]) ** 2).mean()
        assert float(loss) == pytest.approx(float(best), rel=1e-10)
    # samples are independent: the second one alone takes the same (few) steps
    both = adam_inverse(decoder, observed, op, 3, steps=5, lr=0.1)
    alone = adam_inverse(decoder, observed[1:], op.select(1, 2), 3, steps=5, lr=0.1)
    torch.testing.assert_close(alone[0], both[1], rtol=0, atol=1e-12)


def test_adam_inverse_starts_at_zero_and_keeps_the_best_iterate() -> None:
    w, b = _linear_decoder(1)

    def decoder(x: torch.Tensor) -> torch.Tensor:
        return (x @ w.T + b).reshape(-1, 1, 4, 4)

    observed = decoder(torch.zeros(1, 3, dtype=torch.float64))  # x = 0 is the exact optimum
    x = adam_inverse(decoder, observed, Identity(), 3, steps=5, lr=10.0)  # every step overshoots
    assert float(x.abs().max()) == 0.0
    start = torch.full((1, 3), 0.5, dtype=torch.float64)
    x = adam_inverse(decoder, observed, Identity(), 3, steps=1, lr=1e-9, x0=start)  # a step that barely moves
    assert float((x - start).abs().max()) < 1e-8 and float((x - start).abs().max()) > 0
    torch.testing.assert_close(decode(decoder, x), decoder(x))
    with pytest.raises(ValueError, match=r"x0 must have shape \(1, 3\), got \(2, 3\)"):
        adam_inverse(decoder, observed, Identity(), 3, x0=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        adam_inverse(decoder, observed, Identity(), 3, steps=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1"):
        adam_inverse(decoder, observed, Identity(), 3, lr=-1)
    bad = observed.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="observed must be finite, got 1 NaN/Inf values"):
        adam_inverse(decoder, bad, Identity(), 3)
    with pytest.raises(ValueError, match="x0 must be finite"):
        adam_inverse(decoder, observed, Identity(), 3, x0=torch.full((1, 3), float("inf"), dtype=torch.float64))


# --------------------------------------------------------------------------- bootstrap interval


def test_median_ci_follows_the_exact_bootstrap_distribution_of_three_values() -> None:
    """For (1, 2, 3) the bootstrap median is 1 or 3 with probability 7/27 each (two or three of
    the three draws equal to it) and 2 with 13/27: its CDF is 7/27 = 0.26 at 1 and 20/27 = 0.74
    at 2, so its 20 % / 80 % quantiles are 1 / 3 and its 30 % / 70 % quantiles are 2 / 2 (each
    6 standard errors of the 2000-resample estimate from a boundary)."""
    wide = median_ci([3.0, 1.0, 2.0], level=0.6)
    assert (wide.median, wide.low, wide.high) == (2.0, 1.0, 3.0)
    narrow = median_ci([3.0, 1.0, 2.0], level=0.4)
    assert (narrow.low, narrow.high) == (2.0, 2.0)
    assert median_ci([4.0, 1.0, 3.0, 2.0]).median == 2.0  # torch's median: the lower middle value
    assert median_ci([5.0]).as_dict() == {"median": 5.0, "ci95_low": 5.0, "ci95_high": 5.0}


def test_median_ci_contains_the_median_and_shrinks_like_the_normal_asymptotics() -> None:
    """Standard normal samples: the median's standard error is sqrt(pi/2)/sqrt(n), so the 95 %
    interval is about 2·1.96·1.2533/sqrt(n) wide (0.245 at n = 400) and 4× narrower for 16×
    the faces."""
    g = torch.Generator().manual_seed(0)
    small = torch.randn(25, generator=g, dtype=torch.float64)
    large = torch.randn(400, generator=g, dtype=torch.float64)
    a, b = median_ci(small), median_ci(large, seed=1)
    for ci, v in ((a, small), (b, large)):
        assert ci.low <= ci.median <= ci.high and ci.median == float(v.median())
    expected = 2 * 1.96 * math.sqrt(math.pi / 2) / math.sqrt(400)
    assert abs((b.high - b.low) / expected - 1) < 0.25
    assert 2.5 < (a.high - a.low) / (b.high - b.low) < 6.5
    assert median_ci(small, seed=3) == median_ci(small, seed=3)
    for bad, match in (([], "non-empty"), ([1.0, math.nan], "1 not finite")):
        with pytest.raises(ValueError, match=match):
            median_ci(bad)
    with pytest.raises(ValueError, match="resamples must be an int >= 1, got 0"):
        median_ci([1.0], resamples=0)
    with pytest.raises(ValueError, match=r"level must be a float in \(0, 1\), got 1"):
        median_ci([1.0], level=1)


# --------------------------------------------------------------------------- supervised trainer


def _settings(**kw: object) -> SupervisedSettings:
    base: dict[str, object] = dict(steps=4, batch_size=4, learning_rate=1e-2, save_every=2, seed=3)
    base.update(kw)
    return SupervisedSettings(**base)  # type: ignore[arg-type]


class _Smooth(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Twelve dark 8×8 images ``c + 0.3·ramp`` (``c < 0.2``): a family an AE learns in a few dozen
    steps, far from the initial output 0.5."""

    def __init__(self) -> None:
        c = torch.rand(12, 1, 1, 1, generator=torch.Generator().manual_seed(4)) * 0.2
        self.images = c + 0.3 * torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(12, 1, 8, 8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


def test_ae_loss_decreases_and_the_run_saves_a_loadable_model(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "ae")
    model, final = train_supervised_baseline(run, "ae", "denoise0.2", _settings(steps=40, save_every=40, width=4),
                                             source=ImageSource(_Smooth(), 8, 1, "smooth"), config=tiny_config(),
                                             progress=False)
    assert isinstance(model, ConvAE) and model.width == 4 and final["steps_done"] == 40
    losses = [h["loss"] for h in json.loads((run.root / "metrics.json").read_text())["history"]]
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0]  # 0.075 -> about 0.006
    again = load_supervised_baseline(run, tiny_config())
    torch.testing.assert_close(params(again), params(model), rtol=0, atol=0)
    saved = torch.load(run.root / "model.pt", weights_only=True)
    assert (saved["kind"], saved["task"], saved["width"]) == ("ae", "denoise0.2", 4)


class _Killed(Exception):
    pass


def test_mdeq_ae_run_killed_mid_step_resumes_bit_identical_to_a_straight_run(tmp_path: Path) -> None:
    straight, _ = train_supervised_baseline(RunDir(tmp_path / "straight"), "mdeq-ae", "inpaint", _settings(),
                                            source=image_source(), config=tiny_config(), progress=False)
    calls = 0

    def dying_clock() -> float:  # the loop reads it before and after every step; die after step 3's update
        nonlocal calls
        calls += 1
        if calls == 6:
            raise _Killed
        return float(calls)

    run = RunDir(tmp_path / "killed")
    with pytest.raises(_Killed):
        train_supervised_baseline(run, "mdeq-ae", "inpaint", _settings(), source=image_source(),
                                  config=tiny_config(), progress=False, clock=dying_clock)
    assert torch.load(run.state_path, weights_only=True)["step"] == 2
    resumed, final = train_supervised_baseline(run, "mdeq-ae", "inpaint", _settings(), source=image_source(),
                                               config=tiny_config(), progress=False, clock=dying_clock)
    assert final["steps_done"] == 4
    torch.testing.assert_close(params(resumed), params(straight), rtol=0, atol=0)
    hist = [json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("straight", "killed")]
    assert [h["step"] for h in hist[1]] == [1, 2, 3, 4]
    assert [h["loss"] for h in hist[0]] == [h["loss"] for h in hist[1]]
    assert hist[0][0]["jacobian"] > 0  # λ = the config's 0.1


def test_cpu_budget_stops_the_run(tmp_path: Path) -> None:
    ticks = iter(range(10**6))
    _, final = train_supervised_baseline(RunDir(tmp_path / "r"), "ae", "blur", _settings(steps=100, max_minutes=0.05),
                                         source=image_source(), config=tiny_config(), progress=False,
                                         clock=lambda: float(next(ticks)))  # 1 "second" per step
    assert final["steps_done"] == 3 and final["train_seconds"] == 3.0


def test_bad_arguments_name_the_argument_the_value_and_the_choices(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"kind must be one of 'ae', 'mdeq-ae', got 'vae'"):
        train_supervised_baseline(run, "vae", "inpaint", _settings())
    with pytest.raises(ValueError, match=r"task must be one of 'denoise0.2', .*'blur', got 'denoise'"):
        train_supervised_baseline(run, "ae", "denoise", _settings())
    with pytest.raises(ValueError, match=r"kind must be one of .* got 'unet'"):
        build_supervised_model("unet")
    with pytest.raises(ValueError, match="width is the ConvAE's size; kind 'mdeq-ae' takes none, got 8"):
        build_supervised_model("mdeq-ae", width=8)
    with pytest.raises(FieldError, match=r"SupervisedSettings.steps must be .*, got 0"):
        SupervisedSettings(steps=0)
    with pytest.raises(ValueError, match="ConvAE image_size must be a multiple of 8"):
        ConvAE(12, 1, 4)
    assert not run.root.exists()  # nothing was written


def test_ae_is_sized_like_the_mdeq_ae() -> None:
    ae = build_supervised_model("ae", tiny_config())
    mdeq = build_supervised_model("mdeq-ae", tiny_config())
    n_ae, n_mdeq = (sum(p.numel() for p in m.parameters()) for m in (ae, mdeq))
    assert isinstance(ae, ConvAE) and n_ae >= n_mdeq
    assert sum(p.numel() for p in ConvAE(8, 1, ae.width - 1).parameters()) < n_mdeq


# --------------------------------------------------------------------------- the driver


def test_table4_driver_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row on 3 held-out faces, one task, tiny budgets; then one row again, merged with
    the others from the first session (--reuse): the same numbers."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["table4.py"])
    driver = runpy.run_path(str(ROOT / "benchmarks" / "table4.py"), run_name="table4")
    tiny = ["--threads", "1", "--runs", str(tmp_path / "runs"), "--faces", "3", "--val", "2", "--tasks", "inpaint",
            "--iterations", "3", "--adam-steps", "2", "--adam-lrs", "0.1", "--sup-lrs", "1e-3",
            "--jiio-sup-lrs", "1e-4", "--lr-extensions", "0", "--batch-size", "2", "--resamples", "50",
            *[a for flag in ("ae", "mdeq-ae", "jiio-sup", "vae", "mdeq-vae", "jiio100")
              for a in (f"--cpu-minutes-{flag}", "0.0001")]]
    first = tmp_path / "t4.json"
    driver["main"]([*tiny, "--json", str(first)])
    out = json.loads(first.read_text())
    assert list(out["rows"]) == ["ae", "mdeq-ae", "jiio-sup-100", "vae", "mdeq-vae", "jiio-40", "jiio-100", "observed"]
    for row in out["rows"].values():
        c = row["cells"]["inpaint"]
        assert c["ci95_low"] <= c["median"] <= c["ci95_high"] and len(c["psnr"]) == 3
        assert c["median"] == pytest.approx(sorted(c["psnr"])[1], abs=1e-3)
    assert out["rows"]["ae"]["cells"]["inpaint"]["chosen_lr"] == 1e-3
    assert "| unsupervised | JIIO-MDEQ-40 |" in out["table_markdown"]
    second = tmp_path / "t4b.json"
    driver["main"]([*tiny, "--rows", "ae", "--reuse", str(tmp_path / "runs"), "--json", str(second)])
    again = json.loads(second.read_text())
    assert again["rows_measured_now"] == ["ae"]
    assert {k: r["cells"] for k, r in again["rows"].items()} == {k: r["cells"] for k, r in out["rows"].items()}
    with pytest.raises(SystemExit, match="unknown: \\['nope'\\]"):
        driver["main"]([*tiny, "--rows", "nope"])
