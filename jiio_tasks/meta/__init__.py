"""Gradient-based meta-learning with a DEQ whose task vector is the optimised input (paper
Appendix B.1, eq. 29): JIIO inner loop, an Adam inner loop on the same DEQ, and MAML on a
small CNN as baselines. [`splits`][jiio_tasks.meta.splits] defines the meta-train stream and the fixed meta-test
tasks, [`evaluate`][jiio_tasks.meta.evaluate] the meta-test accuracy."""

from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, collate, sample_batch

__all__ = ["RegularizedFewShot", "TaskBatch", "collate", "sample_batch"]
