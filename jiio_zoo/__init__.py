"""jiio_zoo: models, configs and checkpoints."""
