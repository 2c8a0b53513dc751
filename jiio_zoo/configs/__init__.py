"""Frozen, validated configurations of the zoo models: one per paper setting (Table 9) plus
small CPU variants, and the one loader from plain dicts and JSON files.

- :mod:`jiio_zoo.configs.schema`: the classes (:class:`ZooConfig` bundling :class:`MDEQConfig`
  or :class:`OptEqConfig`, :class:`SolverConfig`, :class:`TrainConfig`) and :class:`ConfigError`.
- :mod:`jiio_zoo.configs.catalogue`: the named configs, :data:`CONFIGS`.
- :mod:`jiio_zoo.configs.loading`: :func:`from_dict` / :func:`to_dict` for any attrs config
  (zoo or ``jiio_core``), :func:`config_from_dict`, :func:`load_config_file`, :func:`get_config`.
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
