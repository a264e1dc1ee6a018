"""Output directories: created with a clear error, written atomically, one run at a time.

* `make_dir(path)` creates `--out` or says why it cannot (a file is in the
  way, no permission, a read-only filesystem), naming the path.
* `atomic_write(path, data)` writes `.NAME.tmpPID` and renames it over `NAME`,
  so a reader (or a kill) never sees half a file; a failed write (a full disk)
  removes its temporary and names the file.
* `claim(dir, resume=..., force=...)` is held by `train` for the whole run:
  an exclusive lock on `DIR/.lock` (`fcntl.flock`, which the kernel drops
  when its holder dies, so a kill -9 leaves no stale lock to clean up), then
  removes the temporaries of writers that are gone (the pid is in the name),
  and refuses to start over a finished run without `force`.

The lock is `fcntl.flock` rather than the `filelock` package: it is the same
system call `filelock` makes on POSIX, without a dependency, and `filelock`
truncates the lock file when it opens it (before locking), which would erase
the holder's pid that the "another run (pid N)" message reads.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import CircuitError

__all__ = ["RUN_FILES", "make_dir", "atomic_write", "remove_stale", "claim"]

# what `train` writes into a run directory (each atomically)
RUN_FILES = ("checkpoint.npz", "params.npz", "metrics.csv", "metrics.json", "curves.png", "run.json")
# these exist once a run has saved an epoch: a directory holding them holds a run
_FINISHED = ("checkpoint.npz", "metrics.json")
_TMP = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>[0-9]+)")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def make_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the directory `path` (and its parents), or raise a `CircuitError` saying why not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CircuitError(f"{flag} {path}: is a file, not a directory; pick another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CircuitError(f"{flag} {path}: cannot create the directory ({_why(exc)})") from None
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically (via `.NAME.tmpPID`); a failure leaves no temporary."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CircuitError(f"{path}: cannot write ({_why(exc)})") from None


def _alive(pid: int) -> bool:
    """Whether another process `pid` exists (ours counts as gone: we hold the lock, we are not writing)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def remove_stale(directory: Path) -> list[Path]:
    """Remove the `.NAME.tmpPID` files of writers that no longer run; return them."""
    gone = []
    for p in directory.iterdir():
        m = _TMP.fullmatch(p.name)
        if m and not _alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            gone.append(p)
    return gone


class _Lock:
    """An exclusive `flock` on `DIR/.lock`, holding the holder's pid."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CircuitError(f"--out {self.directory}: cannot write in the directory ({_why(exc)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise CircuitError(
                    f"another run ({f'pid {pid}' if pid.isdigit() else 'pid unknown'}) is writing {self.directory}; "
                    "wait for it to finish, or train into another --out"
                ) from None
            # a releasing holder unlinks the file: if ours is no longer the one at the path, lock anew
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked, so no one locks the file on its way out
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def claim(directory: str | Path, *, resume: bool = False, force: bool = False) -> Iterator[Path]:
    """Hold `directory` for one run (see the module docstring).

    Raises:
        CircuitError: the directory cannot be created or written, another run holds
            it, or it holds a finished run and neither `resume` nor `force` is set.
    """
    directory = make_dir(directory)
    lock = _Lock(directory)
    lock.acquire()
    try:
        remove_stale(directory)
        if not resume:
            found = [n for n in _FINISHED if (directory / n).exists()]
            if found and not force:
                raise CircuitError(
                    f"{directory} already holds a run ({', '.join(found)}); continue it with --resume, "
                    "start it over with --force, or train into another --out"
                )
            for n in RUN_FILES if force else ():
                with contextlib.suppress(FileNotFoundError):
                    (directory / n).unlink()
        yield directory
    finally:
        lock.release()
