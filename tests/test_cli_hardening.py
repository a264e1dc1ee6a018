"""The command line's contract on bad input (issue #12, "Hardening"): exit 0 ok,
1 when the file, the data, the parameters or the filesystem are at fault (the
message names the file), 2 bad usage; 3 ("internal error") only for a bug.

Every case runs `python -m circuitlang` in a subprocess, as users run it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

TINY = "tests/circuits/tiny_hopfield.circ"


def circuitc(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "circuitlang", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def fails(result: subprocess.CompletedProcess, code: int, *says: str) -> str:
    """`result` exited with `code`, cleanly, and its stderr says each of `says`."""
    err = result.stderr
    assert result.returncode == code, f"exit {result.returncode}, not {code}\n{result.stdout}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    for s in says:
        assert s in err, f"{s!r} not in:\n{err}"
    return err


# --------------------------------------------------- numbers out of range --
USAGE = {
    "epochs 0": (("train", TINY, "--epochs", "0"), "argument --epochs: 0 is out of range: it must be at least 1"),
    "epochs -5": (("train", TINY, "--epochs", "-5"), "argument --epochs: -5 is out of range"),
    "devices 0": (("train", TINY, "--devices", "0"), "argument --devices: 0 is out of range"),
    "devices -1": (("train", TINY, "--devices", "-1"), "argument --devices: -1 is out of range"),
    "seed 2**64": (("train", TINY, "--seed", str(2**64)), f"argument --seed: {2**64} is out of range"),
    "seed abc": (("simulate", TINY, "--seed", "abc", "--out", "x"), "argument --seed: 'abc' is not an integer"),
    "compile batch -3": (("compile", TINY, "--batch", "-3"), "argument --batch: -3 is out of range"),
    "verify betas abc": (("verify", TINY, "--betas", "abc"), "argument --betas: 'abc' is not a number"),
    "verify betas nan": (("verify", TINY, "--betas", "0.1,nan"), "argument --betas: nan: each beta must be a finite"),
    "verify betas 0": (("verify", TINY, "--betas", "0"), "each beta must be a finite, non-zero number"),
    "samples 0": (("simulate", TINY, "--samples", "0", "--out", "x"), "argument --samples: 0 is out of range"),
}


@pytest.mark.parametrize("name", list(USAGE))
def test_numbers_out_of_range_are_usage_errors(name, tmp_path):
    args, message = USAGE[name]
    fails(circuitc(*args), 2, message, "(try `circuitc")
