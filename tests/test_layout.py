"""Layouts of shaped populations (circuitlang/layout.py): written (C, H, W) ↔ compiled (H, W, C)."""

from __future__ import annotations

import numpy as np

from circuitlang import layout


def test_internal_shape_moves_channels_last():
    assert layout.internal((64,)) == (64,)
    assert layout.internal((3, 32, 32)) == (32, 32, 3)
    assert layout.internal((8, 100)) == (100, 8)
    assert layout.internal((2, 4, 5, 6)) == (4, 5, 6, 2)


def test_flat_rows_in_written_order_become_channels_last_and_back():
    rng = np.random.default_rng(0)
    flat = rng.random((4, 3 * 5 * 6)).astype(np.float32)  # rows of a Dataset with shape (3, 5, 6)
    img = layout.from_flat(flat, (3, 5, 6))
    assert img.shape == (4, 5, 6, 3)
    b, c, y, x = 2, 1, 4, 3
    assert img[b, y, x, c] == flat[b, c * 30 + y * 6 + x]
    back = layout.from_internal(img, (3, 5, 6))
    np.testing.assert_array_equal(back.reshape(4, -1), flat)
    np.testing.assert_array_equal(layout.to_internal(back, (3, 5, 6)), img)


def test_leading_axes_are_kept():
    steps = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)  # (steps, batch, H, W, C) of [6, 4, 5]
    out = layout.from_internal(steps, (6, 4, 5), lead=2)
    assert out.shape == (2, 3, 6, 4, 5)
    assert out[1, 2, 5, 3, 4] == steps[1, 2, 3, 4, 5]


def test_vectors_pass_through():
    v = np.ones((7, 10))
    assert layout.from_flat(v, (10,)).shape == (7, 10)
    assert layout.to_internal(v, (10,)) is v and layout.from_internal(v, (10,)) is v
    assert layout.describe((32, 14, 14)) == "[32, 14, 14]"
