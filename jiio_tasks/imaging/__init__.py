"""What the generative and inverse-problem families share: images of a zoo decoder.

- [`data`][jiio_tasks.imaging.data]: image sources (embedded faces, CelebA from a local root)
  and the model's pixel range.
- [`splits`][jiio_tasks.imaging.splits]: the training stream and the held-out faces every
  evaluator scores on.
- [`operators`][jiio_tasks.imaging.operators]: measurement operators (noise, inpainting, blur),
  MSE and PSNR on [0, 1] data.
- [`objectives`][jiio_tasks.imaging.objectives]: the inner loss ``‖ŷ − A h(z)‖²`` (eq. 20, 22).
- [`problem`][jiio_tasks.imaging.problem]: the JIIO problem of a zoo decoder from its config.
- [`inversion`][jiio_tasks.imaging.inversion]: JIIO latent inversion, decoding, image grids.
- [`training`][jiio_tasks.imaging.training]: the training of a decoder through JIIO solves that
  both families' step functions share.
"""
