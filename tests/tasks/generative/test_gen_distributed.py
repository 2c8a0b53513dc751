"""Data-parallel generative training (:func:`jiio_tasks.generative.train.train` with a
:class:`~jiio_tasks.distributed.DistEnv`).

Two CPU processes (gloo) train a float64 tiny decoder for two steps on the halves of each
global batch; the parameters must equal those of one process training on the whole batches,
and the logged losses must be the global-batch means. A single process then resumes the run
that two processes wrote. The workers run this file as a script (pytest's importlib mode
gives test modules names that a child process cannot import).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch
import torch.distributed as dist

from jiio_tasks.distributed import DistEnv, launched
from jiio_tasks.generative.train import TrainSettings, train
from jiio_tasks.runs import RunDir

try:
    from .tiny import image_source, params, tiny_decoder
except ImportError:  # run as a worker script: no parent package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny import image_source, params, tiny_decoder  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[3]

WORLD = 2
SETTINGS = TrainSettings(steps=2, batch_size=4, jac_reg=0.0, iterations=8, save_every=1, seed=3)
# latents and states cached per example, gathered over ranks
WARM = attrs.evolve(SETTINGS, steps=3, warm_start=True, warm_start_state=True)


def _train(run_dir: Path, settings: TrainSettings, env: DistEnv | None = None) -> torch.Tensor:
    model = tiny_decoder(dtype=torch.float64)
    train(model, image_source(torch.float64), RunDir(run_dir), settings, progress=False, env=env)
    return params(model)


def worker(rank: int, init_file: Path, run_dir: Path, out: Path, warm: bool) -> None:
    torch.set_num_threads(1)
    environ = {"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)}
    with launched(environ=environ, init_method=f"file://{init_file}",
                  timeout=datetime.timedelta(seconds=120)) as env:
        params = _train(run_dir, WARM if warm else SETTINGS, env)
    torch.save(params, out / f"params{rank}.pt")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend")
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm-start"])
def test_two_processes_train_like_one_and_a_single_process_resumes(tmp_path: Path, warm: bool) -> None:
    settings = WARM if warm else SETTINGS
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"worker{r}.log" for r in range(WORLD)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as fh:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, str(rank), str(tmp_path / "pg"), str(run_dir), str(tmp_path),
                 "warm" if warm else "cold"],
                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
            ))
    try:
        for p in procs:
            p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("workers did not finish in 300 s:\n" + "\n".join(x.read_text() for x in logs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(x.read_text() for x in logs)

    single = _train(tmp_path / "single", settings)
    p0, p1 = (torch.load(tmp_path / f"params{r}.pt") for r in range(WORLD))
    assert torch.equal(p0, p1)  # replicas in step
    assert float((p0 - single).abs().max()) < 1e-12 * max(1.0, float(single.abs().max()))
    assert not torch.allclose(single, params(tiny_decoder(dtype=torch.float64)))  # training moved θ

    # logged losses are global-batch means, equal to the single process's; rank 0 wrote alone
    hist = json.loads((run_dir / "metrics.json").read_text())["history"]
    ref = json.loads((tmp_path / "single" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in hist] == list(range(1, settings.steps + 1))
    for h, r in zip(hist, ref, strict=True):
        assert h["loss"] == pytest.approx(r["loss"], rel=1e-10)
        assert h["inner_loss"] == pytest.approx(r["inner_loss"], rel=1e-10)
        assert h.get("warm_fraction") == r.get("warm_fraction")
    if warm:  # some examples came back and started from their cached latents
        assert sum(h["warm_fraction"] for h in hist) > 0

    # the 2-process run resumes in one process (checkpoints do not depend on the world size)
    more = attrs.evolve(settings, steps=settings.steps + 1)
    resumed = _train(run_dir, more)
    assert [h["step"] for h in json.loads((run_dir / "metrics.json").read_text())["history"]] == \
        list(range(1, more.steps + 1))
    assert not torch.equal(resumed, p0)


def test_indivisible_batch_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    env = DistEnv(rank=0, world_size=3, backend="gloo")
    with pytest.raises(ValueError, match="batch_size 4 is not divisible by the world size 3"):
        _train(tmp_path / "run", SETTINGS, env)
    assert not (tmp_path / "run" / "metrics.json").exists()


if __name__ == "__main__":
    worker(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5] == "warm")
