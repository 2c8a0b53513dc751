"""Frozen, validated configurations of the zoo models: one per paper setting (Table 9) plus
small CPU variants, and the one loader from plain dicts and JSON files.

- [`jiio_zoo.configs.schema`][jiio_zoo.configs.schema]: the classes ([`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] bundling [`MDEQConfig`][jiio_zoo.configs.schema.MDEQConfig]
  or [`OptEqConfig`][jiio_zoo.configs.schema.OptEqConfig], [`SolverConfig`][jiio_zoo.configs.schema.SolverConfig], [`TrainConfig`][jiio_zoo.configs.schema.TrainConfig]) and [`ConfigError`][jiio_zoo.configs.schema.ConfigError].
- [`jiio_zoo.configs.catalogue`][jiio_zoo.configs.catalogue]: the named configs, [`CONFIGS`][jiio_zoo.configs.catalogue.CONFIGS].
- [`jiio_zoo.configs.loading`][jiio_zoo.configs.loading]: [`from_dict`][jiio_zoo.configs.loading.from_dict] / [`to_dict`][jiio_zoo.configs.loading.to_dict] for any attrs config
  (zoo or ``jiio_core``), [`config_from_dict`][jiio_zoo.configs.loading.config_from_dict], [`load_config_file`][jiio_zoo.configs.loading.load_config_file], [`get_config`][jiio_zoo.configs.loading.get_config].
"""

from jiio_zoo.configs.catalogue import CONFIGS
from jiio_zoo.configs.loading import config_from_dict, from_dict, get_config, load_config_file, to_dict
from jiio_zoo.configs.schema import (
    ConfigError,
    MDEQConfig,
    ModelConfig,
    OptEqConfig,
    SolverConfig,
    TrainConfig,
    ZooConfig,
)

__all__ = [
    "CONFIGS",
    "ConfigError",
    "MDEQConfig",
    "ModelConfig",
    "OptEqConfig",
    "SolverConfig",
    "TrainConfig",
    "ZooConfig",
    "config_from_dict",
    "from_dict",
    "get_config",
    "load_config_file",
    "to_dict",
]
