"""jiio_core: the joint inference and input optimization solver."""
