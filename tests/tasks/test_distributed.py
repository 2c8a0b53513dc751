"""Data-parallel adversarial training (:mod:`jiio_tasks.distributed`).

Two CPU processes (gloo) take one real training step of a float64 DEQ classifier on the
halves of a global batch; their parameters must equal those of one process stepping on the
whole batch. The same processes run :func:`train` for two steps; a single process resumes
that run (step counter, Adam state) and must land where a single-process run of the same
length lands. Bad batch sizes and launch environments are refused with messages naming them.

The worker processes run this file as a script (``python test_distributed.py RANK ...``):
pytest's importlib mode gives test modules names that a child process cannot import.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from jiio_tasks.adversarial import splits
from jiio_tasks.adversarial import train as adv_train
from jiio_tasks.adversarial.train import AdvTrainConfig, TrainingStep, optimizer_step, train
from jiio_tasks.distributed import DistEnv, launched, rank_seed
from jiio_tasks.runs import RunDir
from jiio_zoo.configs import MDEQConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel, build_model

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
GLOBAL_BATCH = 4
STEP_METHODS: dict[str, dict[str, Any]] = {
    name: {"method": method, "eps": 1.0, "pgd_steps": 3, "jiio_iterations": 15, "jiio_gradient": gradient}
    for name, method, gradient in (
        ("clean", "clean", "examples"),
        ("jiio", "jiio", "examples"),
        ("jiio-shortcut", "jiio", "shortcut"),
        ("pgd", "pgd", "examples"),  # random start: per-rank noise, compared across ranks only
    )
}
DETERMINISTIC = ("clean", "jiio", "jiio-shortcut")
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no gloo backend")


def train_config(steps: int) -> AdvTrainConfig:
    return AdvTrainConfig(config="digits_adv_small", method="jiio", steps=steps, batch_size=GLOBAL_BATCH,
                          jiio_iterations=5, eval_size=6, log_every=1, save_every=1)


def tiny_classifier() -> ZooModel:
    torch.manual_seed(0)
    cfg = ZooConfig(
        name="tiny_ddp_test", task="adversarial", scale="test",
        model=MDEQConfig(image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2,
                         injection="image", head="classification", num_classes=3,
                         head_channels=(2, 4), final_channels=8),
        solver=SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.6), jiio_iterations=15,
                            epsilon=1.0, forward_threshold=40, backward_threshold=40),
        train=TrainConfig(batch_size=GLOBAL_BATCH, learning_rate=1e-3),
    )
    return build_model(cfg).double()


def global_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    images = torch.rand(GLOBAL_BATCH, 1, 8, 8, generator=g, dtype=torch.float64)
    return images, torch.tensor([0, 2, 1, 1])


def one_step(env: DistEnv, method: str) -> tuple[Tensor, float]:
    """Parameters (flat) after one Adam step on this rank's shard, and this rank's loss.
    ``"<method>/mean"``: each rank's loss is its shard's mean and DDP averages (its default)."""
    model = tiny_classifier().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    method, _, rule = method.partition("/")
    if rule == "mean" or not env.is_distributed:
        step = env.wrap(TrainingStep(model, STEP_METHODS[method]), reduce="mean")
    else:
        step = env.wrap(TrainingStep(model, STEP_METHODS[method], GLOBAL_BATCH), reduce="sum")
    images, labels = env.shard(global_batch())
    with env.rank_rng(0, 0):
        loss = optimizer_step(step, opt, images, labels)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), loss


def fake_accuracies(model: ZooModel, images: Tensor, labels: Tensor, eps: float,
                    **_: Any) -> dict[str, float]:
    """A cheap stand-in for the final attacks (~10 s per item on a busy 2-core machine): a fraction
    that depends on which items a rank got, so the sum over shards is checked."""
    del model, images, eps
    n = max(1, len(labels))
    return {"clean": float((labels % 2 == 0).sum()) / n, "pgd": float((labels < 5).sum()) / n, "jiio": 0.0}


def worker(rank: int, init_file: Path, out: Path, run_dir: Path) -> None:
    torch.set_num_threads(1)
    environ = {"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)}
    with launched(environ=environ, init_method=f"file://{init_file}",
                  timeout=datetime.timedelta(seconds=120)) as env:
        steps = {name: one_step(env, name) for name in [*STEP_METHODS, "jiio/mean"]}
        adv_train.robust_accuracies = fake_accuracies  # type: ignore[assignment]
        final = train(RunDir(run_dir), train_config(2), progress=False, env=env)
    torch.save({"steps": steps, "final": final}, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the workers once; their results per rank and the run directory they trained."""
    root = tmp_path_factory.mktemp("ddp")
    run_dir = root / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    logs = [root / f"rank{rank}.log" for rank in range(WORLD)]
    procs = []
    for rank, log in enumerate(logs):  # files, not pipes: a full pipe would stall a rank
        with log.open("w") as fh:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, str(rank), str(root / "pg"), str(root), str(run_dir)],
                env=env, stdout=fh, stderr=subprocess.STDOUT,
            ))
    try:
        for p in procs:
            p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the workers did not finish in 300 s:\n" + "\n".join(log.read_text() for log in logs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{log.read_text()}"
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return {"ranks": ranks, "run": run_dir}


# ---- one step: 2 processes == 1 process on the same global batch ---------------------------


@pytest.mark.parametrize("method", DETERMINISTIC)
@needs_gloo
def test_ddp_step_equals_single_process_step(two_ranks: dict[str, Any], method: str) -> None:
    single, single_loss = one_step(DistEnv(), method)
    start = torch.cat([p.detach().flatten() for p in tiny_classifier().parameters()])
    r0, r1 = (r["steps"][method] for r in two_ranks["ranks"])
    assert torch.equal(r0[0], r1[0])  # DDP keeps the replicas identical
    # each rank's loss is its half's share of the global mean; summed it is the mean
    assert r0[1] + r1[1] == pytest.approx(single_loss, rel=1e-12)
    diff = float((r0[0] - single).abs().max())
    moved = float((single - start).abs().max())
    assert moved > 1e-4  # the step did something (Adam's first step is ~lr per coordinate)
    # measured: <= 3e-16 (float64 summation order), while one DDP step without the global
    # loss normalisation differs by 2e-3 (the backward solves stop elsewhere; Adam amplifies)
    assert diff < 1e-12, diff


@needs_gloo
def test_ddp_step_with_per_shard_mean_loss(two_ranks: dict[str, Any]) -> None:
    """DDP's default rule (mean loss per shard, gradients averaged) is the same gradient in
    exact arithmetic, but each sample's cotangent is doubled, so the implicit backward solves
    (absolute tolerance) stop elsewhere: close to the single-process step, not equal."""
    single, single_loss = one_step(DistEnv(), "jiio")
    r0, r1 = (r["steps"]["jiio/mean"] for r in two_ranks["ranks"])
    assert torch.equal(r0[0], r1[0])
    assert (r0[1] + r1[1]) / 2 == pytest.approx(single_loss, rel=1e-12)
    assert float((r0[0] - single).abs().max()) < 5e-3  # measured 2e-3: a few entries flip


@needs_gloo
def test_ddp_step_with_random_attack_start_keeps_ranks_in_step(two_ranks: dict[str, Any]) -> None:
    r0, r1 = (r["steps"]["pgd"] for r in two_ranks["ranks"])
    assert torch.equal(r0[0], r1[0])
    assert r0[1] != r1[1]  # different samples (and start noise) on each rank


# ---- checkpoints: written by rank 0, independent of the world size -------------------------


@needs_gloo
def test_two_rank_run_resumes_in_one_process(two_ranks: dict[str, Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adv_train, "robust_accuracies", fake_accuracies)
    run2 = RunDir(two_ranks["run"])
    saved = torch.load(run2.state_path, weights_only=True)
    assert saved["step"] == 2
    assert all(s["step"] == 2 for s in saved["optimizers"]["optimizer"]["state"].values())
    assert not any(k.startswith(("module.", "model.")) for k in saved["modules"]["model"])  # unwrapped
    metrics = run2.read_metrics()
    assert [h["step"] for h in metrics["history"]] == [1, 2]
    assert metrics["config"]["batch_size"] == GLOBAL_BATCH and metrics["final"]["steps_done"] == 2

    # the sharded final evaluation is the single-process one on the whole set
    f0, f1 = (r["final"] for r in two_ranks["ranks"])
    assert f0 == f1
    _, te_y = splits.load_split("embedded", "test", None)
    te_y = splits.eval_subset(torch.zeros(len(te_y), 1), te_y, 6)[1]
    whole = fake_accuracies(None, None, te_y, 0.5)  # type: ignore[arg-type]
    assert {k: f0[k] for k in whole} == pytest.approx(whole, abs=1e-15)

    # a single-process run of the same length reaches the same state, up to float32 rounding
    # (measured: 5e-7 at most). A parameter whose gradient is at noise level may take Adam's
    # ~lr-sized step the other way on another CPU, so a few such entries are allowed; a wrong
    # batch, shard or gradient scale would move most entries by ~lr = 1e-3
    ref = RunDir(tmp_path / "ref")
    train(ref, train_config(2), progress=False)
    ref_state = torch.load(ref.state_path, weights_only=True)
    assert ref_state["rng"]["torch"].equal(saved["rng"]["torch"])  # same batches drawn
    _assert_close(saved["modules"]["model"], ref_state["modules"]["model"])

    # resume both at world size 1 for a third step: the counters continue
    final = train(run2, train_config(3), progress=False)
    train(ref, train_config(3), progress=False)
    assert final["steps_done"] == 3
    resumed = torch.load(run2.state_path, weights_only=True)
    assert resumed["step"] == 3
    assert all(s["step"] == 3 for s in resumed["optimizers"]["optimizer"]["state"].values())
    assert [h["step"] for h in run2.read_metrics()["history"]] == [1, 2, 3]
    _assert_same_update(resumed["modules"]["model"], torch.load(ref.state_path, weights_only=True)["modules"]["model"])


def _assert_close(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])
    far = float((diff > 1e-5).double().mean())
    assert far < 1e-3 and float(diff.max()) < 1e-2, (far, float(diff.max()))


def _assert_same_update(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    """A step taken from two states that differ by float32 rounding: the JIIO attack of a few
    iterations and Adam's early, normalised steps amplify the rounding, so entries may differ by
    up to about lr (measured on one CPU, from states 1e-6 apart: median 5e-6, 0.8 % of entries
    beyond lr/10 = 1e-4, max 1.1e-3). A wrong resume moves nearly all of them by ~lr (measured:
    Adam's state dropped, median 8e-4 and 95 % beyond 1e-4; its first moments zeroed, 5e-4 and
    92 %)."""
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])
    far = float((diff > 1e-4).double().mean())
    assert far < 0.05 and float(diff.median()) < 5e-5, (far, float(diff.median()))


# ---- the command under torchrun -------------------------------------------------------------


@pytest.mark.slow
@needs_gloo
def test_cli_under_torchrun_resumes_across_world_sizes(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m jiio_tasks.cli train adversarial`` for a step, one
    process for the next, two again for the third: one run, written by rank 0 only."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    # --run-dir, not its alias --run: torchrun reads that as an abbreviation of its --run-path
    args = ["train", "adversarial", "--run-dir", str(run), "--batch-size", "4", "--jiio-iterations", "5",
            "--eval-size", "2", "--threads", "1", "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "jiio_tasks.cli"]
    single = [sys.executable, "-m", "jiio_tasks.cli"]
    for steps, launcher in ((1, torchrun), (2, single), (3, torchrun)):
        done = subprocess.run([*launcher, *args, "--steps", str(steps)], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("steps_done=") == 1, done.stdout  # rank 0 alone reports
        assert f"steps_done={steps}" in done.stdout
        state = torch.load(run / "state.pt", weights_only=True)
        assert state["step"] == steps
        assert all(s["step"] == steps for s in state["optimizers"]["optimizer"]["state"].values())
    metrics = RunDir(run).read_metrics()
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3]
    assert (run / "model.pt").is_file() and (run / "training_curve.png").is_file()


# ---- bad input --------------------------------------------------------------------------------


def test_indivisible_batch_is_refused(tmp_path: Path) -> None:
    env = DistEnv(rank=1, world_size=WORLD, backend="gloo")
    with pytest.raises(ValueError, match="batch size 5 is not divisible by the world size 2"):
        env.shard(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="one batch size"):
        env.shard((torch.zeros(4), torch.zeros(6)))
    x, y = env.shard((torch.arange(6), torch.arange(6) * 10))
    assert x.tolist() == [3, 4, 5] and y.tolist() == [30, 40, 50]  # contiguous shards
    # train() checks before it builds anything (no process group is needed to fail)
    cfg = AdvTrainConfig(config="digits_adv_small", steps=1, batch_size=5)
    with pytest.raises(ValueError, match="batch_size 5 is not divisible by the world size 2"):
        train(RunDir(tmp_path), cfg, env=env)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORLD_SIZE": "2"}, "RANK is not"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK must be in \[0, WORLD_SIZE=2\), got 2"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer, got 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "needs MASTER_ADDR and MASTER_PORT"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "70000"},
         r"MASTER_PORT must be a TCP port in \[1, 65535\], got 70000"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1, got 0"),
    ],
)
def test_bad_launch_environment_is_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistEnv.from_environment(environ=environ)


def test_bad_fields_are_refused() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        DistEnv(rank=2, world_size=2, backend="gloo")
    with pytest.raises(ValueError, match="world_size=2 needs backend 'gloo' or 'nccl'"):
        DistEnv(rank=0, world_size=2)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        DistEnv.from_environment("meta", environ={})
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'sum'"):
        DistEnv().wrap(torch.nn.Linear(1, 1), reduce="max")  # type: ignore[arg-type]


# ---- a single process: everything is the identity ------------------------------------------


def test_single_process_environment_changes_nothing() -> None:
    env = DistEnv.from_environment(environ={})
    assert (env.rank, env.world_size, env.backend, env.is_main, env.is_distributed) == (0, 1, "none", True, False)
    assert env == DistEnv.from_environment(environ={"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"})
    module = torch.nn.Linear(2, 2)
    assert env.wrap(module) is module
    batch = torch.arange(5)
    assert torch.equal(env.shard(batch), batch)
    assert env.mean({"loss": 1.5}) == {"loss": 1.5} and env.max({"s": 2.0}) == {"s": 2.0}
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    with env.rank_rng(0, 0):  # the global stream, as always
        assert torch.equal(torch.rand(2), expected)
    env.barrier()
    env.shutdown()


def test_rank_streams_are_distinct_reproducible_and_leave_the_global_stream_alone() -> None:
    envs = [DistEnv(rank=r, world_size=WORLD, backend="gloo") for r in range(WORLD)]
    torch.manual_seed(11)
    before = torch.get_rng_state()
    draws = []
    for env in envs:
        with env.rank_rng(7, 3):
            draws.append(torch.rand(4))
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(draws[0], draws[1])
    with envs[1].rank_rng(7, 3):
        assert torch.equal(torch.rand(4), draws[1])
    with envs[1].rank_rng(7, 4):
        assert not torch.equal(torch.rand(4), draws[1])
    seeds = {rank_seed(s, k, r) for s in range(3) for k in range(3) for r in range(3)}
    assert len(seeds) == 27 and all(0 <= s < 2**63 for s in seeds)


if __name__ == "__main__":
    worker(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
