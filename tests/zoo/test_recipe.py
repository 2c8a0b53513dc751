"""jiio_zoo.recipe: every SolverConfig/TrainConfig field reaches the solver or the trainer."""

from __future__ import annotations

import attrs
import pytest
import torch

from jiio_core.accelerators import AndersonI, AndersonII, Broyden
from jiio_zoo.configs import CONFIGS, SolverConfig, TrainConfig, get_config
from jiio_zoo.recipe import deq_solver, make_optimizer, settings

# a changed value for every field, and where it must show
_SOLVER_CHANGES: dict[str, object] = {
    "accelerator": "broyden",
    "x_step": "normalized",
    "forward_threshold": 77,
    "backward_threshold": 66,
    "broyden_memory": 13,
    "anderson_memory": 11,
    "damping": (0.7, 0.5, 0.02),
    "damping_x_switch": 0.004,
    "damping_x_switch_iter": 9,
    "jiio_iterations": 55,
    "balanced_iterations": 7,
}


def test_every_solver_field_is_read() -> None:
    base = get_config("faces_gen_small").solver
    fields = {f.name for f in attrs.fields(SolverConfig)}
    # epsilon is the adversarial radius: read by the attack/trainer (tests/tasks/adversarial)
    assert fields - {"epsilon"} == set(_SOLVER_CHANGES)
    for name, value in _SOLVER_CHANGES.items():
        changed = attrs.evolve(base, **{name: value})
        if name == "broyden_memory":  # read when the accelerator is Broyden
            base_b, changed_b = attrs.evolve(base, accelerator="broyden"), attrs.evolve(changed, accelerator="broyden")
            assert settings(base_b) != settings(changed_b), name
            continue
        assert settings(base) != settings(changed), name


def test_mapping_is_field_for_field() -> None:
    s = get_config("celeba_gen").solver
    st = settings(s)
    assert (st.accelerator, st.memory, st.damping, st.x_late, st.switch_at) == (
        "anderson1", s.anderson_memory, s.damping, s.damping_x_switch, s.damping_x_switch_iter)
    assert (st.max_iter, st.forward_max_iter, st.backward_max_iter) == (
        s.jiio_iterations, s.forward_threshold, s.backward_threshold)
    # the switch stays where the config puts it, whatever the iteration count (C.3: 65)
    assert settings(s, iterations=100).switch_at == 65
    assert isinstance(settings(attrs.evolve(s, accelerator="broyden", broyden_memory=5)).make_accelerator(), Broyden)
    assert isinstance(deq_solver(get_config("glyphs_meta_small")).accelerator, AndersonII)
    assert (st.balance_blocks, st.balance_until) == (False, None)
    bal = settings(attrs.evolve(s, balanced_iterations=25))
    assert (bal.balance_blocks, bal.balance_until) == (True, 25)
    acc = bal.make_accelerator()
    assert isinstance(acc, AndersonI) and acc.balance_until == 25
    assert isinstance(deq_solver(get_config("faces_gen_small")).accelerator, AndersonI)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_catalogue_entry_builds_its_settings(name: str) -> None:
    cfg = get_config(name)
    st = settings(cfg)
    assert st.max_iter == cfg.solver.jiio_iterations
    m = cfg.model
    task_head = getattr(m, "task_head_dim", 0) > 0
    if cfg.task == "adversarial" or (cfg.task == "meta" and not task_head):
        assert st.x_step == "normalized"  # α_x is a step length there (the original code)
    else:
        assert st.x_step == "gradient"


def test_optimizer_reads_the_train_config() -> None:
    cfg = attrs.evolve(get_config("faces_gen_small").train, learning_rate=0.25, weight_decay=0.125)
    assert {f.name for f in attrs.fields(TrainConfig)} == {
        "batch_size", "learning_rate", "jac_reg", "optimizer", "weight_decay"}
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 0.25 and opt.param_groups[0]["weight_decay"] == 0.125
    assert make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg, lr=0.5).param_groups[0]["lr"] == 0.5
