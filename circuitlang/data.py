"""Datasets for ``circuitc train --data SPEC``.

    digits                   sklearn's 8x8 digits (embedded in scikit-learn, no download):
                             1437 train / 360 test, stratified split, pixels / 16
    fashion-mnist[:DIR]      the four IDX files from DIR (default
                             /usr/share/datasets/fashion-mnist, from
                             `apt-get install dataset-fashion-mnist`), pixels / 255
    mnist:DIR                the same for MNIST; no copy ships anywhere, so DIR is required
    cifar10:DIR              CIFAR-10 from its binary release (cifar-10-batches-bin/ or the
                             folder holding it): 50000 train / 10000 test, 3x32x32, 10 classes
    cifar100:DIR[,labels=coarse]
                             CIFAR-100 from its binary release (cifar-100-binary/): 100 fine
                             classes, or the 20 coarse ones with labels=coarse; both CIFARs:
                             pixels / 255, then normalised per channel with the training
                             split's mean and std (kept in `Dataset.normalization`)
    synthetic[:k=v,...]      regression on a fixed random teacher network (see `synthetic`)
    npz:PATH                 your own arrays x_train, y_train, x_test, y_test

Every loader returns a `Dataset` of flat float32 inputs scaled to [0, 1] (CIFAR:
normalised per channel; ``npz``: as given) with the per-sample shape in
`Dataset.shape`, and every failure (a missing file, a corrupt IDX header, an unknown
option) is a `DataError` whose message names the file and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.metadata
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import CircuitError, Diagnostic, did_you_mean
from .npzfile import NpzReader
from .resources import require_bytes

__all__ = ["FASHION_MNIST_DIR", "DataError", "Dataset", "load", "read_idx", "synthetic"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_HINT = (
    "install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it puts the four IDX "
    f"files in {FASHION_MNIST_DIR}), or point at a directory holding them with "
    "`--data fashion-mnist:DIR`; MNIST files can be pointed at with `--data mnist:DIR`"
)
_MNIST_HINT = (
    "put the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a directory and pass "
    "`--data mnist:DIR`; no copy of MNIST ships with circuitlang or Debian"
)
_FORMS = ("digits, fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR[,labels=coarse], "
          "synthetic[:key=value,...], npz:PATH")


class DataError(CircuitError):
    """A dataset could not be found, read or built; the message names the file."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(Diagnostic(message, hint=hint))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split, ready for a circuit: one row per sample.

    Attributes:
        name: the kind (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``,
            ``synthetic``, ``npz``).
        x_train, x_test: float32 ``(N, D)`` inputs, scaled to [0, 1] (CIFAR: then
            normalised per channel, see `normalization`). Each row is one
            sample of shape `shape` flattened in C order.
        y_train, y_test: int32 labels ``(N,)`` for classification; float32 ``(N, K)``
            targets for regression.
        n_classes: the number of classes, or None for regression.
        input_size: D.
        output_size: K, the number of output units (``n_classes`` or the target size).
        spec: the canonical spec that rebuilds exactly this dataset, every default spelled out.
        shape: the shape of one sample in written order, ``prod(shape) == D``:
            ``(channels, height, width)`` for images (channel-major, then rows, then
            columns: the order of the CIFAR binary files and of MNIST's pixels), ``(D,)``
            for flat data. Left empty, it is ``(D,)``.
        normalization: ``(mean, std)``, one float per channel each, when the inputs were
            normalised per channel as ``(pixel - mean_c) / std_c`` (pixels in [0, 1]);
            None when they were not (CIFAR sets it, the other loaders do not).

    Arrays returned by `load` are read-only (they may be shared by a cache).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int | None
    input_size: int
    output_size: int
    spec: str = ""
    shape: tuple[int, ...] = ()
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        where = self.spec or self.name
        shape = tuple(self.shape) or (self.input_size,)
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape):
            raise DataError(f"{where}: sample shape {shape} must be positive integers")
        shape = tuple(int(n) for n in shape)
        if math.prod(shape) != self.input_size:
            raise DataError(f"{where}: samples shaped {shape} hold {math.prod(shape)} values, "
                            f"but input_size is {self.input_size}")
        object.__setattr__(self, "shape", shape)
        if self.normalization is not None:
            mean, std = (tuple(float(v) for v in t) for t in self.normalization)
            if len(mean) != len(std) or len(mean) != shape[0] or not all(v > 0 for v in std):
                raise DataError(f"{where}: normalization must be (mean, std) with one value per channel "
                                f"({shape[0]}) each and positive stds, got {self.normalization}")
            object.__setattr__(self, "normalization", (mean, std))
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            where = f"{self.spec or self.name}: {split} set"
            if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.input_size:
                raise DataError(f"{where}: inputs are {x.dtype} {x.shape}, expected float32 (N, {self.input_size})")
            if len(x) == 0 or len(y) != len(x):
                raise DataError(f"{where}: {len(x)} inputs but {len(y)} targets; both must be equal and non-zero")
            if self.n_classes is None:
                ok = y.dtype == np.float32 and y.ndim == 2 and y.shape[1] == self.output_size
                expected = f"float32 (N, {self.output_size})"
            else:
                ok = y.dtype == np.int32 and y.ndim == 1 and self.output_size == self.n_classes
                expected = "int32 (N,)"
            if not ok:
                raise DataError(f"{where}: targets are {y.dtype} {y.shape}, expected {expected}")

    @property
    def is_classification(self) -> bool:
        return self.n_classes is not None

    def targets(self, y: np.ndarray) -> np.ndarray:
        """What the output population is nudged towards: one-hot float32 rows for
        classification labels, the float32 targets themselves for regression."""
        y = np.asarray(y)
        if self.n_classes is None:
            return y.astype(np.float32, copy=False)
        if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= self.n_classes)):
            raise DataError(f"{self.name}: labels must be integers in 0..{self.n_classes - 1}")
        return np.eye(self.n_classes, dtype=np.float32)[y]

    def __repr__(self) -> str:
        task = f"{self.n_classes} classes" if self.n_classes is not None else f"regression to {self.output_size}"
        inputs = f"{self.input_size} inputs" + (f" ({'x'.join(map(str, self.shape))})" if len(self.shape) > 1 else "")
        return (f"Dataset({self.spec or self.name!r}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"{inputs}, {task})")


def load(spec: str, *, seed: int = 0) -> Dataset:
    """The dataset a ``--data SPEC`` names (forms in the module docstring).

    `seed` is the default teacher/sample seed of ``synthetic`` (its ``seed=`` option
    wins); the other datasets have fixed splits and ignore it.

    Raises:
        DataError: the spec is unknown, an option is bad, or a file is missing or corrupt.
    """
    kind, _, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "digits":
        if arg:
            raise DataError(f"`digits` takes no argument, got `{spec}`", hint="use `--data digits`")
        return _digits()
    if kind in ("fashion-mnist", "mnist"):
        return _idx_dataset(kind, arg)
    if kind in _CIFAR:
        return _cifar(kind, arg)
    if kind == "synthetic":
        return synthetic(**_options(arg, seed))
    if kind == "npz":
        return _npz(arg)
    if spec.strip().endswith(".npz"):
        raise DataError(f"unknown dataset `{spec}`", hint=f"load your own arrays with `--data npz:{spec.strip()}`")
    known = ["digits", "fashion-mnist", "mnist", *_CIFAR, "synthetic", "npz"]
    raise DataError(f"unknown dataset `{spec}`{did_you_mean(kind, known)}", hint=f"datasets: {_FORMS}")


# ---------------------------------------------------------------- digits


def _cache_dir() -> Path | None:
    """circuitlang's cache directory (`cachedir`: ``$CIRCUITLANG_CACHE``, ``off`` for none)."""
    from .cachedir import cache_dir

    return cache_dir()


@functools.lru_cache(maxsize=1)
def _digits() -> Dataset:
    x_train, y_train, x_test, y_test = _digits_arrays(_cache_dir())
    return _frozen(Dataset("digits", x_train / np.float32(16), y_train, x_test / np.float32(16), y_test,
                           n_classes=10, input_size=64, output_size=10, spec="digits", shape=(1, 8, 8)))


def _digits_arrays(cache_dir: Path | None) -> tuple[np.ndarray, ...]:
    """Raw pixels (0..16, uint8) and labels of the project's split:
    ``train_test_split(X, y, test_size=360, random_state=0, stratify=y)``.

    Importing scikit-learn takes ~2 s, so the split is kept in `cache_dir`, keyed by
    the scikit-learn version (the split and the data are sklearn's to change).
    """
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        raise DataError("the `digits` dataset ships inside scikit-learn, which is not installed",
                        hint="pip install scikit-learn") from None
    path = cache_dir / f"digits-split-v1-sklearn-{version}.npz" if cache_dir else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
            if _digits_ok(arrays):
                return arrays
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            pass  # a damaged cache is rebuilt below
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise DataError(f"the `digits` dataset ships inside scikit-learn, which cannot be imported: {exc}",
                        hint="pip install --force-reinstall scikit-learn") from None
    digits = load_digits()
    x, y = digits.data.astype(np.uint8), digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    arrays = (x_train, y_train, x_test, y_test)
    if path is not None:
        _write_npz(path, dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
    return arrays


def _digits_ok(arrays: tuple[np.ndarray, ...]) -> bool:
    x_train, y_train, x_test, y_test = arrays
    return (x_train.shape == (1437, 64) and x_test.shape == (360, 64) and y_train.shape == (1437,)
            and y_test.shape == (360,) and x_train.dtype == x_test.dtype == np.uint8
            and y_train.dtype == y_test.dtype == np.int32 and int(max(x_train.max(), x_test.max())) <= 16)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically; a cache that cannot be written is simply not kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


# ---------------------------------------------------------------- IDX: MNIST and Fashion-MNIST

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


_MAX_INFLATE = 1100  # DEFLATE cannot shrink data more than ~1032:1


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (the MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, that many big-endian uint32
    sizes, then the data in C order, big-endian.

    Raises:
        DataError: naming the file, when it is unreadable, not IDX, truncated or too long.
    """
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"  # gzip magic: decide by content, not by the name
            f.seek(0)
            size = os.fstat(f.fileno()).st_size
            # the header first, so that a forged size is refused before anything is allocated
            stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
                raise DataError(f"{path}: not an IDX file (the header must start with 00 00, a dtype code "
                                f"and a dimension count; it starts with {head[:4].hex(' ') or 'nothing'})")
            dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
            header = 4 + 4 * ndim
            sizes = stream.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes, {ndim} dimensions "
                                f"need {header})")
            dims = tuple(int(d) for d in np.frombuffer(sizes, ">u4"))
            expected = math.prod(dims) * dtype.itemsize
            shape = "x".join(map(str, dims))
            if not compressed and size - header != expected:
                problem = "is truncated" if size - header < expected else "has trailing bytes"
                raise DataError(f"{path}: {problem}: the header says {shape} {dtype.name} "
                                f"({expected} bytes of data) but the file holds {size - header}")
            if compressed and expected > _MAX_INFLATE * max(size, 1):
                raise DataError(f"{path}: damaged or forged: the header says {shape} {dtype.name} "
                                f"({expected:,} bytes), more than {size:,} compressed bytes can hold")
            # the bytes, then the float32 copy the data set keeps
            require_bytes(expected + 4 * math.prod(dims), f"{path}: {shape} {dtype.name}")
            raw = stream.read(expected + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: the header says {shape} {dtype.name} "
                        f"({expected} bytes of data) but the file holds {len(raw) if len(raw) < expected else 'more'}")
    return np.frombuffer(raw, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_dataset(kind: str, directory: str) -> Dataset:
    hint = _FASHION_HINT if kind == "fashion-mnist" else _MNIST_HINT
    if not directory.strip():
        if kind == "mnist":
            raise DataError("`mnist` needs the directory of its IDX files", hint=hint)
        directory = FASHION_MNIST_DIR
    root = Path(directory.strip()).expanduser()
    if not root.is_dir():
        raise DataError(f"{kind}: directory {root} does not exist", hint=hint)
    files = []
    for stem in _IDX_FILES:
        names = (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx"))
        found = next((root / n for n in names if (root / n).is_file()), None)
        if found is None:
            raise DataError(f"{kind}: {root / names[0]} not found (nor uncompressed {names[1]})", hint=hint)
        st = found.stat()
        files.append((str(found), st.st_mtime_ns, st.st_size))
    return _idx_cached(kind, str(root), tuple(files))


@functools.lru_cache(maxsize=1)
def _idx_cached(kind: str, root: str, files: tuple[tuple[str, int, int], ...]) -> Dataset:
    """Parse once per process; the key holds each file's mtime and size, so edits reload."""
    x_train, y_train, x_test, y_test = (read_idx(f[0]) for f in files)
    for (path, *_), arr, ndim in zip(files, (x_train, y_train, x_test, y_test), (3, 1, 3, 1)):
        what = "images (N, rows, cols)" if ndim == 3 else "labels (N,)"
        if arr.dtype != np.uint8 or arr.ndim != ndim:
            raise DataError(f"{path}: holds {arr.dtype} {arr.shape}, expected uint8 {what}")
    for (img, *_), (lab, *_), x, y in ((files[0], files[1], x_train, y_train), (files[2], files[3], x_test, y_test)):
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"{img} holds {len(x)} images but {lab} holds {len(y)} labels")
        if y.max() > 9:
            raise DataError(f"{lab}: label {int(y.max())} is out of range 0..9")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{files[0][0]} and {files[2][0]}: image sizes differ "
                        f"({x_train.shape[1:]} vs {x_test.shape[1:]})")
    rows, cols = x_train.shape[1:]
    d = rows * cols
    flat = [(x.reshape(len(x), d).astype(np.float32) / np.float32(255)) for x in (x_train, x_test)]
    return _frozen(Dataset(kind, flat[0], y_train.astype(np.int32), flat[1], y_test.astype(np.int32),
                           n_classes=10, input_size=d, output_size=10, spec=f"{kind}:{root}",
                           shape=(1, rows, cols)))


# ---------------------------------------------------------------- CIFAR-10 and CIFAR-100, binary releases

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_PIXELS = 3 * 32 * 32  # 1024 red, 1024 green, 1024 blue bytes, each plane 32x32 row-major
_CHANNELS = ("red", "green", "blue")


@dataclasses.dataclass(frozen=True)
class _CifarRelease:
    """Where one binary release lives and how its records are laid out."""

    kind: str
    folder: str                          # what `tar xzf` makes
    train: tuple[str, ...]
    test: str
    records: int                         # records in each file of the real release (the most we accept)
    test_records: int
    label_bytes: int                     # 1 (CIFAR-10) or 2 (CIFAR-100: coarse, then fine)
    download: str                        # the link's name on the CIFAR page
    archive: str
    python_folder: str                   # the pickled release, which is never read
    python_files: tuple[str, ...]        # files that, all there without .bin, are that release

    @property
    def record_length(self) -> int:
        return self.label_bytes + _CIFAR_PIXELS

    @property
    def hint(self) -> str:
        return (f"download the \"{self.download}\" ({self.archive}) from {_CIFAR_URL}, unpack it with "
                f"`tar xzf {self.archive}` and pass `--data {self.kind}:DIR` with DIR the folder "
                f"{self.folder} or the folder holding it")


_CIFAR = {
    "cifar10": _CifarRelease("cifar10", "cifar-10-batches-bin",
                             tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
                             records=10000, test_records=10000, label_bytes=1,
                             download="CIFAR-10 binary version (suitable for C programs)",
                             archive="cifar-10-binary.tar.gz", python_folder="cifar-10-batches-py",
                             python_files=("data_batch_1",)),
    "cifar100": _CifarRelease("cifar100", "cifar-100-binary", ("train.bin",), "test.bin",
                              records=50000, test_records=10000, label_bytes=2,
                              download="CIFAR-100 binary version (suitable for C programs)",
                              archive="cifar-100-binary.tar.gz", python_folder="cifar-100-python",
                              python_files=("train", "test")),
}
_CIFAR_OPTIONS = {"cifar10": {}, "cifar100": {"labels": ("fine", "coarse")}}


def _cifar(kind: str, arg: str) -> Dataset:
    """CIFAR-10 (10 classes) or CIFAR-100 (100 fine or 20 coarse classes) from the
    binary release: ``cifar10:DIR``, ``cifar100:DIR[,labels=fine|coarse]``.

    DIR is the unpacked folder (``cifar-10-batches-bin``, ``cifar-100-binary``) or the
    folder holding it. Each file is a run of fixed-length records: CIFAR-10 one label
    byte (0..9), CIFAR-100 a coarse (0..19) and a fine (0..99) label byte; then 3072
    pixel bytes, 1024 red, 1024 green and 1024 blue, each plane 32x32 row-major. That
    byte order is the written order of `Dataset.shape` ``(3, 32, 32)``, so a record's
    pixels are its input row as they stand.

    Pixels are divided by 255 and then normalised per channel with the mean and the
    standard deviation (over samples and pixels, ``ddof=0``) of the training split,
    computed exactly in float64 and applied to both splits; `Dataset.normalization`
    holds them, in [0, 1] pixel units. The files are read with `numpy.fromfile`, never
    unpickled, and each is checked against its size before it is read: a whole number
    of records, at most as many as the real release has.

    Raises:
        DataError: a bad option, a missing folder or file (with where to download the
            release), the pickled "python version", a file of the wrong size, or a
            label out of range; the message names the file.
    """
    release = _CIFAR[kind]
    directory, options = _split_options(kind, arg)
    labels = options.get("labels", "fine")
    if not directory:
        raise DataError(f"`{kind}` needs the directory of the binary release: `--data {kind}:DIR`",
                        hint=release.hint)
    given = Path(directory).expanduser()
    root = given.resolve()
    if (root / release.folder).is_dir():
        root = root / release.folder
    elif not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        comma = "; options are written after the directory as `key=value`" if "," in directory else ""
        raise DataError(f"{kind}: directory {given} {problem}{comma}", hint=release.hint)
    _refuse_python_release(release, root)
    files = []
    for name in (*release.train, release.test):
        path = root / name
        if not path.is_file():
            if root.name != release.folder and name == release.train[0]:
                raise DataError(f"{kind}: {root} holds neither the folder {release.folder} nor {name} "
                                "(not found)", hint=release.hint)
            raise DataError(f"{kind}: {path} not found", hint=release.hint)
        st = path.stat()
        most = release.test_records if name == release.test else release.records
        _check_size(str(path), st.st_size, release, most)
        files.append((str(path), st.st_mtime_ns, st.st_size))
    spec = f"{kind}:{root}" + (",labels=coarse" if labels == "coarse" else "")
    return _cifar_cached(kind, labels, spec, tuple(files))


def _split_options(kind: str, arg: str) -> tuple[str, dict[str, str]]:
    """``DIR,key=value,...`` into DIR and the options; trailing ``key=value`` items are
    options, so a directory may hold commas but not a ``,key=`` of its own."""
    pieces = arg.split(",")
    at = len(pieces)
    while at > 1 and "=" in pieces[at - 1]:
        at -= 1
    directory = ",".join(pieces[:at]).strip()
    known = _CIFAR_OPTIONS[kind]
    spelled = ", ".join(f"{key}={'|'.join(values)}" for key, values in known.items())
    usage = f"options: {spelled}" if known else f"`{kind}` takes no options: `--data {kind}:DIR`"
    options: dict[str, str] = {}
    for item in (p.strip() for p in pieces[at:]):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in known:
            raise DataError(f"{kind}: unknown option `{key}`{did_you_mean(key, known)}", hint=usage)
        if key in options:
            raise DataError(f"{kind}: option `{key}` is given twice", hint=usage)
        if value not in known[key]:
            choices = " or ".join(f"`{v}`" for v in known[key])
            raise DataError(f"{kind}: `{key}={value}` must be {choices}{did_you_mean(value, known[key])}",
                            hint=usage)
        options[key] = value
    return directory, options


def _refuse_python_release(release: _CifarRelease, root: Path) -> None:
    """The "python version" of CIFAR is pickled; say so instead of "file not found"."""
    if (root / release.train[0]).is_file():
        return
    for where in (root, root / release.python_folder):
        if all((where / name).is_file() for name in release.python_files) or (
                where.name == release.python_folder and where.is_dir()):
            raise DataError(f"{release.kind}: {where} holds the pickled \"python version\" of the data; "
                            "circuitlang reads only the binary release and never unpickles",
                            hint=release.hint)


def _check_size(path: str, size: int, release: _CifarRelease, most: int) -> None:
    """Refuse a file from its size alone, before any file is read: it must hold a
    whole number of records, at least one and at most `most`."""
    length = release.record_length
    if size == 0 or size % length or size > most * length:
        detail = (f"which is not a whole number of {length}-byte records" if size % length or size == 0
                  else f"{size // length} records, more than the {most} of the real release")
        raise DataError(f"{path}: {size} bytes, {detail} (each record is {release.label_bytes} label "
                        f"byte{'s' if release.label_bytes > 1 else ''} and {_CIFAR_PIXELS} pixel bytes)",
                        hint=f"the file is damaged or not from the binary release; {release.hint}")


def _read_records(path: str, size: int, release: _CifarRelease) -> np.ndarray:
    """The file's `size` bytes (checked by `_check_size`) as uint8 ``(n, record_length)``;
    never more, should the file have grown since."""
    try:
        with open(path, "rb") as f:
            raw = np.fromfile(f, np.uint8, count=size)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if raw.size != size:
        raise DataError(f"{path}: changed while it was read ({raw.size} of {size} bytes)")
    return raw.reshape(size // release.record_length, release.record_length)


@functools.lru_cache(maxsize=1)
def _cifar_cached(kind: str, labels: str, spec: str, files: tuple[tuple[str, int, int], ...]) -> Dataset:
    """Parse once per process; the key holds each file's mtime and size, so edits reload."""
    release = _CIFAR[kind]
    splits = []
    for group in (files[:-1], files[-1:]):
        records = [(path, _read_records(path, size, release)) for path, _, size in group]
        for path, rec in records:
            ranges = ((0, 10),) if kind == "cifar10" else ((0, 20), (1, 100))
            for column, n in ranges:
                bad = np.flatnonzero(rec[:, column] >= n)
                if bad.size:
                    which = "" if kind == "cifar10" else ("coarse " if column == 0 else "fine ")
                    raise DataError(f"{path}: record {int(bad[0])} has {which}label {int(rec[bad[0], column])}, "
                                    f"out of range 0..{n - 1}", hint=f"the file is damaged; {release.hint}")
        joined = np.concatenate([rec for _, rec in records]) if len(records) > 1 else records[0][1]
        column = 0 if kind == "cifar10" or labels == "coarse" else 1
        splits.append((joined[:, release.label_bytes:], joined[:, column].astype(np.int32)))
    (pix_train, y_train), (pix_test, y_test) = splits
    mean, std = _channel_moments(pix_train)
    for c, s in enumerate(std):
        if s == 0:
            raise DataError(f"{kind}: every {_CHANNELS[c]} pixel of the training images is "
                            f"{round(mean[c] * 255)}, so per-channel normalisation is undefined",
                            hint=f"the files are not real CIFAR images; {release.hint}")
    x_train, x_test = (_normalise(p, mean, std) for p in (pix_train, pix_test))
    n_classes = 10 if kind == "cifar10" else 20 if labels == "coarse" else 100
    return _frozen(Dataset(kind, x_train, y_train, x_test, y_test, n_classes=n_classes,
                           input_size=_CIFAR_PIXELS, output_size=n_classes, spec=spec, shape=(3, 32, 32),
                           normalization=(tuple(mean), tuple(std))))


def _channel_moments(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (``ddof=0``) of ``pixels / 255``, exact in float64: from
    the histogram of the 256 byte values, so no float64 copy of the images is made."""
    values = np.arange(256, dtype=np.float64) / 255
    planes = pixels.reshape(len(pixels), 3, -1)
    mean, std = [], []
    for c in range(3):
        counts = np.bincount(planes[:, c].ravel(), minlength=256).astype(np.float64)
        m = float(counts @ values / counts.sum())
        mean.append(m)
        std.append(math.sqrt(float(counts @ (values - m) ** 2 / counts.sum())))
    return mean, std


def _normalise(pixels: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """``(pixels / 255 - mean_c) / std_c`` in float64, rounded once to float32 (a table of
    the 256 values per channel)."""
    planes = pixels.reshape(len(pixels), 3, -1)
    out = np.empty(planes.shape, np.float32)
    for c in range(3):
        table = ((np.arange(256, dtype=np.float64) / 255 - mean[c]) / std[c]).astype(np.float32)
        out[:, c] = table[planes[:, c]]
    return out.reshape(len(pixels), -1)


# ---------------------------------------------------------------- synthetic

_SYNTHETIC_DEFAULTS = {"n": 10000, "test": 2000, "in": 392, "out": 10, "hidden": 32, "seed": None}
_MAX_ELEMENTS = 500_000_000  # 2 GB of float32 inputs


def _options(arg: str, seed: int) -> dict[str, int]:
    opts: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in arg.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in _SYNTHETIC_DEFAULTS:
            raise DataError(f"synthetic: unknown option `{key}`{did_you_mean(key, _SYNTHETIC_DEFAULTS)}",
                            hint=f"options: {', '.join(f'{k}=' for k in _SYNTHETIC_DEFAULTS)}")
        if not eq or key in opts:
            raise DataError(f"synthetic: option `{item}` must be given once, as `{key}=INTEGER`")
        try:
            opts[key] = int(value)
        except ValueError:
            raise DataError(f"synthetic: `{key}={value}` is not an integer") from None
    opts.setdefault("seed", seed)
    opts["n_train"] = opts.pop("n", _SYNTHETIC_DEFAULTS["n"])
    opts["n_test"] = opts.pop("test", _SYNTHETIC_DEFAULTS["test"])
    opts["n_in"] = opts.pop("in", _SYNTHETIC_DEFAULTS["in"])
    opts["n_out"] = opts.pop("out", _SYNTHETIC_DEFAULTS["out"])
    return opts


def synthetic(n_train: int = 10000, n_test: int = 2000, n_in: int = 392, n_out: int = 10,
              hidden: int = 32, seed: int = 0) -> Dataset:
    """Regression on a fixed random teacher: the continuous-learning task of latent
    equilibrium (Haider et al. 2021, "Latent Equilibrium: A unified learning theory
    for arbitrarily fast computation with arbitrarily slow neurons", NeurIPS), whose
    student is an MLP 392-512-512-10 learning random data.

    Inputs ``x ~ U[0, 1]^n_in``. The teacher is one tanh hidden layer::

        h = tanh(W1 (x - 1/2) + b1)   W1 ~ N(0, 48/n_in) so W1 (x - 1/2) has std 2, b1 ~ N(0, 1/4)
        z = W2 h                      W2 ~ N(0, 1/hidden)
        y = 1/2 + 1/2 tanh(c (z - mean z) / std z)

    with ``mean z``, ``std z`` and the per-output gain ``c`` (close to 1) measured on
    8192 calibration draws so that each target lies in (0, 1), is centred near 1/2 and
    has variance 0.1: an untrained student answering 1/2 (a sigmoid output at zero
    drive) has MSE 0.1 (mean over samples and outputs). A linear least-squares fit
    reaches about 0.025 with the defaults; the rest is the teacher's nonlinearity.

    The teacher, the calibration draws, the train inputs and the test inputs come from
    four independent streams of ``SeedSequence(seed)``: the teacher does not depend on
    the sizes, nor the test set on ``n_train``.
    """
    sizes = {"n": n_train, "test": n_test, "in": n_in, "out": n_out, "hidden": hidden}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"synthetic: `{key}={value}` must be a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"synthetic: `seed={seed}` must be a non-negative integer")
    if (n_train + n_test) * n_in > _MAX_ELEMENTS:
        raise DataError(f"synthetic: {n_train + n_test} samples of {n_in} inputs would need "
                        f"{(n_train + n_test) * n_in * 4 / 2**30:.1f} GiB",
                        hint=f"ask for at most {_MAX_ELEMENTS} input values in all (fewer `n=`, `test=` or `in=`)")
    rows = n_train + n_test + 8192  # the samples and the calibration draws, in float64 while computed
    require_bytes(8 * (rows * (n_in + hidden + n_out) + n_in * hidden + hidden * n_out)
                  + 4 * (n_train + n_test) * (n_in + n_out),
                  f"synthetic: {n_train + n_test} samples of {n_in} inputs through a teacher of {hidden} hidden units",
                  hint="ask for fewer samples (`n=`, `test=`), inputs (`in=`) or teacher units (`hidden=`)")
    teacher_rng, calib_rng, train_rng, test_rng = (np.random.default_rng(s)
                                                   for s in np.random.SeedSequence(seed).spawn(4))
    w1 = teacher_rng.standard_normal((n_in, hidden)) * math.sqrt(48 / n_in)
    b1 = teacher_rng.standard_normal(hidden) * 0.5
    w2 = teacher_rng.standard_normal((hidden, n_out)) / math.sqrt(hidden)

    def raw(x: np.ndarray) -> np.ndarray:
        return np.tanh((x - 0.5) @ w1 + b1) @ w2

    z = raw(calib_rng.random((8192, n_in)))
    mean, std = z.mean(0), np.maximum(z.std(0), 1e-12)
    zs = (z - mean) / std
    lo, hi = np.zeros(n_out), np.full(n_out, 8.0)
    for _ in range(24):  # bisection on the gain: Var(y_k) = 0.1, to 5e-7
        c = (lo + hi) / 2
        low = (0.5 * np.tanh(c * zs)).var(0) < 0.1
        lo, hi = np.where(low, c, lo), np.where(low, hi, c)
    gain = (lo + hi) / 2

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((n, n_in))
        y = 0.5 + 0.5 * np.tanh(gain * (raw(x) - mean) / std)
        return x.astype(np.float32), y.astype(np.float32)

    (x_train, y_train), (x_test, y_test) = sample(train_rng, n_train), sample(test_rng, n_test)
    spec = f"synthetic:n={n_train},test={n_test},in={n_in},out={n_out},hidden={hidden},seed={seed}"
    return _frozen(Dataset("synthetic", x_train, y_train, x_test, y_test,
                           n_classes=None, input_size=n_in, output_size=n_out, spec=spec, shape=(n_in,)))


# ---------------------------------------------------------------- npz: the user's own data


def _npz(arg: str) -> Dataset:
    """``x_*``: numbers, (N, ...) flattened to (N, D) in C order, used as given, the
    per-sample shape ``x_train.shape[1:]`` kept as `Dataset.shape` (3-D samples read as
    channels, height, width); ``y_*``: integer
    labels (N,) make a classification task with max(label) + 1 classes, float targets
    (N,) or (N, K) a regression. Never unpickles (``allow_pickle=False``)."""
    if not arg.strip():
        raise DataError("`npz` needs a path: `--data npz:PATH`")
    path = Path(arg.strip()).expanduser()
    keys = ("x_train", "y_train", "x_test", "y_test")
    save = f"save it with np.savez(PATH, {'=..., '.join(keys)}=...)"
    try:
        with NpzReader(path, "data file") as z:
            missing = [k for k in keys if k not in z.members]
            if missing:
                raise DataError(f"{path}: missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                                hint=save)
            # everything the headers can tell is checked before a byte of data is read
            heads = {k: z.members[k] for k in keys}
            for name in ("x_train", "x_test"):
                h = heads[name]
                if h.dtype.kind not in "biuf" or len(h.shape) < 2 or 0 in h.shape:
                    raise DataError(f"{path}: {name} is {h.dtype} {h.shape}; expected numbers shaped (N, D), N > 0")
            for split in ("train", "test"):
                x, y = heads[f"x_{split}"], heads[f"y_{split}"]
                if not y.shape or y.shape[0] != x.shape[0]:
                    raise DataError(f"{path}: x_{split} holds {x.shape[0]} samples but y_{split} is shaped {y.shape}",
                                    hint="one label or target row per sample")
            need = sum(h.dtype.itemsize * math.prod(h.shape) for h in heads.values())  # as stored
            need += sum(4 * math.prod(h.shape) for h in heads.values())  # and as float32 / int32
            require_bytes(need, f"{path}: arrays of {', '.join(f'{k} {h.shape}' for k, h in heads.items())}",
                          hint="use a smaller data set, or set CIRCUITLANG_MEMORY if the machine has more to give")
            x_train, y_train, x_test, y_test = (z.read(k) for k in keys)
    except DataError:
        raise
    except CircuitError as exc:  # the reader's own: missing, not an npz, damaged, pickled
        raise DataError(exc.message, hint=save if "single .npy" in exc.message else None) from None
    xs = []
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0 or 0 in x.shape:
            raise DataError(f"{path}: {name} is {x.dtype} {x.shape}; expected numbers shaped (N, D), N > 0")
        flat = x.reshape(len(x), -1).astype(np.float32)
        if not np.isfinite(flat).all():
            raise DataError(f"{path}: {name} holds NaN or infinite values")
        xs.append(flat)
    shape = x_train.shape[1:]
    if xs[0].shape[1] != xs[1].shape[1]:
        raise DataError(f"{path}: x_train has {xs[0].shape[1]} features per sample, x_test {xs[1].shape[1]}")
    if x_test.shape[1:] != shape:
        raise DataError(f"{path}: x_train samples are shaped {shape}, x_test samples {x_test.shape[1:]}",
                        hint="save both splits with the same per-sample shape")
    if y_train.dtype.kind in "iu" and y_train.ndim == y_test.ndim == 1 and y_test.dtype.kind in "iu":
        low = min(int(y_train.min(initial=0)), int(y_test.min(initial=0)))
        if low < 0:
            raise DataError(f"{path}: labels must be non-negative, found {low}")
        n_classes = max(int(y_train.max(initial=0)), int(y_test.max(initial=0))) + 1
        ys, k = [y_train.astype(np.int32), y_test.astype(np.int32)], n_classes
    elif y_train.dtype.kind in "biuf" and y_test.dtype.kind in "biuf" and 1 <= y_train.ndim == y_test.ndim <= 2:
        ys = [y.reshape(len(y), -1).astype(np.float32) for y in (y_train, y_test)]
        n_classes, k = None, ys[0].shape[1]
        if ys[1].shape[1] != k or not all(np.isfinite(y).all() for y in ys):
            raise DataError(f"{path}: y_train and y_test must be finite targets of the same width")
    else:
        raise DataError(f"{path}: y_train {y_train.dtype} {y_train.shape} / y_test {y_test.dtype} {y_test.shape}: "
                        "expected integer labels (N,) or float targets (N, K)")
    return _frozen(Dataset("npz", xs[0], ys[0], xs[1], ys[1], n_classes=n_classes,
                           input_size=xs[0].shape[1], output_size=k, spec=f"npz:{path}", shape=shape))


def _frozen(data: Dataset) -> Dataset:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        getattr(data, field).setflags(write=False)
    return data
