"""Multi-process data-parallel training: the process group, batch shards and rank-0 duties.

A trainer launched by ``torchrun --nproc_per_node N`` reads its place in the job with
[`DistEnv.from_environment`][jiio_tasks.distributed.DistEnv.from_environment] (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), which joins the process group (gloo on CPU, nccl on CUDA). Launched
without those variables, or with ``WORLD_SIZE=1``, it gets a single-process environment in
which every method below is the identity or a no-op, so a trainer written against
[`DistEnv`][jiio_tasks.distributed.DistEnv] behaves exactly as before when run as one process.

The recipe (see docs/distributed.md):

- every rank draws the same *global* batch (same seed, same generator calls) and trains on
  its contiguous shard, [`DistEnv.shard`][jiio_tasks.distributed.DistEnv.shard]; inner problems (attacks, joint solves) are per
  sample, so each rank just solves its own shard;
- the module whose ``forward`` computes the loss is wrapped by [`DistEnv.wrap`][jiio_tasks.distributed.DistEnv.wrap]
  (``DistributedDataParallel``), which averages the parameter gradients over the ranks: with
  equal shards of a mean loss, that is the gradient of the mean over the global batch;
- randomness that belongs to a sample's computation (a random attack start, dropout masks)
  comes from [`DistEnv.rank_rng`][jiio_tasks.distributed.DistEnv.rank_rng], a stream of its own per (seed, step, rank), so that
  the shared stream that draws the batches stays in step on all ranks;
- only [`DistEnv.is_main`][jiio_tasks.distributed.DistEnv.is_main] writes files; checkpoints hold the unwrapped module.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar, overload

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from jiio_core.validators import int_in

__all__ = ["Backend", "DistEnv", "launched", "rank_seed"]

Backend = Literal["none", "gloo", "nccl"]
"""``"none"``: a single process without a process group."""

_T = TypeVar("_T")


def _check_env(env: DistEnv, _: attrs.Attribute[Any], world_size: int) -> None:
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if env.rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {env.rank}")
    if world_size > 1 and env.backend == "none":
        raise ValueError(f"world_size={world_size} needs backend 'gloo' or 'nccl', got 'none'")


def _check_backend(_: object, a: attrs.Attribute[Any], value: object) -> None:
    if value not in ("none", "gloo", "nccl"):
        raise ValueError(f"{a.name} must be one of ('none', 'gloo', 'nccl'), got {value!r}")


@attrs.frozen(kw_only=True)
class DistEnv:
    """This process's place in a data-parallel job (``world_size == 1``: a single process)."""

    rank: int = attrs.field(default=0, validator=int_in(0))
    world_size: int = attrs.field(default=1, validator=_check_env)
    local_rank: int = attrs.field(default=0, validator=int_in(0))
    backend: Backend = attrs.field(default="none", validator=_check_backend)
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"), converter=torch.device)
    owns_group: bool = False
    """Whether this environment created the process group (and [`shutdown`][jiio_tasks.distributed.DistEnv.shutdown] ends it)."""

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_environment(
        cls,
        device: str | torch.device = "cpu",
        *,
        environ: Mapping[str, str] | None = None,
        init_method: str | None = None,
        backend: Backend | None = None,
        timeout: datetime.timedelta | None = None,
    ) -> DistEnv:
        """The environment torchrun describes in ``environ`` (default ``os.environ``), joining
        its process group; a single-process environment when ``WORLD_SIZE`` is unset or 1.

        ``device`` ``"cuda"`` puts the rank on ``cuda:LOCAL_RANK`` (and defaults the backend to
        nccl); ``"cpu"`` uses gloo. ``init_method`` defaults to ``env://`` (``MASTER_ADDR`` and
        ``MASTER_PORT``; spelled ``tcp://MASTER_ADDR:MASTER_PORT`` for an ``environ`` passed in);
        any ``torch.distributed`` URL works, e.g. ``file:///tmp/pg`` in tests. A process
        group that already exists is used as it is (and left alone by [`shutdown`][jiio_tasks.distributed.DistEnv.shutdown]).
        """
        env = os.environ if environ is None else environ
        kind = torch.device(device).type
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        world_size = _env_int(env, "WORLD_SIZE", 1, low=1)
        local_rank = _env_int(env, "LOCAL_RANK", 0, low=0)
        dev = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                    "visible; launch at most that many processes per node"
                )
            torch.cuda.set_device(dev)
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       backend=_known_backend(dist.get_backend()), device=dev)
        if world_size == 1:
            return cls(local_rank=local_rank, device=dev)
        if "RANK" not in env:
            raise ValueError(f"WORLD_SIZE={world_size} is set but RANK is not; launch with torchrun")
        rank = _env_int(env, "RANK", 0, low=0)
        if rank >= world_size:
            raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
        chosen: Backend = backend if backend is not None else ("nccl" if kind == "cuda" else "gloo")
        if chosen == "none":
            raise ValueError(f"backend 'none' cannot run WORLD_SIZE={world_size} processes")
        if init_method is None:
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
            if missing:
                raise ValueError(f"WORLD_SIZE={world_size} needs {' and '.join(missing)} (or an init_method)")
            port = _env_int(env, "MASTER_PORT", 0, low=1)
            if port > 65535:
                raise ValueError(f"MASTER_PORT must be a TCP port in [1, 65535], got {port}")
            # torch reads os.environ itself; a mapping passed in is spelled out as a URL
            addr = env["MASTER_ADDR"]
            host = f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr
            init_method = "env://" if environ is None else f"tcp://{host}:{port}"
        if not dist.is_available():
            raise RuntimeError("this torch build has no torch.distributed")
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if chosen == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(chosen, init_method=init_method, rank=rank, world_size=world_size, **kwargs)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, backend=chosen,
                   device=dev, owns_group=True)

    # ---- roles ----------------------------------------------------------------------------

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, metrics, plots and progress bars."""
        return self.rank == 0

    # ---- data -----------------------------------------------------------------------------

    def shard_bounds(self, size: int, *, name: str = "batch size") -> tuple[int, int]:
        """``[start, stop)`` of this rank's contiguous, equal part of ``size`` items; raises
        ``ValueError`` (naming ``name``) unless ``size`` divides evenly over the ranks."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{name} must be an int >= 1, got {size!r}")
        if size % self.world_size:
            raise ValueError(
                f"{name} {size} is not divisible by the world size {self.world_size}: every rank "
                f"takes an equal contiguous shard; use a multiple of {self.world_size}"
            )
        part = size // self.world_size
        return self.rank * part, (self.rank + 1) * part

    @overload
    def shard(self, batch: Tensor) -> Tensor: ...
    @overload
    def shard(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]: ...

    def shard(self, batch: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        """This rank's contiguous shard (along dim 0) of a global batch, or of each tensor of a
        tuple of equally long ones."""
        tensors = (batch,) if isinstance(batch, Tensor) else tuple(batch)
        if not tensors or any(not isinstance(t, Tensor) or t.ndim == 0 for t in tensors):
            raise ValueError("shard takes a tensor or a tuple of tensors with a batch dimension")
        sizes = {int(t.shape[0]) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"shard takes tensors of one batch size, got sizes {sorted(sizes)}")
        lo, hi = self.shard_bounds(sizes.pop())
        parts = tuple(t[lo:hi] for t in tensors)
        return parts[0] if isinstance(batch, Tensor) else parts

    # ---- model ----------------------------------------------------------------------------

    def wrap(self, module: nn.Module, *, reduce: Literal["mean", "sum"] = "mean", **ddp: Any) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (extra keyword arguments go to it), or
        ``module`` itself in a single process. Checkpoint the unwrapped module, never this.

        ``reduce="mean"`` (DDP's own rule) averages the gradients over the ranks: right when
        each rank's loss is the mean over its shard. ``"sum"`` adds them up: right when each
        rank's loss is the sum over its shard divided by the *global* batch size, which keeps
        every sample's cotangent the same as in a single process (see
        [`training_loss`][jiio_tasks.adversarial.train.training_loss] for why that matters to DEQs)."""
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        if not self.is_distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=ids, **ddp)
        if reduce == "sum":
            wrapped.register_comm_hook(None, _allreduce_sum)
        return wrapped

    @contextlib.contextmanager
    def rank_rng(self, seed: int, step: int) -> Iterator[None]:
        """Within the block, torch's global RNG (CPU and, on CUDA, this rank's device) is a
        stream of its own for ``(seed, step, rank)``; afterwards it is back where it was. In a
        single process this does nothing: the global stream is used as always."""
        if not self.is_distributed:
            yield
            return
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            s = rank_seed(seed, step, self.rank)
            torch.default_generator.manual_seed(s)
            if self.device.type == "cuda":
                torch.cuda.manual_seed(s)
            yield

    # ---- collectives ----------------------------------------------------------------------

    def _reduce(self, values: Mapping[str, float], op: Any) -> dict[str, float]:
        out = {k: float(v) for k, v in values.items()}
        if not self.is_distributed or not out:
            return out
        t = torch.tensor(list(out.values()), dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=op)
        return dict(zip(out, t.tolist(), strict=True))

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each scalar averaged over the ranks (for logging), identical on every rank."""
        summed = self.sum(values)
        return {k: v / self.world_size for k, v in summed.items()}

    def sum(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each scalar summed over the ranks, identical on every rank."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each scalar's maximum over the ranks, identical on every rank (e.g. wall time)."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def gather(self, shard: Tensor) -> Tensor:
        """The global batch from every rank's equal shard (concatenated in rank order along
        dim 0), identical on every rank; ``shard`` itself in a single process."""
        if not self.is_distributed:
            return shard
        parts = [torch.empty_like(shard) for _ in range(self.world_size)]
        dist.all_gather(parts, shard.contiguous())
        return torch.cat(parts)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.is_distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def shutdown(self) -> None:
        """End the process group this environment created (after a barrier); idempotent."""
        if self.owns_group and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _allreduce_sum(state: object, bucket: Any) -> torch.futures.Future[Tensor]:
    """DDP communication hook: the bucket's gradients summed over the ranks (not averaged)."""
    del state
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()

    def first(f: torch.futures.Future[list[Tensor]]) -> Tensor:
        return f.value()[0]

    return fut.then(first)


# DDP checks a hook's annotations against the objects themselves, and postponed evaluation
# (``from __future__ import annotations``) leaves strings there
_allreduce_sum.__annotations__.update(
    {"bucket": dist.GradBucket, "return": torch.futures.Future[Tensor]}  # type: ignore[attr-defined]
)


def rank_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for ``(seed, step, rank)``: unrelated streams for neighbouring values."""
    digest = hashlib.blake2b(f"jiio:{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def launched(device: str | torch.device = "cpu", **kwargs: Any) -> Iterator[DistEnv]:
    """[`DistEnv.from_environment`][jiio_tasks.distributed.DistEnv.from_environment] for the duration of the block, then
    [`DistEnv.shutdown`][jiio_tasks.distributed.DistEnv.shutdown]; when the block raises, the group is torn down without waiting
    for the other ranks (they may never reach a barrier)."""
    env = DistEnv.from_environment(device, **kwargs)
    try:
        yield env
    except BaseException:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        raise
    env.shutdown()


def _env_int(env: Mapping[str, str], key: str, default: int, *, low: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an integer, got {raw!r}") from None
    if value < low:
        raise ValueError(f"environment variable {key} must be >= {low}, got {value}")
    return value


def _known_backend(name: object) -> Backend:
    text = str(name).lower()
    if text in ("gloo", "nccl"):
        return text  # type: ignore[return-value]
    raise ValueError(f"the existing process group uses backend {text!r}; jiio supports gloo and nccl")
