"""The inverse table (Table 4) at tiny size: the observed row by hand, the supervised row."""

from __future__ import annotations

from pathlib import Path

import torch

from jiio_tasks.imaging.operators import Inpainting
from jiio_tasks.inverse.evaluate import evaluate_inverse
from tests.tasks.generative.tiny import own_images, tiny_decoder


def test_inverse_table_against_the_observation_by_hand(tmp_path: Path) -> None:
    model = tiny_decoder(iterations=20).eval()
    images = own_images(model.double(), 4).float()
    model = model.float()
    res = evaluate_inverse(model, images, tmp_path / "inv", tasks=("inpaint", "denoise0.2"), iterations=20,
                           supervised={"denoise0.2": model})
    table = res["median_psnr"]
    # the inpainting observation by hand: same seed, same mask
    op = Inpainting().operator(images, torch.Generator().manual_seed(0))
    obs_psnr = 10 * torch.log10(1 / ((op.apply(images) - images) ** 2).flatten(1).mean(1))
    assert abs(table["inpaint"]["observed"] - float(obs_psnr.median())) < 1e-4
    assert table["denoise0.2"]["supervised"] == table["denoise0.2"]["unsupervised"]  # same weights
    assert "supervised" not in table["inpaint"]
    assert (tmp_path / "inv" / "table.md").read_text().startswith("Median PSNR (dB, data range [0, 1])")
