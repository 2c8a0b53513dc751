"""Configs: the paper's Table 9 values, validation messages, from_dict and unknown keys."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from jiio_zoo.configs import (
    CONFIGS,
    ConfigError,
    MDEQConfig,
    SolverConfig,
    TrainConfig,
    ZooConfig,
    config_from_dict,
    get_config,
)

PAPER = ("mnist_adv", "cifar10_adv", "celeba_gen", "celeba_inverse", "omniglot_meta")

# Table 9 and Appendix C.3/C.4 of the paper, transcribed independently of configs.py:
# (image size, image channels, channels, batch, Anderson memory, damping, switch, λ, x-dim)
TABLE9: dict[str, tuple[Any, ...]] = {
    "mnist_adv": (28, 1, (24, 24), 96, 20, (0.8, 0.6, 0.6), (0.2, 65), 0.01, None),
    "cifar10_adv": (32, 3, (24, 24), 96, 20, (0.8, 0.6, 0.1), None, 0.01, None),
    "celeba_gen": (64, 3, (32, 64, 128, 256), 48, 40, (0.8, 0.6, 0.01), (0.003, 65), 0.1, 128),
    "celeba_inverse": (64, 3, (32, 64, 128, 256), 48, 40, (0.8, 0.6, 0.01), (0.003, 65), 2.0, 128),
    "omniglot_meta": (28, 1, (64, 128), 80, 10, (0.8, 0.6, 0.04), (0.01, 65), 0.5, 400),
}


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_match_table9(name: str) -> None:
    size, in_ch, channels, batch, memory, damping, switch, lam, xdim = TABLE9[name]
    c = CONFIGS[name]
    m = c.model
    assert isinstance(m, MDEQConfig)
    assert c.scale == "paper"
    assert (m.image_size, m.image_channels, m.channels) == (size, in_ch, channels)
    assert m.num_branches == len(channels)
    assert (m.groups, m.expansion, m.weight_norm, m.dropout) == (8, 5, True, 0.0)
    assert (c.solver.forward_threshold, c.solver.backward_threshold, c.solver.broyden_memory) == (18, 20, 20)
    assert c.solver.anderson_memory == memory
    assert c.solver.damping == damping
    got_switch = None if c.solver.damping_x_switch is None else (c.solver.damping_x_switch, c.solver.damping_x_switch_iter)
    assert got_switch == switch
    assert c.train.jac_reg == lam
    assert (c.train.batch_size, c.train.learning_rate, c.train.optimizer) == (batch, 1e-3, "adam")
    if xdim is not None:
        assert m.latent_dim == xdim


def test_iteration_counts_and_epsilon() -> None:
    assert CONFIGS["celeba_gen"].solver.jiio_iterations == 40
    assert CONFIGS["celeba_inverse"].solver.jiio_iterations == 100
    assert CONFIGS["mnist_adv"].solver.jiio_iterations == 80
    assert CONFIGS["mnist_adv"].solver.epsilon == 1.0
    assert CONFIGS["omniglot_meta"].solver.jiio_iterations == 100


def test_small_variants_exist_and_are_small() -> None:
    for name in ("digits_adv_small", "faces_gen_small", "glyphs_meta_small", "opteq_small"):
        assert CONFIGS[name].scale == "small"
    assert CONFIGS["digits_adv_small"].model.image_size == 8  # type: ignore[union-attr]
    assert CONFIGS["faces_gen_small"].model.latent_dim == 32  # type: ignore[union-attr]
    assert CONFIGS["glyphs_meta_small"].model.image_size == 14  # type: ignore[union-attr]


def _mdeq(**over: Any) -> MDEQConfig:
    base: dict[str, Any] = dict(
        image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2,
        injection="latent", latent_dim=3, head="image",
    )
    base.update(over)
    return MDEQConfig(**base)


@pytest.mark.parametrize(
    ("over", "pattern"),
    [
        (dict(image_size=0), r"MDEQConfig.image_size must be an int in \[2, 4096\], got 0"),
        (dict(groups=0), r"MDEQConfig.groups must be an int >= 1, got 0"),
        (dict(dropout=1.0), r"MDEQConfig.dropout must be a finite number in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"MDEQConfig.dropout must be a finite number in \[0, 1\)"),
        (dict(injection="noise"), r"MDEQConfig.injection must be one of 'image', 'latent', 'film', got 'noise'"),
        (dict(channels=(4, 0)), r"MDEQConfig.channels\[1\] must be an int >= 1, got 0"),
        (dict(channels=(4,)), r"MDEQConfig.channels must have num_branches=2 entries"),
        (dict(groups=3), r"MDEQConfig.groups=3 must divide channels of branch 0 \(4\)"),
        (dict(latent_dim=0), r"MDEQConfig.latent_dim must be >= 1 when injection='latent'"),
        (dict(weight_norm=1), r"MDEQConfig.weight_norm must be a bool, got 1"),
        (dict(image_size=2, num_branches=3, channels=(2, 2, 2)), r"image_size=2 is too small for num_branches=3"),
        (dict(head="classification"), r"num_classes must be >= 2 for head='classification'"),
    ],
)
def test_mdeq_config_rejects_bad_values(over: dict[str, Any], pattern: str) -> None:
    with pytest.raises((ValueError, TypeError), match=pattern):
        _mdeq(**over)


def test_solver_and_train_validation() -> None:
    with pytest.raises(ValueError, match=r"SolverConfig.damping alpha_mu must be a number in \(0, 1\], got 1.5"):
        SolverConfig(anderson_memory=5, damping=(0.8, 1.5, 0.1), jiio_iterations=10)
    with pytest.raises(ValueError, match=r"SolverConfig.damping must be a tuple \(alpha_z, alpha_mu, alpha_x\)"):
        SolverConfig(anderson_memory=5, damping=(0.8, 0.6), jiio_iterations=10)
    with pytest.raises(ValueError, match=r"damping_x_switch and damping_x_switch_iter must be given together"):
        SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.1), jiio_iterations=10, damping_x_switch=0.1)
    with pytest.raises(ValueError, match=r"SolverConfig.anderson_memory must be an int in \[1, 1000\], got 0"):
        SolverConfig(anderson_memory=0, damping=(0.8, 0.6, 0.1), jiio_iterations=10)
    with pytest.raises(ValueError, match=r"TrainConfig.learning_rate must be a finite number in \(0, 10\]"):
        TrainConfig(batch_size=2, learning_rate=0.0)
    with pytest.raises(ValueError, match=r"TrainConfig.jac_reg must be a finite number in \[0, inf\]"):
        TrainConfig(batch_size=2, learning_rate=1e-3, jac_reg=float("nan"))


def test_task_and_model_must_agree() -> None:
    c = CONFIGS["celeba_gen"]
    with pytest.raises(ValueError, match=r"task='adversarial' needs model.injection='image'"):
        attrs.evolve(c, task="adversarial")
    with pytest.raises(TypeError, match=r"ZooConfig.model must be a MDEQConfig or OptEqConfig"):
        attrs.evolve(c, model={"image_size": 8})


def test_configs_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        CONFIGS["mnist_adv"].model.channels = (1, 1)  # type: ignore[misc]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_dict_round_trip(name: str) -> None:
    c = CONFIGS[name]
    assert config_from_dict(c.to_dict()) == c


def test_from_dict_accepts_lists_and_rejects_unknown_or_missing_keys() -> None:
    d = CONFIGS["mnist_adv"].to_dict()
    d["model"] = dict(d["model"], channels=[24, 24])  # JSON-style lists become tuples
    d["solver"] = dict(d["solver"], damping=[0.8, 0.6, 0.6])
    assert config_from_dict(d) == CONFIGS["mnist_adv"]

    bad = dict(d, model=dict(d["model"], chanels=[1, 2]))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'chanels' in config.model \(MDEQConfig\); valid fields: .*channels.*expansion"):
        config_from_dict(bad)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'lr' in config \(ZooConfig\); valid fields: architecture, model, name"):
        config_from_dict(dict(d, lr=0.1))
    solver = dict(d["solver"])
    del solver["anderson_memory"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) 'anderson_memory' in config.solver"):
        config_from_dict(dict(d, solver=solver))
    with pytest.raises(ValueError, match=r"MDEQConfig.expansion must be an int in \[1, 64\], got 0"):
        config_from_dict(dict(d, model=dict(d["model"], expansion=0)))


def test_get_config_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown config name 'mnist'; valid names: mnist_adv, cifar10_adv"):
        get_config("mnist")
    assert get_config("mnist_adv") is CONFIGS["mnist_adv"]


def test_branch_sizes() -> None:
    assert CONFIGS["celeba_gen"].model.branch_sizes() == (64, 32, 16, 8)  # type: ignore[union-attr]
    assert CONFIGS["mnist_adv"].model.branch_sizes() == (28, 14)  # type: ignore[union-attr]


def test_zoo_config_name_validation() -> None:
    with pytest.raises(ValueError, match=r"ZooConfig.name must be a non-empty string"):
        ZooConfig(
            name="bad name", task="generative", scale="test", model=_mdeq(),
            solver=CONFIGS["celeba_gen"].solver, train=CONFIGS["celeba_gen"].train,
        )
