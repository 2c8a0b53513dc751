"""Generative modelling and inverse problems with JIIO (paper §4.1, §4.2, Appendix B.3–B.4).

- :mod:`~jiio_tasks.generative.operators`: measurement operators (noise, inpainting, blur),
  MSE and PSNR on [0, 1] data.
- :mod:`~jiio_tasks.generative.objectives`: the inner loss ``‖ŷ − A h(z)‖²`` (eq. 20, 22).
- :mod:`~jiio_tasks.generative.problem`: the JIIO problem of a zoo decoder from its config.
- :mod:`~jiio_tasks.generative.train`: JIIO training (generative, supervised inverse).
- :mod:`~jiio_tasks.generative.evaluate`: reconstruction and inversion metrics, JIIO vs Adam.
- :mod:`~jiio_tasks.generative.density`: post-hoc Gaussian mixture on latents, sampling.
- :mod:`~jiio_tasks.generative.cli`: ``jiio train|eval|sample generative|inverse``.
"""
