import numpy as np
import torch

from noveltynets.data import from_uint8, load_mnist5k, load_split, make_grid, split_indices, to_uint8


def test_mnist5k_is_5000_digits_500_per_class_padded_to_32():
    full = load_mnist5k()
    assert full.images.shape == (5000, 1, 32, 32)
    assert torch.bincount(full.labels).tolist() == [500] * 10
    assert full.images.min() == -1 and full.images.max() == 1
    assert (full.images[:, :, :2] == -1).all() and (full.images[:, :, :, -2:] == -1).all()  # padding is background


def test_split_is_fixed_stratified_and_disjoint():
    labels = load_mnist5k().labels.numpy()
    train, held = split_indices(labels)
    assert len(train) == 4500 and len(held) == 500
    assert not set(train) & set(held)
    assert np.bincount(labels[held]).tolist() == [50] * 10
    train2, held2 = split_indices(labels)
    assert (held == held2).all()
    assert not (split_indices(labels, seed=1)[1] == held).all()
    assert len(load_split("train")) == 4500 and len(load_split("heldout")) == 500


def test_uint8_round_trip_and_grid():
    x = torch.linspace(-1, 1, 2 * 32 * 32).view(2, 1, 32, 32)
    u = to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (2, 32, 32) and u.min() == 0 and u.max() == 255
    assert torch.allclose(from_uint8(u), x, atol=1 / 127.5)
    grid = make_grid(np.stack([u[0]] * 5), ncols=3, pad=2)
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2)
