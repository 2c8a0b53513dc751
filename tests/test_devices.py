"""Device correctness, checked on the source (issue 13, item 7).

Every call to a ``torch`` tensor factory in jiio_core, jiio_zoo and jiio_tasks must say where
its result lives; otherwise it lands on the CPU and crashes the first time it meets a CUDA
tensor. A call passes when

* it passes ``device=`` (or a ``**`` mapping, which is trusted to carry it), or
* its result is moved at once: ``torch.f(...).to(<device or tensor>)``, also after indexing
  (``torch.f(...)[:k].to(...)``); a ``.to`` of only a dtype does not count, or
* its result is read back at once as a Python number: ``int(torch.f(...))``, ``float``,
  ``bool`` (also of a comparison or arithmetic on it), ``.item()``, ``.tolist()``, or
* it is module state built in a constructor, inside ``nn.Parameter(...)`` or the value of
  ``register_buffer(name, ...)``: ``module.to(device)`` moves those.

The ``*_like`` factories and ``Tensor.new_*`` take their device from a tensor and are never
checked. ``torch.Generator(...)`` without ``device=`` is a CPU generator and is flagged too: a
CUDA draw with it fails. ``torch.from_numpy`` has no device argument and is always CPU: it is
data loading, moved by the caller, and is not checked.

What is CPU by design sits in ``ALLOWED``: file, a substring of the call's source lines, and
the reason. Stale entries fail the test too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jiio_core", "jiio_zoo", "jiio_tasks")

FACTORIES = frozenset({
    "zeros", "ones", "full", "empty", "empty_strided", "arange", "range", "linspace",
    "logspace", "rand", "randn", "randint", "randperm", "normal", "eye", "tensor",
    "as_tensor", "asarray", "scalar_tensor", "tril_indices", "triu_indices",
    "sparse_coo_tensor", "hann_window", "hamming_window", "bartlett_window",
    "blackman_window", "kaiser_window", "Generator",
})

# (file relative to the repository root, substring of the call's source lines, reason)
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("jiio_tasks/demo.py", "g = torch.Generator().manual_seed(seed)",
     "TanhDEQ constructor: seeds the demo layer's weights, module state moved with the module"),
    ("jiio_tasks/demo.py", "w = torch.randn(state, state, generator=g)",
     "TanhDEQ constructor: raw weights, normalised into a Parameter (moved with the module)"),
    ("jiio_tasks/demo.py", "torch.Generator().manual_seed(seed + 1)",
     "Reconstruction constructor: seeds the head Parameter (moved with the module)"),
    ("jiio_tasks/demo.py", "torch.Generator().manual_seed(seed + 2)",
     "make_setup builds the whole demo on the CPU (fresh CPU modules, no device argument)"),
    ("jiio_tasks/demo.py", "x_true = torch.randn(batch, latent, generator=g)",
     "make_setup builds the whole demo on the CPU (fresh CPU modules, no device argument)"),
    ("jiio_tasks/adversarial/train.py", "g = torch.Generator().manual_seed(seed)",
     "robust_accuracies: PGD's random starts are drawn on the generator's device and moved "
     "(attacks.random_ball), so a CPU seed gives the same starts on every device"),
    ("jiio_tasks/adversarial/splits.py", "ys.append(torch.as_tensor(y))",
     "data loading: CPU labels of a torchvision split, moved to the device by the caller"),
    ("jiio_tasks/adversarial/splits.py", "torch.randperm(count, generator=torch.Generator().manual_seed(seed))",
     "held_out_indices: a seeded CPU permutation (and its generator) indexing the CPU split"),
    ("jiio_tasks/adversarial/evaluate.py", "g = torch.Generator().manual_seed(seed)",
     "evaluate_runs' robust accuracies: PGD's random starts are drawn on the generator's device and "
     "moved (attacks.random_ball), so a CPU seed gives the same starts on every device"),
    ("jiio_tasks/data/fewshot.py", "torch.as_tensor(y)",
     "data loading: CPU labels of an episode, moved to the device by the caller"),
    ("jiio_tasks/imaging/data.py", "idx = torch.randint(0, len(self), (batch_size,))",
     "data loading: CPU indices into the dataset, read back with int(i)"),
    ("jiio_tasks/generative/density.py", "gen = torch.Generator().manual_seed(seed)",
     "fit_latent_vae: CPU seed stream of the minibatch indices (moved to the data's device)"),
    ("jiio_tasks/imaging/inversion.py", "canvas = torch.ones(",
     "save_grid: a CPU image canvas for matplotlib; the rows are copied in with .cpu()"),
    ("jiio_tasks/inverse/evaluate.py", "(y, torch.Generator().manual_seed(seed))",
     "evaluate_inverse: CPU seed of the corruptions, drawn on the generator's device and moved "
     "(operators.py), so the seeded corruptions are the same on every device"),
    ("jiio_tasks/generative/evaluate.py", "reg=1e-4, generator=torch.Generator().manual_seed(seed)",
     "fit_density: fit_gmm draws its initial permutation on the generator's device and moves it"),
    ("jiio_tasks/generative/evaluate.py", "gen = torch.Generator().manual_seed(seed)",
     "sample_generative: the density samplers draw on the generator's device and move the draws"),
    ("jiio_tasks/generative/table.py", "dens.sample(samples, torch.Generator().manual_seed(seed))",
     "the density samplers draw on the generator's device and move the draws"),
    ("jiio_tasks/generative/table.py", "generator=torch.Generator().manual_seed(seed)).to(recon01.device)",
     "ConvVAE prior drawn from a CPU seed and moved: the same samples on every device"),
    ("jiio_tasks/generative/table.py", "generator=torch.Generator().manual_seed(seed)).to(mu.device)",
     "MDEQ-VAE prior drawn from a CPU seed and moved: the same samples on every device"),
    ("jiio_tasks/inverse/train.py", "corr(clean, torch.Generator().manual_seed(seed))",
     "outer_gradient_error: CPU seed of the corruption, drawn on the generator's device and moved"),
    ("jiio_tasks/generative/features.py", "loss = torch.zeros(())",
     "train_rotnet has no device: the RotationNet is built and trained on the CPU"),
)


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _torch_names(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """Local names bound to the torch module, and local names bound to ``torch.<factory>``."""
    modules, funcs = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch":
                    modules.add(a.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and node.level == 0:
            for a in node.names:
                if a.name in FACTORIES:
                    funcs[a.asname or a.name] = a.name
    return modules, funcs


def _factory(call: ast.Call, modules: set[str], funcs: dict[str, str]) -> str | None:
    name = _dotted(call.func)
    if name is None:
        return None
    if name in funcs:
        return funcs[name]
    head, _, attr = name.rpartition(".")
    return attr if head in modules and attr in FACTORIES else None


def _is_device_move(call: ast.Call, modules: set[str]) -> bool:
    """``.to(...)`` with a device or tensor, not only a dtype (``.to(torch.float64)``,
    ``.to(x.dtype)``, ``.to(dtype)``)."""
    if any(k.arg == "device" for k in call.keywords):
        return True
    if not call.args:
        return False
    first = _dotted(call.args[0])
    if first is None:
        return True
    return not ((first.partition(".")[0] in modules and "." in first) or first.endswith("dtype"))


def _moved_or_read(node: ast.Call, parents: dict[ast.AST, ast.AST], modules: set[str]) -> bool:
    """The factory's result is moved at once (``.to``, also after indexing) or read back at once
    as a Python number (``int``/``float``/``bool``, also of comparisons and arithmetic on it;
    ``.item()``, ``.tolist()``)."""
    child: ast.AST = node
    up = parents.get(child)
    while isinstance(up, ast.Subscript) and up.value is child:
        child, up = up, parents.get(up)
    if isinstance(up, ast.Attribute) and up.value is child:
        call = parents.get(up)
        if isinstance(call, ast.Call) and call.func is up:
            return _is_device_move(call, modules) if up.attr == "to" else up.attr in ("item", "tolist")
        return False
    child, up = node, parents.get(node)
    while isinstance(up, (ast.Compare, ast.BinOp, ast.UnaryOp)):
        child, up = up, parents.get(up)
    return (isinstance(up, ast.Call) and isinstance(up.func, ast.Name)
            and up.func.id in ("int", "float", "bool") and up.args[:1] == [child])


def _module_state(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    child, up = node, parents.get(node)
    while up is not None and not isinstance(up, ast.stmt):
        if isinstance(up, ast.Call):
            fn = _dotted(up.func) or ""
            if fn.rpartition(".")[2] == "Parameter" and child in up.args:
                return True
            if fn.rpartition(".")[2] == "register_buffer" and up.args[1:2] == [child]:
                return True
        child, up = up, parents.get(up)
    return False


def violations(source: str, path: str = "<string>") -> list[tuple[str, int, str]]:
    """``(path, line, source lines)`` of each factory call that does not say its device."""
    tree = ast.parse(source)
    modules, funcs = _torch_names(tree)
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _factory(node, modules, funcs) is None:
            continue
        if any(k.arg == "device" or k.arg is None for k in node.keywords):
            continue
        if _moved_or_read(node, parents, modules) or _module_state(node, parents):
            continue
        text = "\n".join(lines[node.lineno - 1:(node.end_lineno or node.lineno)])
        out.append((path, node.lineno, text))
    return sorted(out)


def _library() -> list[tuple[str, int, str]]:
    found = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            found += violations(file.read_text(encoding="utf8"), rel)
    return found


def _allowed(path: str, text: str) -> tuple[str, str, str] | None:
    return next((e for e in ALLOWED if e[0] == path and e[1] in text), None)


def test_every_tensor_factory_says_its_device() -> None:
    found = _library()
    bad = [f"{p}:{n}: {t.strip()}" for p, n, t in found if _allowed(p, t) is None]
    assert not bad, "tensor factories without device= (CPU-only):\n" + "\n".join(bad)


def test_the_allow_list_has_no_stale_entries() -> None:
    used = {_allowed(p, t) for p, _, t in _library()}
    stale = [e[:2] for e in ALLOWED if e not in used]
    assert not stale, f"allow-list entries that match nothing: {stale}"
    assert all(reason.strip() for _, _, reason in ALLOWED)


def test_the_checker_flags_a_planted_violation() -> None:
    src = (
        "import torch\n"
        "from torch import arange as ar\n"
        "def f(x):\n"
        "    a = torch.zeros(3, dtype=x.dtype)\n"
        "    b = ar(4)\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    c = torch.randn(3, generator=g).to(torch.float64)\n"
        "    d = torch.ones(\n"
        "        2, 2).to(x.dtype) + torch.eye(2)[0]\n"
        "    return a, b, c, d\n"
    )
    assert [n for _, n, _ in violations(src)] == [4, 5, 6, 7, 8, 9]


def test_the_checker_accepts_device_aware_calls() -> None:
    src = (
        "import torch\n"
        "from torch import nn\n"
        "def f(x, kw):\n"
        "    a = torch.zeros(3, device=x.device, dtype=x.dtype)\n"
        "    b = torch.zeros_like(x) + x.new_zeros(3) + torch.ones_like(x)\n"
        "    g = torch.Generator(device=x.device)\n"
        "    c = torch.randn(3, generator=g, device=x.device)\n"
        "    d = torch.randn(3, generator=torch.Generator(device='cpu')).to(x.device)\n"
        "    e = torch.arange(3).to(x) + torch.randperm(5)[:2].to(device=x.device)\n"
        "    f = torch.full((2,), 1.0, **kw)\n"
        "    n = int(torch.randint(0, 9, ())) + bool(torch.rand(()) < 0.5) + torch.rand(()).item()\n"
        "    return a, b, c, d, e, f, n\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = nn.Parameter(torch.randn(3, 3) / 3)\n"
        "        self.register_buffer('s', torch.ones(3))\n"
    )
    assert violations(src) == []
