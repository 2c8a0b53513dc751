"""Generative modelling and inverse problems with JIIO (paper §4.1, §4.2, Appendix B.3–B.4).

- :mod:`~jiio_tasks.generative.operators`: measurement operators (noise, inpainting, blur),
  MSE and PSNR on [0, 1] data.
- :mod:`~jiio_tasks.generative.objectives`: the inner loss ``‖ŷ − A h(z)‖²`` (eq. 20, 22).
- :mod:`~jiio_tasks.generative.problem`: the JIIO problem of a zoo decoder from its config.
- :mod:`~jiio_tasks.generative.train`: JIIO training (generative, supervised inverse).
- :mod:`~jiio_tasks.generative.evaluate`: reconstruction and inversion metrics, JIIO vs Adam.
- :mod:`~jiio_tasks.generative.density`: post-hoc densities on latents (Gaussian mixture,
  small MLP VAE), sampling.
- :mod:`~jiio_tasks.generative.frechet`: the Fréchet distance of two feature Gaussians.
- :mod:`~jiio_tasks.generative.features`: feature spaces for it (Inception-v3 pool3 from a
  local weights file = FID; else the shipped rotation-prediction net).
- :mod:`~jiio_tasks.generative.vae`, :mod:`~jiio_tasks.generative.mdeq_vae`: the ConvVAE and
  MDEQ-VAE baselines.
- :mod:`~jiio_tasks.generative.table`: the Table-1-shaped comparison.
- :mod:`~jiio_tasks.generative.splits`: the held-out and training faces every command uses.
- :mod:`~jiio_tasks.generative.cli`: ``jiio train|eval|sample generative|inverse``,
  ``jiio train vae|mdeq-vae|features``, ``jiio eval vae|table1``.
"""
