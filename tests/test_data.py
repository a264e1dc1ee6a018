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
    monkeypatch.setenv("CIRCUITLANG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


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
    monkeypatch.setenv("CIRCUITLANG_CACHE_DIR", "")
    assert data._cache_dir() is None
    monkeypatch.delenv("CIRCUITLANG_CACHE_DIR")
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
    with pytest.raises(DataError, match="never unpickles"):
        load(f"npz:{path}")
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x_train": 1}))
    with pytest.raises(DataError, match="never unpickles"):
        load(f"npz:{pickled}")


@pytest.mark.parametrize("arrays, expected", [
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(2, int)}, "missing arrays x_test, y_test"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2, int)}, "2 inputs but 3 targets"),
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
    with pytest.raises(DataError, match="no such file"):
        load(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="text.npz"):
        load(f"npz:{tmp_path / 'text.npz'}")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match="not an .npz archive"):
        load(f"npz:{tmp_path / 'one.npy'}")
    with pytest.raises(DataError, match="needs a path"):
        load("npz:")


# ---------------------------------------------------------------- specs and the Dataset type


@pytest.mark.parametrize("spec, expected", [
    ("digit", "unknown dataset `digit`; did you mean `digits`"),
    ("fashion_mnist", "did you mean `fashion-mnist`"),
    ("cifar10", "datasets: digits, fashion-mnist"),
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
