"""Inverse problems with JIIO (paper §4.2, Table 4): recover a clean image from a corrupted
observation (noise, inpainting, blur) through a zoo decoder.

- [`train`][jiio_tasks.inverse.train]: supervised inverse training (eq. 24): the decoder learns
  from (observation, clean) pairs through the JIIO solve of each observation.
- [`evaluate`][jiio_tasks.inverse.evaluate]: median PSNR of unsupervised (a generative decoder,
  eq. 22) and supervised inversion on the held-out faces.
- `cli`: ``jiio train inverse``, ``jiio eval inverse``.

The operators, the inner loss and the faces are shared with the generative family
(`jiio_tasks.imaging`).
"""
