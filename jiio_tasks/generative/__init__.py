"""Generative modelling with JIIO (paper §4.1, Appendix B.3): a decoder-only MDEQ whose latents
are inferred jointly with its equilibrium.

- [`train`][jiio_tasks.generative.train]: JIIO training of the decoder (eq. 20).
- [`evaluate`][jiio_tasks.generative.evaluate]: held-out reconstruction, JIIO vs Adam inversion,
  sampling from a post-hoc density with its Fréchet distance.
- [`density`][jiio_tasks.generative.density]: post-hoc densities on latents (Gaussian mixture,
  small MLP VAE), sampling.
- [`frechet`][jiio_tasks.generative.frechet]: the Fréchet distance of two feature Gaussians.
- [`features`][jiio_tasks.generative.features]: feature spaces for it (Inception-v3 pool3 from a
  local weights file = FID; else the shipped rotation-prediction net).
- [`vae`][jiio_tasks.generative.vae], [`mdeq_vae`][jiio_tasks.generative.mdeq_vae]: the ConvVAE and
  MDEQ-VAE baselines.
- [`table`][jiio_tasks.generative.table]: the Table-1-shaped comparison.
- `cli`: ``jiio train|eval|sample generative``,
  ``jiio train vae|mdeq-vae|features``, ``jiio eval vae|table1``.

The faces, operators, inner loss, problem recipe, inversion and the decoder trainer are shared
with the inverse-problem family (`jiio_tasks.imaging`, `jiio_tasks.inverse`).
"""
