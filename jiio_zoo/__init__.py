"""jiio_zoo: models, configs and checkpoints.

``jiio_zoo.load(name, pretrained=True, weights=None, device="cpu")`` builds a named model
([`ZooModel`][jiio_zoo.model.ZooModel]: layer with its injection, head, config); ``jiio_zoo.list()`` names them.
The pieces (``MDEQLayer``, injections, heads, ``OptEqLayer``) can also be composed by hand.
Configs come from names (``get_config``), JSON files (``load_config_file``) or plain dicts
(``from_dict(cls, data)`` for any attrs settings class, zoo or ``jiio_core``; errors name the
dotted path of each bad key).
"""

from jiio_zoo.checkpoint import CheckpointError, load_into, load_model, promote, save
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
    load_config_file,
    to_dict,
)
from jiio_zoo.heads import ImageHead, MDEQClassificationHead, PooledClassificationHead
from jiio_zoo.injections import (
    BranchInputs,
    FiLMInjection,
    ImageInjection,
    Injection,
    LatentInjection,
)
from jiio_zoo.mdeq import MDEQCell, MDEQLayer
from jiio_zoo.model import LinearHead, ZooModel, build_model
from jiio_zoo.objectives import AdversarialObjective, FewShotObjective, ReconstructionObjective
from jiio_zoo.opteq import CallablePrior, OptEqLayer, Prior, QuadraticPrior
from jiio_zoo.registry import MissingWeightsError, load, weights_status
from jiio_zoo.registry import list_models as list  # the documented public name

__all__ = [
    "CONFIGS",
    "AdversarialObjective",
    "BranchInputs",
    "CallablePrior",
    "CheckpointError",
    "ConfigError",
    "FewShotObjective",
    "FiLMInjection",
    "ImageHead",
    "ImageInjection",
    "Injection",
    "LatentInjection",
    "LinearHead",
    "MDEQCell",
    "MDEQClassificationHead",
    "MDEQConfig",
    "MDEQLayer",
    "MissingWeightsError",
    "OptEqConfig",
    "OptEqLayer",
    "PooledClassificationHead",
    "Prior",
    "QuadraticPrior",
    "ReconstructionObjective",
    "SolverConfig",
    "TrainConfig",
    "ZooConfig",
    "ZooModel",
    "build_model",
    "config_from_dict",
    "from_dict",
    "get_config",
    "list",
    "load",
    "load_config_file",
    "load_into",
    "load_model",
    "promote",
    "save",
    "to_dict",
    "weights_status",
]
