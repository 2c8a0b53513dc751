"""``StateSpec``: packing structured (single or multiscale tuple) states to ``(B, N)`` and back."""

from __future__ import annotations

import pytest
import torch

from jiio_core import StateSpec, pack


def test_single_tensor_round_trip() -> None:
    z = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    flat, spec = pack(z)
    assert spec == StateSpec(shapes=((2, 4, 5),), is_tuple=False)
    assert spec.numel == 40 and spec.sizes == (40,)
    assert flat.shape == (3, 40)
    # row-major flattening, sample by sample
    assert torch.equal(flat[1], z[1].reshape(-1))
    back = spec.unpack(flat)
    assert isinstance(back, torch.Tensor)
    assert torch.equal(back, z)


def test_tuple_round_trip_keeps_order_and_structure() -> None:
    parts = (torch.randn(2, 3, 4, 4), torch.randn(2, 6, 2, 2), torch.randn(2, 5))
    flat, spec = pack(parts)
    assert spec.shapes == ((3, 4, 4), (6, 2, 2), (5,)) and spec.is_tuple
    assert spec.sizes == (48, 24, 5) and spec.numel == 77
    assert flat.shape == (2, 77)
    expected = torch.cat([p.reshape(2, -1) for p in parts], dim=1)  # independent reference
    assert torch.equal(flat, expected)
    back = spec.unpack(flat)
    assert isinstance(back, tuple) and len(back) == 3
    for b, p in zip(back, parts, strict=True):
        assert torch.equal(b, p)
    # a one-element tuple stays a tuple
    _, spec1 = pack((parts[0],))
    assert spec1.is_tuple
    assert isinstance(spec1.unpack(parts[0].reshape(2, -1)), tuple)


def test_pack_then_unpack_is_differentiable() -> None:
    parts = (torch.randn(2, 3, requires_grad=True), torch.randn(2, 2, 2, requires_grad=True))
    flat, spec = pack(parts)
    z0, z1 = spec.unpack(2 * flat)
    (z0.sum() + 3 * z1.sum()).backward()
    assert torch.equal(parts[0].grad, torch.full((2, 3), 2.0))
    assert torch.equal(parts[1].grad, torch.full((2, 2, 2), 6.0))


def test_spec_reuse_with_other_batch_size() -> None:
    _, spec = pack((torch.zeros(4, 2, 3), torch.zeros(4, 1)))
    z = (torch.randn(7, 2, 3), torch.randn(7, 1))
    flat = spec.pack(z)
    assert flat.shape == (7, 7)
    back = spec.unpack(flat)
    assert torch.equal(back[0], z[0]) and torch.equal(back[1], z[1])


def test_of_rejects_bad_states() -> None:
    with pytest.raises(ValueError, match="at least one tensor, got an empty tuple"):
        StateSpec.of(())
    with pytest.raises(ValueError, match=r"state part 0 must be batch first with at least 2 dims"):
        StateSpec.of(torch.zeros(3))
    with pytest.raises(ValueError, match=r"state part 1 must be batch first .* batch 2, got shape \(3, 4\)"):
        StateSpec.of((torch.zeros(2, 4), torch.zeros(3, 4)))
    with pytest.raises(TypeError, match=r"state part 1 must be a torch\.Tensor, got list"):
        StateSpec.of((torch.zeros(2, 4), [1.0]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"state part 0 must be a torch\.Tensor, got list"):
        StateSpec.of([torch.zeros(2, 4)])  # type: ignore[arg-type]


def test_pack_rejects_mismatched_shapes() -> None:
    _, spec = pack((torch.zeros(2, 3), torch.zeros(2, 4, 4)))
    with pytest.raises(ValueError, match="state has 1 parts, expected 2"):
        spec.pack(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="state has 3 parts, expected 2"):
        spec.pack((torch.zeros(2, 3), torch.zeros(2, 4, 4), torch.zeros(2, 1)))
    with pytest.raises(ValueError, match=r"state part 1 has shape \(2, 4, 5\), expected \(B, 4, 4\)"):
        spec.pack((torch.zeros(2, 3), torch.zeros(2, 4, 5)))
    with pytest.raises(ValueError, match=r"state part 0 has shape \(2, 16\), expected \(B, 3\)"):
        spec.pack((torch.zeros(2, 16), torch.zeros(2, 3)))  # same numel, wrong split


def test_pack_rejects_parts_with_different_batch_sizes() -> None:
    _, spec = pack((torch.zeros(2, 3), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match=r"state parts must share the batch size, got batch sizes \[2, 5\]"):
        spec.pack((torch.zeros(2, 3), torch.zeros(5, 4)))


def test_unpack_rejects_wrong_packed_shape() -> None:
    _, spec = pack((torch.zeros(2, 3), torch.zeros(2, 2, 2)))
    with pytest.raises(ValueError, match=r"packed state must have shape \(B, 7\), got \(2, 12\)"):
        spec.unpack(torch.zeros(2, 12))
    with pytest.raises(ValueError, match=r"packed state must have shape \(B, 7\), got \(14,\)"):
        spec.unpack(torch.zeros(14))
