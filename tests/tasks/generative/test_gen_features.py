"""Feature spaces for the Fréchet distance: rotation labels by hand, the rotation net's file
format and preprocessing, the shipped weights, and Inception-v3 loading from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jiio_tasks.generative.evaluate import image_frechet
from jiio_tasks.generative.features import (
    InceptionFeatures,
    RotationFeatures,
    feature_space,
    rotate_batch,
    train_rotation_net,
)
from jiio_tasks.generative.frechet import frechet_distance, gaussian_stats
from jiio_tasks.imaging.data import ImageSource


class _Faces(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(self) -> None:
        self.images = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


def test_rotation_labels_match_the_rotated_pixels() -> None:
    img = torch.arange(9.0).view(1, 1, 3, 3).expand(16, 1, 3, 3)
    out, k = rotate_batch(img, torch.Generator().manual_seed(0))
    assert set(k.tolist()) == {0, 1, 2, 3}
    for o, r in zip(out, k, strict=True):
        a = o[0]
        if r == 0:
            assert a.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
        elif r == 1:  # 90° counter-clockwise: the right column becomes the top row
            assert a.tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
        elif r == 2:
            assert a.tolist() == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]
        else:
            assert a.tolist() == [[6, 3, 0], [7, 4, 1], [8, 5, 2]]


def test_trained_rotation_net_file_round_trip(tmp_path: Path) -> None:
    src = ImageSource(_Faces(), 12, 1, "random")
    res = train_rotation_net(src, src.first(8), tmp_path / "rot.pt", steps=2, batch_size=4)
    assert 0 <= res["test_rotation_accuracy"] <= 1
    space = RotationFeatures(tmp_path / "rot.pt")
    grey = torch.rand(5, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    f = space.features(grey)
    assert f.shape == (5, 32) and torch.equal(f, space.features(grey))
    # RGB input with three equal channels is the grey image (luma weights sum to 1)
    torch.testing.assert_close(space.features(grey.expand(-1, 3, -1, -1)), f, rtol=1e-5, atol=1e-5)
    desc = space.describe()
    assert "rotation" in desc["feature_space"] and desc["weights"] == "rot.pt"
    # the image-level helper is the formula applied to the features
    other = torch.rand(6, 1, 20, 20, generator=torch.Generator().manual_seed(2))
    want = frechet_distance(gaussian_stats(f), gaussian_stats(space.features(other)))
    assert image_frechet(space, grey, other) == pytest.approx(want)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        RotationFeatures(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        RotationFeatures(tmp_path / "bad.pt")


def test_shipped_rotation_net_recognises_rotations_of_held_out_faces() -> None:
    space = feature_space()  # no Inception weights: the shipped rotation net
    assert isinstance(space, RotationFeatures)
    assert space.extra["test_rotation_accuracy"] >= 0.9, space.extra
    # recompute the stated accuracy on the 20 held-out faces × 4 rotations
    from jiio_tasks.data import EmbeddedFaces

    test = EmbeddedFaces("test", size=32).images
    correct = 0
    with torch.no_grad():
        for r in range(4):
            correct += int((space.net(torch.rot90(test, r, dims=(-2, -1))).argmax(1) == r).sum())
    assert correct / 80 == pytest.approx(space.extra["test_rotation_accuracy"])


@pytest.mark.slow
def test_inception_features_from_a_local_state_dict(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "inception.pt")
    space = feature_space(tmp_path / "inception.pt")
    assert isinstance(space, InceptionFeatures)
    images = torch.rand(2, 1, 25, 25, generator=torch.Generator().manual_seed(0))
    f = space.features(images)
    assert f.shape == (2, 2048) and bool(torch.isfinite(f).all())
    assert "inception" in space.describe()["feature_space"]
    # pool3 by hand: the net without its classifier, on the 299×299 3-channel [−1, 1] input
    net.eval()
    x = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                                        align_corners=False) * 2 - 1
    feats: list[torch.Tensor] = []
    hook = net.avgpool.register_forward_hook(lambda _m, _i, o: feats.append(o.flatten(1)))
    with torch.no_grad():
        net(x)
    hook.remove()
    torch.testing.assert_close(f, feats[0], rtol=1e-4, atol=1e-5)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"wrong\.pt"):
        InceptionFeatures(tmp_path / "wrong.pt")
