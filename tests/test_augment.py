"""Random crops and flips of image batches (circuitlang/augment.py), against NumPy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circuitlang.augment import AUGMENTATIONS, augment, parse_augment
from circuitlang.errors import CircuitError


def images(b: int = 16, h: int = 6, w: int = 5, c: int = 3, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Distinct values everywhere (and no zeros), so a window or a flip is identifiable."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(b * h * w * c).reshape(b, h, w, c) + 1).astype(dtype)


def crop_oracle(x: np.ndarray, pad: int, out: np.ndarray) -> list[tuple[int, int]]:
    """For each sample, the one offset (dy, dx) whose window of the zero-padded image is
    `out`; fails when there is none."""
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    found = []
    for i in range(b):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if np.array_equal(padded[i, dy:dy + h, dx:dx + w], out[i])]
        assert len(hits) == 1, f"sample {i} is no window of its padded image"
        found.append(hits[0])
    return found


def flip_oracle(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Which samples `out` holds mirrored along W; fails when one is neither."""
    flipped = np.array([np.array_equal(o, s[:, ::-1]) for s, o in zip(x, out)])
    kept = np.array([np.array_equal(o, s) for s, o in zip(x, out)])
    assert np.all(flipped ^ kept)
    return flipped


def test_names_and_parsing():
    assert AUGMENTATIONS == ("crop", "flip")
    assert parse_augment("crop,flip") == ("crop", "flip")
    assert parse_augment(" Flip , crop ") == ("flip", "crop")
    assert parse_augment("flip") == ("flip",)
    assert parse_augment("") == parse_augment("  ") == ()


@pytest.mark.parametrize("text, expected", [
    ("crop,flpi", "unknown augmentation `flpi`; did you mean `flip`?"),
    ("corp", "unknown augmentation `corp`; did you mean `crop`?"),
    ("rotate", "unknown augmentation `rotate`"),
    ("crop,flip,crop", "augmentation `crop` is given twice"),
    ("crop,,flip", "empty augmentation name"),
])
def test_parse_errors(text, expected):
    with pytest.raises(CircuitError) as info:
        parse_augment(text)
    assert expected in str(info.value) and "augmentations: crop, flip" in str(info.value)


@pytest.mark.parametrize("ops", [(), ("crop",), ("flip",), ("crop", "flip"), ("flip", "crop")])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int32])
def test_shape_and_dtype_are_kept(ops, dtype):
    x = jnp.asarray(images(dtype=dtype) % 200)
    out = augment(jax.random.key(0), x, ops)
    assert out.shape == x.shape and out.dtype == x.dtype
    if not ops:
        np.testing.assert_array_equal(out, x)


def test_the_same_key_gives_the_same_result_and_other_keys_others():
    x = jnp.asarray(images(b=64))
    a = augment(jax.random.key(3), x, ("crop", "flip"))
    np.testing.assert_array_equal(a, augment(jax.random.key(3), x, ("crop", "flip")))
    np.testing.assert_array_equal(a, augment(jax.random.PRNGKey(3), x, ("crop", "flip")))  # raw keys too
    assert not np.array_equal(a, augment(jax.random.key(4), x, ("crop", "flip")))


@pytest.mark.parametrize("pad", [1, 4])
def test_crop_is_a_window_of_the_zero_padded_image(pad):
    x = images(b=200, h=8, w=7, c=2)
    out = np.asarray(augment(jax.random.key(1), jnp.asarray(x), ("crop",), pad=pad))
    offsets = np.array(crop_oracle(x, pad, out))
    # every offset in 0..2*pad occurs, along each axis, and samples draw their own
    for axis in (0, 1):
        assert set(offsets[:, axis]) == set(range(2 * pad + 1))
    assert len({tuple(o) for o in offsets}) > 2 * pad + 1
    assert np.any(out == 0)  # some windows reach into the zero border


def test_crop_without_padding_is_the_identity():
    x = jnp.asarray(images())
    np.testing.assert_array_equal(augment(jax.random.key(0), x, ("crop",), pad=0), x)


def test_flip_flips_exactly_the_chosen_samples_about_half_of_them():
    x = images(b=2000, h=3, w=4, c=2)
    out = np.asarray(augment(jax.random.key(2), jnp.asarray(x), ("flip",)))
    flipped = flip_oracle(x, out)
    assert 900 < flipped.sum() < 1100  # Binomial(2000, 1/2): mean 1000, std 22
    # the coin is the op's own key: the same samples flip whatever else is on
    both = np.asarray(augment(jax.random.key(2), jnp.asarray(x), ("crop", "flip"), pad=0))
    np.testing.assert_array_equal(both, out)


def test_crop_then_flip_composes_the_two_oracles():
    x = images(b=50, h=6, w=6, c=1)
    key = jax.random.key(5)
    cropped = np.asarray(augment(key, jnp.asarray(x), ("crop",), pad=2))
    both = np.asarray(augment(key, jnp.asarray(x), ("crop", "flip"), pad=2))
    flipped = flip_oracle(cropped, both)  # the crops are the same with flip turned on
    assert 0 < flipped.sum() < 50


def test_works_under_jit_and_vmaps_no_python_loop():
    x = jnp.asarray(images(b=32))
    step = jax.jit(augment, static_argnames=("ops", "pad"))
    for key in (jax.random.key(0), jax.random.key(9)):
        np.testing.assert_array_equal(step(key, x, ops=("crop", "flip"), pad=3),
                                      augment(key, x, ("crop", "flip"), pad=3))

    @jax.jit
    def epoch(key, x):  # as the training epoch uses it: ops closed over, keys split per batch
        keys = jax.random.split(key, 4)
        return jax.vmap(lambda k: augment(k, x, ("crop", "flip")))(keys)

    out = epoch(jax.random.key(1), x)
    assert out.shape == (4, *x.shape)
    assert not np.array_equal(out[0], out[1])
    # no Python loop over samples: the program does not grow with the batch
    sizes = [len(jax.make_jaxpr(lambda k, x: augment(k, x, ("crop", "flip")))(jax.random.key(0),
                                                                              jnp.asarray(images(b=b))).eqns)
             for b in (2, 64)]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("call, expected", [
    (lambda x: augment(jax.random.key(0), x, ("rotate",)), "unknown augmentation `rotate`"),
    (lambda x: augment(jax.random.key(0), x, ("flip", "flip")), "name one twice"),
    (lambda x: augment(jax.random.key(0), x, ("crop",), pad=-1), "must be a non-negative integer"),
    (lambda x: augment(jax.random.key(0), x.reshape(16, -1), ("crop",)), "channels last; got shape (16, 90)"),
])
def test_bad_arguments_are_circuit_errors(call, expected):
    with pytest.raises(CircuitError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        call(jnp.asarray(images()))


def test_importing_circuitlang_does_not_import_jax():
    code = "import sys, circuitlang, circuitlang.data; print('jax' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
