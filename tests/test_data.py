"""Datasets for `circuitc train --data SPEC` (circuitlang/data.py)."""

from __future__ import annotations

import gzip
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from circuitlang import data
from circuitlang.data import DataError, Dataset, load, read_idx
from circuitlang.errors import CircuitError

FASHION = Path(data.FASHION_MNIST_DIR)
INSTALL = "apt-get install dataset-fashion-mnist"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Keep the digits cache out of the user's home directory."""
    monkeypatch.setenv("CIRCUITLANG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_split_sizes():
    d = load("digits")
    assert (d.name, d.spec, d.n_classes, d.input_size, d.output_size) == ("digits", "digits", 10, 64, 10)
    assert d.shape == (1, 8, 8) and "64 inputs (1x8x8)" in repr(d)
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert d.x_train.dtype == d.x_test.dtype == np.float32
    assert d.y_train.dtype == d.y_test.dtype == np.int32
    for x in (d.x_train, d.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.round(x * 16))  # pixels / 16
    assert not d.x_train.flags.writeable  # shared by the in-process cache
    assert load("digits") is d


def test_digits_split_is_exactly_sklearns_stratified_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        raw.data, raw.target, test_size=360, random_state=0, stratify=raw.target)
    d = load("digits")
    np.testing.assert_array_equal(d.x_train, (x_train / 16).astype(np.float32))
    np.testing.assert_array_equal(d.x_test, (x_test / 16).astype(np.float32))
    np.testing.assert_array_equal(d.y_train, y_train)
    np.testing.assert_array_equal(d.y_test, y_test)
    # stratified: every class in the test set in proportion (not the file's tail)
    share = np.bincount(raw.target, minlength=10) / len(raw.target)
    counts = np.bincount(d.y_test, minlength=10)
    assert np.all(np.abs(counts - 360 * share) <= 1), counts


def test_digits_cache_round_trip_and_repair(tmp_path):
    fresh = data._digits_arrays(None)
    first = data._digits_arrays(tmp_path)  # computes and writes
    (cached,) = tmp_path.glob("digits-split-*.npz")
    second = data._digits_arrays(tmp_path)  # reads
    for a, b, c in zip(fresh, first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    cached.write_bytes(b"not a zip file")
    for a, b in zip(fresh, data._digits_arrays(tmp_path)):  # a damaged cache is rebuilt
        np.testing.assert_array_equal(a, b)
    assert np.load(cached)["x_train"].shape == (1437, 64)


def test_digits_from_a_warm_cache_does_not_import_sklearn(tmp_path, monkeypatch):
    """Importing scikit-learn takes ~2 s; a warm `load("digits")` takes milliseconds."""
    fresh = data._digits_arrays(tmp_path)
    for name in ("sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    for a, b in zip(fresh, data._digits_arrays(tmp_path)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="scikit-learn, which cannot be imported"):
        data._digits_arrays(tmp_path / "cold")


def test_cache_dir_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("CIRCUITLANG_CACHE", "off")
    assert data._cache_dir() is None
    monkeypatch.delenv("CIRCUITLANG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert data._cache_dir() == Path("/somewhere/circuitlang")


# ---------------------------------------------------------------- IDX

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
          np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_mnist(root: Path, gz: bool = True, n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        write_idx(root / (stem + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    if dtype == "u1":
        arr = arr.astype("i2").clip(0).astype("u1")
    out = read_idx(write_idx(tmp_path / f"a{suffix}", arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_decides_gzip_by_content(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    path = tmp_path / "labels"  # compressed, but no .gz in the name
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(path), arr)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_idx_dataset_round_trip(tmp_path, gz, kind):
    arrays = write_mnist(tmp_path / "d", gz=gz)
    d = load(f"{kind}:{tmp_path / 'd'}")
    assert (d.name, d.n_classes, d.input_size, d.output_size) == (kind, 10, 12, 10)
    assert d.shape == (1, 4, 3)  # one channel, rows and columns from the IDX header
    assert d.spec == f"{kind}:{tmp_path / 'd'}"
    np.testing.assert_array_equal(d.x_train, arrays["train-images-idx3-ubyte"].reshape(12, 12) / np.float32(255))
    np.testing.assert_array_equal(d.x_test * 255, arrays["t10k-images-idx3-ubyte"].reshape(5, 12))
    np.testing.assert_array_equal(d.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32


def test_idx_dataset_accepts_dotted_names(tmp_path):
    arrays = write_mnist(tmp_path, gz=False)
    for stem in arrays:
        (tmp_path / stem).rename(tmp_path / stem.replace("-idx", ".idx"))  # train-images.idx3-ubyte
    assert len(load(f"mnist:{tmp_path}").x_train) == 12


def test_idx_dataset_reloads_edited_files(tmp_path):
    write_mnist(tmp_path, n_train=12)
    assert len(load(f"mnist:{tmp_path}").x_train) == 12
    write_mnist(tmp_path, n_train=20)
    assert len(load(f"mnist:{tmp_path}").x_train) == 20


def _header(code: int = 0x08, dims: tuple[int, ...] = (3,)) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.array(dims, ">u4").tobytes()


@pytest.mark.parametrize("content, expected", [
    (b"", "not an IDX file"),
    (b"\x00\x01\x08\x01" + bytes(7), "not an IDX file"),       # bad magic
    (b"\x00\x00\x07\x01" + bytes(7), "not an IDX file"),       # unknown dtype code
    (b"\x00\x00\x08\x00", "not an IDX file"),                  # zero dimensions
    (_header(dims=(3, 2))[:9], "truncated IDX header"),
    (_header(dims=(3, 2)) + bytes(5), "is truncated: the header says 3x2 uint8 (6 bytes of data)"),
    (_header(0x0C, (4,)) + bytes(12), "is truncated: the header says 4 int32 (16 bytes of data)"),
    (_header(dims=(3,)) + bytes(4), "has trailing bytes"),
])
def test_corrupt_idx_is_a_data_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_a_data_error_naming_the_file(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    for name, content in (("cut.gz", good[: len(good) // 2]), ("noise.gz", good[:10] + bytes(40))):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match="cannot read") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_truncated_file_inside_a_dataset(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: is truncated"):
        load(f"fashion-mnist:{tmp_path}")


@pytest.mark.parametrize("stem, arr, expected", [
    ("train-labels-idx1-ubyte", np.zeros(11, np.uint8), "holds 12 images but .* holds 11 labels"),
    ("t10k-labels-idx1-ubyte", np.array([1, 2, 10, 0, 0], np.uint8), "label 10 is out of range"),
    ("train-labels-idx1-ubyte", np.zeros(12, np.int32), r"holds int32 \(12,\), expected uint8 labels"),
    ("t10k-images-idx3-ubyte", np.zeros((5, 12), np.uint8), "expected uint8 images"),
    ("t10k-images-idx3-ubyte", np.zeros((5, 3, 4), np.uint8), "image sizes differ"),
])
def test_inconsistent_idx_files(tmp_path, stem, arr, expected):
    write_mnist(tmp_path)
    write_idx(tmp_path / (stem + ".gz"), arr)
    with pytest.raises(DataError, match=expected):
        load(f"mnist:{tmp_path}")


def test_missing_fashion_mnist_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    for spec in ("fashion-mnist", f"fashion-mnist:{tmp_path / 'other'}"):
        with pytest.raises(DataError) as info:
            load(spec)
        message = str(info.value)
        assert "does not exist" in message and INSTALL in message and "--data mnist:DIR" in message
    assert str(tmp_path / "nowhere") in str(pytest.raises(DataError, load, "fashion-mnist").value)


def test_missing_file_in_an_existing_directory_is_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz not found") as info:
        load(f"fashion-mnist:{tmp_path}")
    assert str(tmp_path) in str(info.value) and INSTALL in str(info.value)


def test_mnist_needs_a_directory(tmp_path):
    with pytest.raises(DataError, match="`mnist` needs the directory") as info:
        load("mnist")
    assert "--data mnist:DIR" in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        load(f"mnist:{tmp_path / 'none'}")


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST not installed ({INSTALL})")
def test_real_fashion_mnist():
    d = load("fashion-mnist")
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784) and d.shape == (1, 28, 28)
    assert d.x_train.dtype == np.float32 and 0.0 == d.x_train.min() and d.x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(d.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(d.y_test), np.full(10, 1000))
    np.testing.assert_array_equal(d.y_train[:6], [9, 0, 0, 3, 0, 2])  # ankle boot, T-shirt, ...
    assert load(f"fashion-mnist:{FASHION}") is d  # parsed once per process


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_defaults():
    d = load("synthetic:n=300,test=50")
    assert (d.name, d.n_classes, d.input_size, d.output_size) == ("synthetic", None, 392, 10)
    assert d.shape == (392,) and load("synthetic:n=5,test=5,in=7").shape == (7,)
    assert d.spec == "synthetic:n=300,test=50,in=392,out=10,hidden=32,seed=0"
    assert d.x_train.shape == (300, 392) and d.y_train.shape == (300, 10) and d.y_test.shape == (50, 10)
    assert d.x_train.dtype == d.y_train.dtype == np.float32
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert 0 < d.y_train.min() and d.y_train.max() < 1
    assert d.targets(d.y_test) is d.y_test  # regression targets are used as given


def test_synthetic_is_deterministic_given_the_seed():
    a, b = load("synthetic:n=200,test=40,in=30,out=3"), load("synthetic:n=200,test=40,in=30,out=3")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = load("synthetic:n=200,test=40,in=30,out=3", seed=1)
    assert not np.array_equal(a.y_train, c.y_train)
    d = load("synthetic:n=200,test=40,in=30,out=3,seed=1", seed=7)  # the option wins
    np.testing.assert_array_equal(c.y_train, d.y_train)
    assert d.spec.endswith("seed=1")
    # the teacher and the test set do not depend on the number of training samples
    e = load("synthetic:n=500,test=40,in=30,out=3")
    np.testing.assert_array_equal(a.x_test, e.x_test)
    np.testing.assert_array_equal(a.y_test, e.y_test)


def test_synthetic_untrained_mse_is_about_a_tenth_and_the_task_is_learnable():
    d = load("synthetic:n=4000,test=1000")
    untrained = float(np.mean((d.y_test - 0.5) ** 2))  # a student answering 1/2
    assert 0.09 < untrained < 0.11
    np.testing.assert_allclose(d.y_test.var(0), 0.1, atol=0.015)
    ones = lambda x: np.c_[x, np.ones(len(x))]  # noqa: E731
    a = ones(d.x_train)
    w = np.linalg.solve(a.T @ a, a.T @ d.y_train)  # least squares (lstsq's SVD is slow here)
    linear = float(np.mean((ones(d.x_test) @ w - d.y_test) ** 2))
    assert linear < 0.5 * untrained  # there is signal to learn ...
    assert linear > 0.1 * untrained  # ... and a linear student does not get all of it


@pytest.mark.parametrize("spec, expected", [
    ("synthetic:nn=3", "unknown option `nn`; did you mean `n`"),
    ("synthetic:n=x", "`n=x` is not an integer"),
    ("synthetic:n", "must be given once"),
    ("synthetic:n=3,n=4", "must be given once"),
    ("synthetic:test=0", "`test=0` must be a positive integer"),
    ("synthetic:seed=-1", "must be a non-negative integer"),
    ("synthetic:n=100000000", "GiB"),
])
def test_synthetic_bad_options(spec, expected):
    with pytest.raises(DataError, match=expected):
        load(spec)


# ---------------------------------------------------------------- npz


def test_npz_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.random((8, 2, 3)), y_train=np.arange(8) % 3,
             x_test=rng.random((4, 2, 3)), y_test=np.array([0, 1, 2, 3]))
    d = load(f"npz:{path}")
    assert (d.name, d.n_classes, d.input_size, d.output_size) == ("npz", 4, 6, 4)
    assert d.shape == (2, 3)
    assert d.x_train.shape == (8, 6) and d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.targets(d.y_test), np.eye(4, dtype=np.float32))
    np.savez(path, x_train=rng.random((8, 5)), y_train=rng.random(8),
             x_test=rng.random((4, 5)), y_test=rng.random(4))
    r = load(f"npz:{path}")
    assert r.n_classes is None and r.output_size == 1 and r.y_train.shape == (8, 1)
    assert r.y_train.dtype == np.float32 and r.shape == (5,)


def test_npz_keeps_the_image_shape_and_flattens_in_c_order(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.random((6, 3, 4, 5)), rng.random((2, 3, 4, 5))
    path = tmp_path / "images.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(6) % 2, x_test=x_test, y_test=np.array([0, 1]))
    d = load(f"npz:{path}")
    assert d.shape == (3, 4, 5) and d.input_size == 60 and d.x_train.shape == (6, 60)
    c, y, x = 2, 1, 3  # channel-major, then rows, then columns
    assert d.x_train[4, c * 20 + y * 5 + x] == np.float32(x_train[4, c, y, x])
    np.testing.assert_array_equal(d.x_test.reshape(2, *d.shape), x_test.astype(np.float32))
    assert "60 inputs (3x4x5)" in repr(d)


def test_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, None]
    np.savez(path, x_train=np.zeros((2, 3)), y_train=objects, x_test=np.zeros((2, 3)), y_test=np.zeros(2))
    with pytest.raises(DataError, match="holds Python objects.*never does"):
        load(f"npz:{path}")
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x_train": 1}))
    with pytest.raises(DataError, match="not an .npz"):
        load(f"npz:{pickled}")


@pytest.mark.parametrize("arrays, expected", [
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(2, int)}, "missing arrays x_test, y_test"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, r"x_train holds 2 samples but y_train is shaped \(3,\)"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 4)),
      "y_test": np.zeros(2, int)}, "x_train has 3 features per sample, x_test 4"),
    ({"x_train": np.zeros((2, 2, 3)), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 3, 2)),
      "y_test": np.zeros(2, int)}, r"x_train samples are shaped \(2, 3\), x_test samples \(3, 2\)"),
    ({"x_train": np.zeros((2, 0)), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 0)),
      "y_test": np.zeros(2, int)}, r"x_train is float64 \(2, 0\)"),
    ({"x_train": np.zeros(2), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, r"x_train is float64 \(2,\)"),
    ({"x_train": np.full((2, 3), np.nan), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, "NaN"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.array([0, -1]), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, "non-negative"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.array(["a", "b"]), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, "expected integer labels"),
])
def test_npz_bad_contents(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=expected):
        load(f"npz:{path}")


def test_npz_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="text.npz"):
        load(f"npz:{tmp_path / 'text.npz'}")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match="is a single .npy array"):
        load(f"npz:{tmp_path / 'one.npy'}")
    with pytest.raises(DataError, match="needs a path"):
        load("npz:")


# ---------------------------------------------------------------- specs and the Dataset type


@pytest.mark.parametrize("spec, expected", [
    ("digit", "unknown dataset `digit`; did you mean `digits`"),
    ("fashion_mnist", "did you mean `fashion-mnist`"),
    ("imagenet", "datasets: digits, fashion-mnist.*, cifar10:DIR, cifar100:DIR"),
    ("cifar", "did you mean `cifar10`"),
    ("cifar-100", "did you mean `cifar100`"),
    ("mine.npz", "--data npz:mine.npz"),
    ("digits:extra", "`digits` takes no argument"),
])
def test_unknown_specs(spec, expected):
    with pytest.raises(DataError, match=expected) as info:
        load(spec)
    assert isinstance(info.value, CircuitError)


def test_targets_one_hot_and_label_range():
    d = load("digits")
    t = d.targets(d.y_test[:5])
    assert t.dtype == np.float32 and t.shape == (5, 10)
    np.testing.assert_array_equal(t.argmax(1), d.y_test[:5])
    np.testing.assert_array_equal(t.sum(1), 1)
    with pytest.raises(DataError, match="0..9"):
        d.targets(np.array([10]))


def test_dataset_validates_its_arrays():
    x, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int32)
    with pytest.raises(DataError, match="expected float32"):
        Dataset("t", x.astype(np.float64), y, x, y, n_classes=2, input_size=2, output_size=2)
    with pytest.raises(DataError, match="expected int32"):
        Dataset("t", x, y.astype(np.int64), x, y, n_classes=2, input_size=2, output_size=2)
    with pytest.raises(DataError, match=r"expected float32 \(N, 2\)"):
        Dataset("t", x, y, x, y, n_classes=None, input_size=2, output_size=2)
    assert "3 train / 3 test" in repr(Dataset("t", x, y, x, y, n_classes=2, input_size=2, output_size=2))


def test_dataset_shape_defaults_to_flat_and_must_match_the_input_size():
    x, y = np.zeros((3, 6), np.float32), np.zeros(3, np.int32)
    assert Dataset("t", x, y, x, y, n_classes=2, input_size=6, output_size=2).shape == (6,)
    d = Dataset("t", x, y, x, y, n_classes=2, input_size=6, output_size=2, shape=[1, np.int64(2), 3])
    assert d.shape == (1, 2, 3) and type(d.shape[1]) is int
    with pytest.raises(DataError, match=r"samples shaped \(2, 2\) hold 4 values, but input_size is 6"):
        Dataset("t", x, y, x, y, n_classes=2, input_size=6, output_size=2, shape=(2, 2))
    with pytest.raises(DataError, match="must be positive integers"):
        Dataset("t", x, y, x, y, n_classes=2, input_size=6, output_size=2, shape=(6, 1.0))


# ---------------------------------------------------------------- CIFAR binary releases


def cifar_records(rng: np.random.Generator, n: int, labels: list[tuple[int, int]]) -> tuple[np.ndarray, bytes]:
    """`n` random images (n, 3, 32, 32) uint8 and their records: label bytes, then
    1024 red, 1024 green, 1024 blue bytes, each plane row-major."""
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    rows = [np.r_[np.array(lab, np.uint8), img.ravel()] for lab, img in zip(labels, images)]
    return images, np.stack(rows).tobytes()


def write_cifar10(root: Path, n_train: int = 7, n_test: int = 4, seed: int = 0) -> dict:
    """The real layout of cifar-10-batches-bin, `n_train` records per batch file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        n = n_test if name == "test_batch.bin" else n_train
        y = rng.integers(0, 10, n)
        x, raw = cifar_records(rng, n, [(int(v),) for v in y])
        (folder / name).write_bytes(raw)
        images.append(x)
        labels.append(y)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    return {"folder": folder, "x_train": np.concatenate(images[:5]), "y_train": np.concatenate(labels[:5]),
            "x_test": images[5], "y_test": labels[5]}


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"folder": folder}
    for split, n in (("train", n_train), ("test", n_test)):
        coarse, fine = rng.integers(0, 20, n), rng.integers(0, 100, n)
        x, raw = cifar_records(rng, n, list(zip(coarse.tolist(), fine.tolist())))
        (folder / f"{split}.bin").write_bytes(raw)
        out |= {f"x_{split}": x, f"coarse_{split}": coarse, f"fine_{split}": fine}
    return out


def expected_normalised(x_train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy oracle in float64: per-channel moments of the train pixels / 255."""
    pixels = x_train.astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    z = (x.astype(np.float64) / 255 - mean[:, None, None]) / std[:, None, None]
    return z.astype(np.float32), mean, std


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any use of pickle or np.load while loading is a failure."""
    def refuse(*args, **kwargs):
        raise AssertionError("a CIFAR loader must never unpickle nor np.load")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)


def test_cifar10_layout_labels_and_normalisation(tmp_path, no_unpickling):
    written = write_cifar10(tmp_path)
    d = load(f"cifar10:{written['folder']}")
    assert (d.name, d.n_classes, d.output_size, d.input_size, d.shape) == ("cifar10", 10, 10, 3072, (3, 32, 32))
    assert d.spec == f"cifar10:{written['folder'].resolve()}"
    assert d.x_train.shape == (35, 3072) and d.x_test.shape == (4, 3072)
    assert d.x_train.dtype == d.x_test.dtype == np.float32 and d.y_train.dtype == np.int32
    assert not d.x_train.flags.writeable
    np.testing.assert_array_equal(d.y_train, written["y_train"])  # batch 1 first, then 2, ...
    np.testing.assert_array_equal(d.y_test, written["y_test"])
    # pixel (c, y, x) of record i is input c*1024 + y*32 + x
    x_train, expected_train, mean, std = written["x_train"], *expected_normalised(written["x_train"],
                                                                               written["x_train"])
    for i, c, y, x in ((0, 0, 0, 0), (9, 1, 5, 30), (34, 2, 31, 31), (20, 2, 0, 17)):
        value = (x_train[i, c, y, x] / 255 - mean[c]) / std[c]
        np.testing.assert_allclose(d.x_train[i, c * 1024 + y * 32 + x], value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.x_train.reshape(-1, 3, 32, 32), expected_train, rtol=1e-6, atol=1e-6)
    # the test split uses the training split's moments
    expected_test = expected_normalised(x_train, written["x_test"])[0]
    np.testing.assert_allclose(d.x_test.reshape(-1, *d.shape), expected_test, rtol=1e-6, atol=1e-6)
    planes = d.x_train.reshape(35, 3, 1024).astype(np.float64)
    np.testing.assert_allclose(planes.mean(axis=(0, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(planes.std(axis=(0, 2)), 1, atol=1e-6)
    got_mean, got_std = d.normalization
    np.testing.assert_allclose(got_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got_std, std, rtol=1e-12)
    assert all(type(v) is float for v in got_mean + got_std) and len(got_mean) == 3
    assert "3072 inputs (3x32x32)" in repr(d)


def test_cifar10_from_the_parent_folder_and_the_cache(tmp_path):
    written = write_cifar10(tmp_path)
    d = load(f"cifar10:{tmp_path}")
    assert d.spec == f"cifar10:{written['folder'].resolve()}"  # one canonical spec for both forms
    assert load(d.spec) is d  # parsed once per process
    np.testing.assert_array_equal(d.y_train, written["y_train"])
    write_cifar10(tmp_path, n_test=9, seed=1)  # an edit (new size and mtime) reloads
    e = load(f"cifar10:{tmp_path}")
    assert e is not d and len(e.x_test) == 9


def test_cifar100_fine_and_coarse_labels(tmp_path, no_unpickling):
    written = write_cifar100(tmp_path)
    fine = load(f"cifar100:{tmp_path}")
    assert (fine.name, fine.n_classes, fine.output_size, fine.shape) == ("cifar100", 100, 100, (3, 32, 32))
    assert fine.spec == f"cifar100:{written['folder'].resolve()}"
    np.testing.assert_array_equal(fine.y_train, written["fine_train"])
    np.testing.assert_array_equal(fine.y_test, written["fine_test"])
    expected = expected_normalised(written["x_train"], written["x_test"])[0]
    np.testing.assert_allclose(fine.x_test.reshape(-1, 3, 32, 32), expected, rtol=1e-6, atol=1e-6)
    coarse = load(f"cifar100:{written['folder']}, labels = coarse")
    assert (coarse.n_classes, coarse.output_size) == (20, 20)
    assert coarse.spec == f"cifar100:{written['folder'].resolve()},labels=coarse"
    np.testing.assert_array_equal(coarse.y_train, written["coarse_train"])
    np.testing.assert_array_equal(coarse.y_test, written["coarse_test"])
    np.testing.assert_array_equal(coarse.x_train, fine.x_train)
    assert load(f"cifar100:{tmp_path},labels=fine").spec == fine.spec  # the default is not spelled out
    assert load(coarse.spec).n_classes == 20


@pytest.mark.parametrize("options, expected", [
    ("label=coarse", "unknown option `label`; did you mean `labels`"),
    ("labels=coarce", "`labels=coarce` must be `fine` or `coarse`; did you mean `coarse`"),
    ("labels=", "`labels=` must be `fine` or `coarse`"),
    ("labels=fine,labels=coarse", "option `labels` is given twice"),
])
def test_cifar100_bad_options(tmp_path, options, expected):
    write_cifar100(tmp_path)
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load(f"cifar100:{tmp_path},{options}")
    assert "labels=fine|coarse" in str(info.value)


def test_cifar10_takes_no_options(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="unknown option `labels`") as info:
        load(f"cifar10:{tmp_path},labels=coarse")
    assert "`cifar10` takes no options" in str(info.value)


def test_cifar_directory_may_hold_commas(tmp_path):
    written = write_cifar10(tmp_path / "a,b")
    assert load(f"cifar10:{tmp_path / 'a,b'}").spec == f"cifar10:{written['folder'].resolve()}"


@pytest.mark.parametrize("kind, archive, link", [
    ("cifar10", "cifar-10-binary.tar.gz", "CIFAR-10 binary version (suitable for C programs)"),
    ("cifar100", "cifar-100-binary.tar.gz", "CIFAR-100 binary version"),
])
def test_missing_cifar_says_where_to_get_it(tmp_path, kind, archive, link):
    for spec, expected in ((kind, f"`{kind}` needs the directory"),
                           (f"{kind}:{tmp_path / 'none'}", f"directory {tmp_path / 'none'} does not exist"),
                           (f"{kind}:{tmp_path}", f"{tmp_path.resolve()} holds neither the folder cifar-")):
        with pytest.raises(DataError, match=re.escape(expected)) as info:
            load(spec)
        message = str(info.value)
        assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and link in message
        assert f"tar xzf {archive}" in message


def test_missing_cifar10_batch_is_named(tmp_path):
    written = write_cifar10(tmp_path)
    (written["folder"] / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=re.escape(f"{written['folder'].resolve() / 'data_batch_3.bin'} not found")):
        load(f"cifar10:{tmp_path}")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is not a directory"):
        load(f"cifar10:{tmp_path / 'file'}")


@pytest.mark.parametrize("layout", ["folder", "parent", "loose"])
def test_the_pickled_python_release_is_refused(tmp_path, layout, no_unpickling):
    folder = {"folder": tmp_path / "cifar-10-batches-py", "parent": tmp_path / "cifar-10-batches-py",
              "loose": tmp_path / "mine"}[layout]
    folder.mkdir()
    names = ["data_batch_1"] if layout == "loose" else ["data_batch_1", "data_batch_2", "test_batch", "batches.meta"]
    for name in names:
        (folder / name).write_bytes(pickle.dumps({"data": [1, 2, 3]}))
    where = tmp_path if layout == "parent" else folder
    with pytest.raises(DataError, match="reads only the binary release and never unpickles") as info:
        load(f"cifar10:{where}")
    assert str(folder) in str(info.value) and "CIFAR-10 binary version" in str(info.value)
    python100 = tmp_path / "cifar-100-python"
    python100.mkdir()
    for name in ("train", "test", "meta"):
        (python100 / name).write_bytes(pickle.dumps([0]))
    with pytest.raises(DataError, match="never unpickles"):
        load(f"cifar100:{python100}")


@pytest.mark.parametrize("cut, expected", [
    (-5, "30725 bytes, which is not a whole number of 3073-byte records"),  # 10 records, 5 bytes short
    (+1, "30736 bytes, which is not a whole number"),
])
def test_truncated_cifar_file_is_named_with_its_size(tmp_path, cut, expected):
    written = write_cifar10(tmp_path, n_train=10)
    path = written["folder"] / "data_batch_2.bin"
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut < 0 else raw + bytes(cut + 5))
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load(f"cifar10:{tmp_path}")
    assert str(path.resolve()) in str(info.value) and "1 label byte and 3072 pixel bytes" in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes, which is not a whole number"):
        load(f"cifar10:{tmp_path}")


def test_an_oversized_cifar_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path)
    path = written["folder"] / "test_batch.bin"
    with open(path, "r+b") as f:  # sparse: 10001 records' worth of bytes on no disk
        f.truncate(10001 * 3073)
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: pytest.fail("read before its size was checked"))
    with pytest.raises(DataError, match="10001 records, more than the 10000 of the real release") as info:
        load(f"cifar10:{tmp_path}")
    assert str(path.resolve()) in str(info.value)


def test_cifar_labels_out_of_range(tmp_path):
    written = write_cifar10(tmp_path)
    path = written["folder"] / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[2 * 3073] = 10  # the label byte of record 2
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=re.escape("test_batch.bin: record 2 has label 10, out of range 0..9")):
        load(f"cifar10:{tmp_path}")
    written = write_cifar100(tmp_path)
    for offset, expected in ((0, "record 3 has coarse label 20, out of range 0..19"),
                             (1, "record 3 has fine label 100, out of range 0..99")):
        path = written["folder"] / "train.bin"
        raw = bytearray(path.read_bytes())
        raw[3 * 3074 + offset] = 20 if offset == 0 else 100
        path.write_bytes(bytes(raw))
        with pytest.raises(DataError, match=re.escape(expected)):
            load(f"cifar100:{tmp_path}")
        write_cifar100(tmp_path)


def test_constant_cifar_channel_is_a_data_error(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    record = np.r_[np.array([1, 2], np.uint8), np.full(3072, 7, np.uint8)]
    for name in ("train.bin", "test.bin"):
        (folder / name).write_bytes(np.tile(record, 3).tobytes())
    with pytest.raises(DataError, match="every red pixel of the training images is 7"):
        load(f"cifar100:{tmp_path}")
