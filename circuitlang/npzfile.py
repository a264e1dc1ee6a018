"""Reading `.npz` files that may be damaged, foreign or forged — without trusting them.

`np.load` trusts a file's headers: a member that declares 10^12 rows makes it
allocate terabytes before noticing the data are not there, a member that is not
an array comes back as raw bytes, and a `.npy` comes back as one array. Here the
zip and every member's header (`numpy.lib.format.read_magic` and
`read_array_header_1_0` / `_2_0`) are checked first, and the bytes a header
declares are compared with the bytes the member holds, before anything is read.
Nothing is ever unpickled (object arrays are refused). Every problem is a
`CircuitError` that names the file.

    with NpzReader(path, "parameter file") as npz:
        npz.members["W1"].shape, npz.members["W1"].dtype   # from the header only
        w1 = npz.read("W1")
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from .errors import CircuitError

__all__ = ["Member", "NpzReader"]

# DEFLATE cannot shrink data more than ~1032:1; a member claiming more is forged
_MAX_DEFLATE_RATIO = 1100


@dataclasses.dataclass(frozen=True)
class Member:
    """One array of an `.npz`, as its header declares it (nothing read yet)."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    info: zipfile.ZipInfo

    def describe(self) -> str:
        return f"{self.shape} {self.dtype}"


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


class NpzReader:
    """An `.npz` whose zip and member headers have been checked (see the module docstring).

    Args:
        path: the file.
        what: what the file should be, for messages ("parameter file", "checkpoint").

    Raises:
        CircuitError: the file is missing, unreadable, not an `.npz`, truncated,
            or a member is not a plain array or does not hold what its header declares.
    """

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self._zip = self._open()
        try:
            self.members = self._headers()
        except BaseException:
            self._zip.close()
            raise

    def error(self, message: str) -> CircuitError:
        return CircuitError(f"{self.path}: {message}")

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise self.error(f"no such {self.what}") from None
        except IsADirectoryError:
            raise self.error(f"is a directory, not a {self.what}") from None
        except zipfile.BadZipFile:
            pass
        except OSError as exc:
            raise self.error(f"cannot read the {self.what}: {exc.strerror or exc}") from None
        with open(self.path, "rb") as f:
            head = f.read(len(npy.MAGIC_PREFIX))
        if not head:
            raise self.error(f"is empty, not a {self.what}")
        if head == npy.MAGIC_PREFIX:
            raise self.error(f"is a single .npy array; a {self.what} is an .npz of named arrays "
                             "(numpy.savez(path, NAME=array, ...))")
        raise self.error(f"is not a {self.what}: not an .npz (zip) file, or truncated or damaged")

    def _headers(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        for info in self._zip.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in members:
                raise self.error(f"damaged {self.what}: the member `{key}` appears twice")
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise self.error(f"damaged {self.what}: the member `{key}` declares {info.file_size} bytes "
                                 f"but stores {info.compress_size}")
            if info.file_size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1):
                raise self.error(f"damaged or forged {self.what}: the member `{key}` claims to expand "
                                 f"{info.compress_size} bytes into {_size(info.file_size)}")
            members[key] = self._header(key, info)
        return members

    def _header(self, key: str, info: zipfile.ZipInfo) -> Member:
        try:
            with self._zip.open(info) as fp:
                try:
                    version = npy.read_magic(fp)
                except ValueError:
                    raise self.error(f"the member `{key}` is not a NumPy array (circuitc reads plain arrays "
                                     "only, and never unpickles)") from None
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, fortran, dtype = npy.read_array_header_2_0(fp)
                else:
                    raise self.error(f"the member `{key}` is a .npy of format version {version[0]}.{version[1]}; "
                                     "write it with numpy.savez")
                offset = fp.tell()
        except CircuitError:
            raise
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise self.error(f"damaged {self.what}: cannot read the header of `{key}` ({exc})") from None
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise self.error(f"the member `{key}` holds Python objects ({dtype}); reading them would mean "
                             "unpickling, which circuitc never does")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - offset
        if declared != held:
            raise self.error(f"damaged {self.what}: the member `{key}` declares {shape} {dtype} "
                             f"({_size(declared)}) but holds {_size(max(held, 0))}")
        return Member(key, tuple(int(n) for n in shape), dtype, info)

    def read(self, key: str) -> np.ndarray:
        """The array `key` (its header already checked against its size)."""
        try:
            with self._zip.open(self.members[key].info) as fp:
                return npy.read_array(fp, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise self.error(f"damaged {self.what}: cannot read `{key}` ({exc})") from None
