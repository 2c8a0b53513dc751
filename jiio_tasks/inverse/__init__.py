"""Inverse problems with JIIO (paper §4.2, Table 4): recover a clean image from a corrupted
observation (noise, inpainting, blur) through a zoo decoder.

- [`train`][jiio_tasks.inverse.train]: supervised inverse training (eq. 24): the decoder learns
  from (observation, clean) pairs through the JIIO solve of each observation.
- [`evaluate`][jiio_tasks.inverse.evaluate]: median PSNR of unsupervised (a generative decoder,
  eq. 22) and supervised inversion on the held-out faces.
- [`baselines`][jiio_tasks.inverse.baselines]: the other rows of Table 4: the supervised eq. 23
  models (a conv autoencoder and an MDEQ autoencoder), Adam on eq. 21 over a generator, and the
  median PSNR with a bootstrap interval (``benchmarks/table4.py`` measures the table).
- `cli`: ``jiio train inverse``, ``jiio eval inverse``.

The operators, the inner loss and the faces are shared with the generative family
(`jiio_tasks.imaging`).
"""
