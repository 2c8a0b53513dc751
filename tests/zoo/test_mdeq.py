"""MDEQ layer: shapes, an independent functional re-implementation, per-sample independence,
variational dropout, weight norm, FiLM and convergence of plain damped iteration at init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core.layer import Layer
from jiio_zoo.configs import CONFIGS
from jiio_zoo.mdeq import MDEQCell, MDEQLayer, ResidualBlock, branch_shapes
from jiio_zoo.model import build_model

from .tiny import tiny_input, tiny_model

MDEQ_TASKS = ("adversarial", "generative", "meta")


def _layer(model: object) -> MDEQLayer:
    layer = model.layer  # type: ignore[attr-defined]
    assert isinstance(layer, MDEQLayer)
    return layer


def _rand_state(layer: MDEQLayer, x: Tensor, seed: int, context: Tensor | None = None) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z0 = layer.init_state(x, context)
    return tuple(torch.randn(p.shape, generator=g, dtype=p.dtype) for p in z0)


# --------------------------------------------------------------------------- reference


def _w(conv: nn.Module) -> Tensor:
    """Effective conv weight, recomputed by hand from weight norm's (g, v) when present."""
    if hasattr(conv, "parametrizations"):
        g = conv.parametrizations.weight.original0
        v = conv.parametrizations.weight.original1
        return g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return conv.weight


def _gn(norm: nn.GroupNorm, t: Tensor) -> Tensor:
    # GroupNorm by hand: per sample and group, zero mean and unit (biased) variance.
    n, c = t.shape[:2]
    g = t.reshape(n, norm.num_groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + norm.eps)
    return g.reshape(t.shape) * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)


def _block_ref(b: ResidualBlock, z: Tensor, inj: Tensor, film: Tensor | None) -> Tensor:
    u = _gn(b.gn1, F.conv2d(z, _w(b.conv1), padding=1))
    if film is not None:
        scale, shift = film.chunk(2, dim=1)
        u = u * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    u = F.relu(u)
    v = F.conv2d(u, _w(b.conv2), padding=1)
    if b.drop.active:
        assert b.drop.mask is not None
        v = v * b.drop.mask
    v = _gn(b.gn2, v + inj)
    return _gn(b.gn3, F.relu(v + z))


def _cell_ref(cell: MDEQCell, z: tuple[Tensor, ...], maps: tuple[Tensor, ...],
              film: tuple[Tensor, ...] | None) -> tuple[Tensor, ...]:
    """Two-branch MDEQ cell written from the paper's description with functional ops."""
    assert cell.num_branches == 2
    b = [_block_ref(cell.blocks[i], z[i], maps[i], None if film is None else film[i]) for i in range(2)]
    up = cell.fuse[0][1]
    down = cell.fuse[1][0]
    to0 = _gn(up.gn, F.conv2d(b[1], up.conv.weight))
    to0 = F.interpolate(to0, size=b[0].shape[-2:], mode="nearest")
    to1 = _gn(down[1], F.conv2d(b[0], down[0].weight, stride=2, padding=1))
    out = []
    for i, total in enumerate((b[0] + to0, b[1] + to1)):
        post = cell.post[i]
        out.append(_gn(post[2], F.conv2d(F.relu(total), _w(post[1]))))
    return tuple(out)


@pytest.mark.parametrize("task", MDEQ_TASKS)
def test_cell_matches_functional_reference(task: str) -> None:
    model = tiny_model(task, dropout=0.3)
    layer = _layer(model)
    layer.train()
    x, c = tiny_input(model, batch=3)
    z = layer.init_state(x, c)  # draws the dropout masks
    z = _rand_state(layer, x, seed=5, context=c)
    out = layer(z, x, c)
    inputs = layer.injection(x, c)
    flat = lambda t: t.reshape(-1, *t.shape[-3:])  # noqa: E731
    film = inputs.film
    if film is not None:
        s = z[0].shape[1]
        film = tuple(f.repeat_interleave(s, 0) for f in film)
    ref = _cell_ref(layer.cell, tuple(map(flat, z)), tuple(map(flat, inputs.maps)), film)
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(flat(o), r, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("task", MDEQ_TASKS)
def test_shapes(task: str) -> None:
    model = tiny_model(task)
    layer = _layer(model)
    assert isinstance(layer, Layer)
    x, c = tiny_input(model, batch=2, support=3)
    z = layer.init_state(x, c)
    lead = (2, 3) if task == "meta" else (2,)
    assert tuple(p.shape for p in z) == ((*lead, 4, 8, 8), (*lead, 8, 4, 4))
    assert all(bool((p == 0).all()) for p in z)
    out = layer(z, x, c)
    assert tuple(o.shape for o in out) == tuple(p.shape for p in z)
    y = model.decode(out)
    expected = {"adversarial": (2, 3), "generative": (2, 1, 8, 8), "meta": (2, 3, 3)}[task]
    assert tuple(y.shape) == expected


def test_branch_shapes_round_up_like_stride2_convs() -> None:
    shapes = branch_shapes((2, 3, 4), 25)
    assert shapes == ((2, 25, 25), (3, 13, 13), (4, 7, 7))
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    t = torch.zeros(1, 1, 25, 25)
    for _, h, _ in shapes:
        assert t.shape[-1] == h
        t = conv(t)


def test_odd_image_size_runs() -> None:
    model = tiny_model("generative", image_size=7)
    x, _ = tiny_input(model, batch=2)
    z = model.layer.init_state(x)
    assert [tuple(p.shape[-2:]) for p in z] == [(7, 7), (4, 4)]
    assert [o.shape for o in model.layer(z, x)] == [p.shape for p in z]


def test_shape_errors_name_the_problem() -> None:
    model = tiny_model("generative")
    x, _ = tiny_input(model, batch=2)
    z = model.layer.init_state(x)
    with pytest.raises(ValueError, match=r"state branch 1 must have shape"):
        model.layer((z[0], z[1][:, :, :2]), x)
    with pytest.raises(ValueError, match=r"expects a state of 2 branch tensors"):
        model.layer((z[0],), x)
    with pytest.raises(ValueError, match=r"LatentInjection expects x of shape \(B, 6\)"):
        model.layer(z, x[:, :5])


# --------------------------------------------------------------------------- independence


def test_no_batchnorm_anywhere() -> None:
    for task in MDEQ_TASKS:
        model = tiny_model(task)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("task", MDEQ_TASKS)
@pytest.mark.parametrize("train", [False, True])
def test_per_sample_independence(task: str, train: bool) -> None:
    """Sample 0's output must not change when the other samples change, and must equal the
    output of a batch holding sample 0 alone (catches any batch-statistics coupling)."""
    model = tiny_model(task, dropout=0.2)
    layer = _layer(model)
    layer.train(train)
    x, context = tiny_input(model, batch=4)
    layer.init_state(x, context)
    z = _rand_state(layer, x, seed=3, context=context)
    out = layer(z, x, context)
    head_out = model.decode(out)

    x2, z2 = x.clone(), tuple(p.clone() for p in z)
    x2[1:] = torch.randn_like(x2[1:]) * 5
    for p in z2:
        p[1:] = torch.randn_like(p[1:]) * 3
    c2 = None
    if context is not None:
        c2 = context.clone()
        c2[1:] = torch.rand_like(c2[1:])
    out2 = layer(z2, x2, c2)
    for a, b in zip(out, out2, strict=True):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(head_out[0], model.decode(out2)[0], rtol=0, atol=1e-12)

    # Alone in a batch of one (same dropout mask row).
    for d in layer.cell.dropouts():
        if d.mask is not None:
            rows = d.mask.shape[0] // 4
            d.mask = d.mask[:rows]
    alone = layer(tuple(p[:1] for p in z), x[:1], None if context is None else context[:1])
    for a, b in zip(out, alone, strict=True):
        torch.testing.assert_close(a[:1], b, rtol=1e-10, atol=1e-12)


def test_film_tasks_are_independent_and_share_the_task_vector() -> None:
    model = tiny_model("meta")
    layer = _layer(model)
    x, images = tiny_input(model, batch=2, support=3)
    assert images is not None
    z = _rand_state(layer, x, seed=4, context=images)
    out = layer(z, x, images)
    # Image s of task b equals a task holding that image alone, with the same task vector.
    for b in range(2):
        for s in range(3):
            single = layer(tuple(p[b : b + 1, s : s + 1] for p in z), x[b : b + 1], images[b : b + 1, s : s + 1])
            for o, r in zip(out, single, strict=True):
                torch.testing.assert_close(o[b, s], r[0, 0], rtol=1e-10, atol=1e-12)


@torch.no_grad()
def test_film_is_identity_at_zero_task_vector_and_acts_otherwise() -> None:
    model = tiny_model("meta")
    layer = _layer(model)
    x, c = tiny_input(model, batch=2)
    z = _rand_state(layer, x, seed=2, context=c)
    zero = torch.zeros_like(x)
    inputs = layer.injection(zero, c)
    plain = layer.cell(
        [p.reshape(-1, *p.shape[2:]) for p in z],
        type(inputs)(tuple(m.reshape(-1, *m.shape[2:]) for m in inputs.maps), None),
    )
    for a, b in zip(layer(z, zero, c), plain, strict=True):
        torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-12, atol=1e-12)
    moved = layer(z, x, c)
    gap = max(float((a.reshape(b.shape) - b).abs().max()) for a, b in zip(moved, plain, strict=True))
    assert gap > 1e-3


@torch.no_grad()
def test_film_with_a_task_head_reads_only_its_code() -> None:
    """With ``task_head_dim`` the task vector is the FiLM code followed by the classifier; the
    layer reads the code alone (the classifier only reaches the head)."""
    model = tiny_model("meta", task_head_dim=3)
    assert model.x_shape == (5 + 3 * 3,)
    layer = _layer(model)
    x, c = tiny_input(model, batch=2)
    z = _rand_state(layer, x, seed=2, context=c)
    other = x.clone()
    other[:, 5:] = torch.randn(2, 9, dtype=x.dtype)
    for a, b in zip(layer(z, x, c), layer(z, other, c), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"FiLMInjection expects x of shape \(B, 14\), got \(2, 5\)"):
        layer(z, x[:, :5], c)


def test_image_injection_context_adds_the_perturbation() -> None:
    model = tiny_model("adversarial")
    layer = _layer(model)
    clean = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    delta = 0.1 * torch.randn(3, 1, 8, 8, dtype=torch.float64)
    z = _rand_state(layer, clean, seed=1)
    direct = layer(z, clean + delta)
    perturbed = layer(z, delta, clean)
    for a, b in zip(direct, perturbed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the context is an argument of that call only: the next call without one sees x as the image
    for a, b in zip(layer(z, delta), layer(z, delta, torch.zeros_like(clean)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"context has batch 3 but x has batch 2"):
        layer(tuple(p[:2] for p in z), delta[:2], clean)
    with pytest.raises(ValueError, match=r"ImageInjection context \(the clean images\) must be a \(B, 1, 8, 8\)"):
        layer(z, delta, clean[:, :, :4])


def test_missing_film_context_is_a_clear_error() -> None:
    """A context-needing injection called without its context names what is missing."""
    model = tiny_model("meta")
    layer = _layer(model)
    x = torch.zeros(2, 5, dtype=torch.float64)
    missing = r"FiLMInjection needs a context: each task's images, a \(B, S, 1, 8, 8\) tensor; pass it"
    with pytest.raises(TypeError, match=missing):
        layer.init_state(x)
    images = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    z = layer.init_state(x, images)
    with pytest.raises(TypeError, match=missing):
        layer(z, x)
    with pytest.raises(TypeError, match=missing):
        model(x)  # the whole model as a function: the same message from its DEQ solve
    with pytest.raises(ValueError, match=r"FiLMInjection context holds 1 tasks but x has batch 2"):
        layer(z, x, images[:1])


def test_injection_gradient_reaches_x() -> None:
    """JIIO needs J_xᵀμ: the vector-Jacobian product w.r.t. x must match finite differences."""
    model = tiny_model("generative")
    x = tiny_input(model, batch=1)[0].requires_grad_(True)
    z = _rand_state(_layer(model), x, seed=0)
    mu = tuple(torch.randn_like(p) for p in z)
    (g,) = torch.autograd.grad(sum((o * m).sum() for o, m in zip(model.layer(z, x), mu, strict=True)), x)
    e = torch.randn_like(x)
    h = 1e-6
    with torch.no_grad():
        fp = sum((o * m).sum() for o, m in zip(model.layer(z, x + h * e), mu, strict=True))
        fm = sum((o * m).sum() for o, m in zip(model.layer(z, x - h * e), mu, strict=True))
    torch.testing.assert_close((g * e).sum(), (fp - fm) / (2 * h), rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- dropout


@torch.no_grad()
def test_dropout_mask_fixed_across_iterations_and_off_in_eval() -> None:
    model = tiny_model("generative", dropout=0.5)
    layer = _layer(model)
    layer.train()
    x, _ = tiny_input(model, batch=3)
    layer.init_state(x)
    z = _rand_state(layer, x, seed=7)
    masks = [d.mask for d in layer.cell.dropouts()]
    for d, m in zip(layer.cell.dropouts(), masks, strict=True):
        assert m is not None
        assert m.shape == (3, d.channels, 1, 1)  # per sample, per channel
        assert set(torch.unique(m).tolist()) <= {0.0, 2.0}
    a = layer(z, x)
    b = layer(z, x)  # a later iteration: the same mask
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for d, m in zip(layer.cell.dropouts(), masks, strict=True):
        assert d.mask is m
    layer.reset_dropout(3, like=x, generator=torch.Generator().manual_seed(123))
    c = layer(z, x)
    assert max(float((p - q).abs().max()) for p, q in zip(a, c, strict=True)) > 1e-6

    # Eval mode: dropout is the identity, i.e. the output equals a dropout-free twin's.
    twin = tiny_model("generative", dropout=0.0)
    twin.load_state_dict(model.state_dict())
    model.eval()
    twin.eval()
    for p, q in zip(model.layer(z, x), twin.layer(z, x), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_dropout_without_mask_or_wrong_batch_raises() -> None:
    model = tiny_model("generative", dropout=0.5)
    layer = _layer(model)
    layer.train()
    x, _ = tiny_input(model, batch=3)
    z = tuple(torch.randn(3, *s, dtype=x.dtype) for s in layer.shapes)
    with pytest.raises(RuntimeError, match=r"no mask was drawn"):
        layer(z, x)
    layer.reset_dropout(2, like=x)
    with pytest.raises(ValueError, match=r"drawn for batch 2 but the state has batch 3"):
        layer(z, x)


# --------------------------------------------------------------------------- weight norm


def test_weight_norm_on_block_and_post_fusion_convs_only() -> None:
    layer = _layer(tiny_model("generative"))
    cell = layer.cell
    wn = [b.conv1 for b in cell.blocks] + [b.conv2 for b in cell.blocks] + [p[1] for p in cell.post]
    for conv in wn:
        assert hasattr(conv, "parametrizations") and "weight" in conv.parametrizations
        g = conv.parametrizations.weight.original0
        v = conv.parametrizations.weight.original1
        assert g.shape == (conv.out_channels, 1, 1, 1)
        torch.testing.assert_close(conv.weight, g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        # Scaling v leaves the effective weight unchanged (the defining property).
        with torch.no_grad():
            before = conv.weight.clone()
            v.mul_(3.0)
            torch.testing.assert_close(conv.weight, before)
    for path in (cell.fuse[0][1], cell.fuse[1][0]):
        assert not any(hasattr(m, "parametrizations") for m in path.modules())
    plain = _layer(tiny_model("generative", weight_norm=False))
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


# --------------------------------------------------------------------------- convergence


def _damped(
    layer: MDEQLayer, x: Tensor, alpha: float, iters: int, tol: float, context: Tensor | None = None
) -> tuple[tuple[Tensor, ...], float]:
    """Plain damped iteration ``z ← (1−α) z + α f(z, x)`` until the relative residual < tol."""
    with torch.no_grad():
        z = layer.init_state(x, context)
        res = float("inf")
        for _ in range(iters):
            fz = layer(z, x, context)
            num = sum(float((a - b).pow(2).sum()) for a, b in zip(fz, z, strict=True))
            den = sum(float(a.pow(2).sum()) for a in fz)
            res = (num / den) ** 0.5
            z = tuple((1 - alpha) * a + alpha * b for a, b in zip(z, fz, strict=True))
            if res < tol:
                break
    return z, res


@pytest.mark.parametrize("task", MDEQ_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_damped_iteration_converges_at_init(task: str, seed: int) -> None:
    model = tiny_model(task, seed=seed).eval()
    layer = _layer(model)
    x, c = tiny_input(model, batch=2, seed=seed + 10)
    z, res = _damped(layer, x, alpha=0.8, iters=150, tol=1e-10, context=c)
    assert res < 1e-10
    with torch.no_grad():
        for a, b in zip(layer(z, x, c), z, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


@torch.no_grad()
def test_post_norm_init_sets_the_state_scale() -> None:
    """The post-fusion GroupNorm weight is the documented ``post_norm_init`` and scales f."""
    for scale in (0.25, 1.0):
        layer = _layer(tiny_model("generative", post_norm_init=scale))
        for post in layer.cell.post:
            assert bool((post[2].weight == scale).all())
        x, _ = tiny_input(tiny_model("generative"), batch=2)
        out = layer(layer.init_state(x), x)
        # GroupNorm output has zero mean and unit variance per group (up to its eps, which
        # matters here because the small-init 1×1 conv feeds it small values): RMS ≈ weight.
        for o in out:
            rms = float(o.pow(2).mean().sqrt())
            assert abs(rms - scale) < 0.05 * scale


def test_paper_config_builds_an_mdeq_layer() -> None:
    with torch.device("meta"):
        model = build_model(CONFIGS["cifar10_adv"])
    layer = _layer(model)
    assert layer.shapes == ((24, 32, 32), (24, 16, 16))
    assert layer.cell.expansion == 5
    assert layer.cell.blocks[0].gn1.num_groups == 8
