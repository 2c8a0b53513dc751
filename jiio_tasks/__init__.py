"""jiio_tasks: the paper's task families."""
