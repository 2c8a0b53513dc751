"""Configs: the paper's Table 9 values, validation messages, and the one dict loader
(``from_dict``/``config_from_dict``): dotted error paths, unknown and missing keys, round trips."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

import jiio_zoo
from jiio_core import AndersonI, Box, Broyden, CostResidualTradeoff, Damping, JacobianPenalty, L2Ball
from jiio_core.validators import FieldError
from jiio_zoo.configs import (
    CONFIGS,
    ConfigError,
    MDEQConfig,
    OptEqConfig,
    SolverConfig,
    TrainConfig,
    ZooConfig,
    config_from_dict,
    from_dict,
    get_config,
    to_dict,
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
    for name in ("digits_adv_small", "mnist_adv_small", "faces_gen_small", "glyphs_meta_small", "opteq_small"):
        assert CONFIGS[name].scale == "small"
    # the 28×28 digits at the paper's MNIST radius and attack length (Table 5)
    assert CONFIGS["mnist_adv_small"].model.image_size == 28  # type: ignore[union-attr]
    assert (CONFIGS["mnist_adv_small"].solver.epsilon, CONFIGS["mnist_adv_small"].solver.jiio_iterations) == (1.0, 80)
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
        (dict(dropout=1.0), r"MDEQConfig.dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"MDEQConfig.dropout must be in \[0, 1\), got -0.1"),
        (dict(injection="noise"), r"MDEQConfig.injection must be one of 'image', 'latent', 'film', got 'noise'"),
        (dict(channels=(4, 0)), r"MDEQConfig.channels\[1\] must be an int >= 1, got 0"),
        (dict(channels=(4,)), r"MDEQConfig.channels must have num_branches=2 entries"),
        (dict(groups=3), r"MDEQConfig.groups=3 must divide channels of branch 0 \(4\)"),
        (dict(latent_dim=0), r"MDEQConfig.latent_dim must be >= 1 when injection='latent'"),
        (dict(weight_norm=1), r"MDEQConfig.weight_norm must be a bool, got int"),
        (dict(image_size=2, num_branches=3, channels=(2, 2, 2)), r"image_size=2 is too small for num_branches=3"),
        (dict(head="classification"), r"num_classes must be >= 2 for head='classification'"),
        (dict(task_head_dim=4), r"MDEQConfig.task_head_dim=4 needs injection='film' and the pooled "
                                r"classification head .* got injection='latent', head='image'"),
        (dict(task_head_dim=-1), r"MDEQConfig.task_head_dim must be an int in \[0, 4096\], got -1"),
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
    with pytest.raises(ValueError, match=r"TrainConfig.learning_rate must be in \(0, 10\], got 0.0"):
        TrainConfig(batch_size=2, learning_rate=0.0)
    with pytest.raises(ValueError, match=r"TrainConfig.jac_reg must be a finite number >= 0, got nan"):
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
    d = c.to_dict()
    assert d["architecture"] == ("opteq" if isinstance(c.model, OptEqConfig) else "mdeq")
    back = config_from_dict(d)
    assert back == c
    assert back.to_dict() == d
    assert to_dict(c) == d and from_dict(ZooConfig, d) == c  # the generic names agree


def test_from_dict_turns_json_lists_into_tuples() -> None:
    d = CONFIGS["mnist_adv"].to_dict()
    d["model"] = dict(d["model"], channels=[24, 24], head_channels=[8, 16])
    d["solver"] = dict(d["solver"], damping=[0.8, 0.6, 0.6])
    assert config_from_dict(d) == CONFIGS["mnist_adv"]
    assert config_from_dict(d).model.channels == (24, 24)  # type: ignore[union-attr]


def _err(data: Any, cls: type = ZooConfig) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data)
    msg = str(info.value)
    assert "\n" not in msg  # the CLI prints it as one line
    return msg


D = CONFIGS["mnist_adv"].to_dict()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (dict(D, solver=dict(D["solver"], damping=[0.8, 0.6, 0])),
         "solver.damping[2]: SolverConfig.damping alpha_x must be a finite number > 0, got 0 (in (0.8, 0.6, 0))"),
        (dict(D, solver=dict(D["solver"], damping=[0.8, 1.5, 2.0])),
         "solver.damping[1]: SolverConfig.damping alpha_mu must be a number in (0, 1], got 1.5 (in (0.8, 1.5, 2.0))"),
        (dict(D, model=dict(D["model"], expansion=0)),
         "model.expansion: MDEQConfig.expansion must be an int in [1, 64], got 0"),
        (dict(D, model=dict(D["model"], channels=[24, True])),
         "model.channels[1]: MDEQConfig.channels[1] must be an int >= 1, got True"),
        (dict(D, train=dict(D["train"], jac_reg=math.nan)),
         "train.jac_reg: TrainConfig.jac_reg must be a finite number >= 0, got nan"),
        (dict(D, solver=dict(D["solver"], epsilon="1.0")),  # no coercion: strings stay strings
         "solver.epsilon: SolverConfig.epsilon must be a finite number > 0 or None, got '1.0'"),
        (dict(D, name="bad name"),
         "name: ZooConfig.name must be a non-empty string of letters, digits and underscores, got 'bad name'"),
        (dict(D, model=dict(D["model"], channels=[24])),  # a check across fields: the model's path
         "model: MDEQConfig.channels must have num_branches=2 entries, got (24,)"),
        (dict(D, model=5), "model: expected a mapping of MDEQConfig fields, got int"),
        (dict(D, architecture="cnn"), "architecture: ZooConfig.architecture must be one of 'mdeq', 'opteq', got 'cnn'"),
        ({k: v for k, v in D.items() if k != "train"}, "train: required key missing for ZooConfig"),
        (dict(D, solver={k: v for k, v in D["solver"].items() if k != "anderson_memory"}),
         "solver.anderson_memory: required key missing for SolverConfig"),
    ],
)
def test_errors_name_the_dotted_path(data: dict[str, Any], expected: str) -> None:
    assert _err(data) == expected


def test_unknown_keys_are_named_with_the_valid_fields() -> None:
    assert _err(dict(D, lr=0.1)) == (
        "lr: unknown key for ZooConfig (valid fields: architecture, model, name, scale, solver, task, train)"
    )
    msg = _err(dict(D, model=dict(D["model"], chanels=[1, 2], expnsion=3)))
    assert msg.startswith("model.chanels, model.expnsion: unknown keys for MDEQConfig (valid fields: channels, ")
    assert sorted(msg.split("(valid fields: ")[1].rstrip(")").split(", ")) == sorted(
        a.name for a in attrs.fields(MDEQConfig)
    )
    # several problems in one line, joined by "; "
    msg = _err(dict(D, lr=0.1, train=dict(D["train"], batch=3)))
    assert msg.count("; ") == 1 and "train.batch: unknown key for TrainConfig" in msg and "lr: unknown key" in msg


def test_opteq_is_chosen_by_architecture_or_by_its_keys() -> None:
    d = CONFIGS["opteq_small"].to_dict()
    assert config_from_dict(d) == CONFIGS["opteq_small"]
    del d["architecture"]
    assert config_from_dict(d) == CONFIGS["opteq_small"]  # state_dim: an OptEq model
    bad = dict(d, architecture="mdeq")  # an OptEq dict read as an MDEQ model
    msg = _err(bad)
    assert "model.activation, model.input_dim, model.max_gain, model.output_dim, model.state_dim: unknown keys" in msg
    assert msg.startswith(
        "model.image_size, model.image_channels, model.num_branches, model.channels, model.injection, "
        "model.head: required keys missing for MDEQConfig; "
    )


def test_from_dict_builds_core_settings_too() -> None:
    assert from_dict(Damping, {"z": 0.5, "x": 0.1}) == Damping(z=0.5, x=0.1)
    assert _err({"z": 0.5, "z_": 0.5, "alpha": 1.0}, Damping) == (
        "alpha, z_: unknown keys for Damping (valid fields: mu, switch_at, x, x_late, z)"
    )
    assert _err({"memroy": 5}, AndersonI) == "memroy: unknown key for AndersonI (valid fields: balance_until, beta, memory, ridge)"
    assert _err({"center": None}, L2Ball) == "radius: required key missing for L2Ball"
    assert _err({"z": 2.0}, Damping) == "z: Damping.z must be in (0, 1], got 2.0"  # validators still run
    assert _err({"memory": True}, AndersonI) == "memory: AndersonI.memory must be an int >= 1, got True"
    assert _err([("z", 0.5)], Damping) == "expected a mapping of Damping fields, got list"
    with pytest.raises(TypeError, match="is not an attrs class"):
        from_dict(dict, {})
    with pytest.raises(TypeError, match="is not an attrs class"):
        to_dict({"z": 0.5})


@pytest.mark.parametrize(
    "config",
    [
        Damping(z=0.7, mu=0.5, x=0.02, x_late=0.001, switch_at=62),
        AndersonI(memory=7, beta=0.9, ridge=1e-6),
        Broyden(memory=3),
        JacobianPenalty(probes=3, start=4),
        CostResidualTradeoff(warmup=3, slack=1.5),
        Box(lo=0.0, hi=1.0),
    ],
)
def test_core_settings_round_trip(config: Any) -> None:
    back = from_dict(type(config), to_dict(config))
    assert type(back) is type(config)
    assert to_dict(back) == to_dict(config)


def test_validator_errors_keep_the_field() -> None:
    with pytest.raises(FieldError) as info:
        SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.0), jiio_iterations=10)
    assert info.value.field == "damping[2]"


def test_public_names() -> None:
    assert jiio_zoo.config_from_dict is config_from_dict
    assert jiio_zoo.from_dict is from_dict and jiio_zoo.to_dict is to_dict
    assert jiio_zoo.load_config_file is jiio_zoo.configs.load_config_file
    assert not hasattr(__import__("jiio_core"), "from_dict")  # the one loader is the zoo's


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


def test_alpha_x_is_a_step_size_without_upper_bound() -> None:
    """α_x (and its late value) may exceed 1 (a gradient step on a summed loss, or a normalised
    step longer than 1); α_z and α_μ mix iterates and stay in (0, 1]; inf and NaN are refused."""
    s = SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 4.0), jiio_iterations=10,
                     damping_x_switch=2.0, damping_x_switch_iter=5)
    assert s.damping[2] == 4.0 and s.damping_x_switch == 2.0
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match=r"alpha_x must be a finite number > 0"):
            SolverConfig(anderson_memory=5, damping=(0.8, 0.6, bad), jiio_iterations=10)
    with pytest.raises(ValueError, match=r"alpha_z must be a number in \(0, 1\], got 1.2"):
        SolverConfig(anderson_memory=5, damping=(1.2, 0.6, 0.5), jiio_iterations=10)
