"""Resources are checked before work starts (issue #12, item 3): a run that cannot fit in
this machine's memory is refused in its first second, located and with the parts that take
the room; loaders refuse what a header declares before allocating it; `check` refuses
endless or huge inputs; the estimate is honest (the same order as what a run really takes).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from circuitlang import resources as R
from circuitlang.data import DataError, load, read_idx
from circuitlang.errors import CircuitError

from .conftest import ROOT
from .test_cli_hardening import circuitc, fails
from .test_data import idx_bytes

# the process's own peak resident memory: VmHWM starts afresh at exec, while getrusage's
# ru_maxrss is carried over from the parent (pytest, hundreds of MB after the JAX tests)
PEAK = ("print('PEAK', next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
        "if l.startswith('VmHWM:')))")

BIG = """circuit Big
population x [64] input
population big [99999999]
population y [10] output
big -- x : W1
y -- big : W2
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps 8; dt 0.5 }
  phase nudge { steps 3; dt 0.5; beta 0.5 }
  batch 32
}
"""


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.circ"
    path.write_text(BIG)
    return path


@pytest.mark.parametrize("verb", ["train", "simulate", "verify"])
def test_a_circuit_too_large_for_the_machine_is_refused_before_work(big, tmp_path, verb):
    """`population big [99999999]` passed check and died in train at 12.4 GB; every verb now
    refuses it at once, naming the weight that takes the room, with exit 1 (evaluate would
    need a 27 GiB params file first: its own check is the next test)."""
    args = {"train": ("--epochs", "1", "--out", tmp_path / "run", "--no-progress"),
            "simulate": ("--out", tmp_path / "sim"), "verify": ()}[verb]
    # a fixed amount, so that the test means the same on any machine
    env = {**os.environ, "CIRCUITLANG_MEMORY": "16GiB"}
    r = circuitc(verb, big, *args, env=env)
    err = fails(r, 1, f"{verb} would need about", "but only 16 GiB is available", "big.circ:5:1",
                "`W1` (99,999,999×64)", "CIRCUITLANG_MEMORY")
    assert "parameters" in err


def test_compile_needs_no_memory_for_the_arrays(big, tmp_path):
    """`compile` traces and lowers from shapes (jax.eval_shape): a circuit of 27 GiB of
    parameters prints its program without allocating them."""
    env = {**os.environ, "CIRCUITLANG_MEMORY": "1GiB"}
    r = circuitc("compile", big, "--fn", "relax", "-o", tmp_path / "big.jaxpr", env=env)
    assert r.returncode == 0, r.stderr
    assert "99999999" in (tmp_path / "big.jaxpr").read_text()


def test_evaluate_with_fitting_params_is_refused_too(tmp_path):
    """evaluate's estimate counts its evaluation chunk: a small memory refuses it."""
    run = tmp_path / "run"
    ok = circuitc("train", "tests/circuits/tiny_hopfield.circ", "--epochs", "1", "--out", run, "--no-progress")
    assert ok.returncode == 0, ok.stderr
    env = {**os.environ, "CIRCUITLANG_MEMORY": "100MiB"}
    fails(circuitc("evaluate", "tests/circuits/tiny_hopfield.circ", "--params", run / "params.npz", env=env), 1,
          "evaluate would need about", "runtime", "but only 100 MiB is available")


def test_the_refusal_names_every_part_and_the_fix(tmp_path):
    env = {**os.environ, "CIRCUITLANG_MEMORY": "200MiB"}
    err = fails(circuitc("train", "tests/circuits/tiny_hopfield.circ", "--epochs", "1", "--out", tmp_path / "r",
                         env=env), 1, "tiny_hopfield.circ:18:1", "train would need about")
    for part in ("parameters and optimizer", "states of a batch of 32", "evaluation in chunks of 360", "data",
                 "runtime"):
        assert part in err
    assert not (tmp_path / "r" / "params.npz").exists()  # nothing was started


def test_a_bad_memory_setting_is_an_error():
    env = {**os.environ, "CIRCUITLANG_MEMORY": "lots"}
    fails(circuitc("train", "tests/circuits/tiny_hopfield.circ", "--epochs", "1", "--out", "/nonexistent/x",
                   env=env), 1, "CIRCUITLANG_MEMORY: 'lots' is not a size")


@pytest.mark.parametrize("text, expected", [("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("2e9", 2 * 10**9),
                                            ("1.5gb", 1_500_000_000), ("100", 100)])
def test_sizes_parse(text, expected):
    assert R.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1GiB", "0", "12 parsecs", "nan", "inf"])
def test_bad_sizes_do_not(text):
    with pytest.raises(ValueError):
        R.parse_size(text)


def test_the_machine_says_how_much_it_has(monkeypatch):
    monkeypatch.delenv("CIRCUITLANG_MEMORY", raising=False)
    room = R.available_memory()
    assert room is not None and 2**24 < room  # this machine (Linux) reports it
    if os.path.exists("/proc/meminfo"):  # Linux: MemAvailable never exceeds MemTotal
        with open("/proc/meminfo") as f:
            total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
        assert room <= total


def test_the_estimate_grows_with_what_it_counts():
    import circuitlang as cl

    m = cl.compile(cl.load(ROOT / "tests/circuits/tiny_hopfield.circ"))
    small, large = (R.estimate(m, "train", batch=b) for b in (8, 64))
    assert large.parts["states of a batch of 64"] == 8 * small.parts["states of a batch of 8"]
    text = (ROOT / "tests/circuits/tiny_hopfield.circ").read_text()
    sgd, adam = (cl.compile(cl.loads(text.replace("optimizer sgd", f"optimizer {o}"))) for o in ("sgd", "adam"))
    assert (R.estimate(adam, "train", batch=8).parts["parameters and optimizer"]
            > R.estimate(sgd, "train", batch=8).parts["parameters and optimizer"])
    one, bptt = (R.estimate(m, "train", batch=8, method=k).parts["states of a batch of 8"] for k in ("symmetric", "bptt"))
    assert bptt > one  # bptt keeps the trajectory


def test_the_evaluation_chunk_is_the_circuits_not_the_machines(monkeypatch):
    """The chunk changes the program and the last bits of the loss (with `tol`, also the
    steps): it depends on the circuit only, never on the memory free at the time."""
    import circuitlang as cl

    m = cl.compile(cl.load(ROOT / "tests/circuits/tiny_hopfield.circ"))
    chunks = []
    for memory in ("16GiB", "1MiB"):
        monkeypatch.setenv("CIRCUITLANG_MEMORY", memory)
        chunks.append((R.eval_chunk(m, 10_000), R.eval_chunk(m, 360)))
    assert chunks == [(1000, 360), (1000, 360)]
    wide = cl.compile(cl.loads("population x [64] input\npopulation h [100000]\npopulation y [10] output\n"
                               "h -- x : W1\ny -- h : W2\nenergy hopfield\ncost y squared\n"))
    # 1000 examples of 100,074 states, 6 copies in float32: 2.4 GB; halved to fit 1 GiB
    assert R.eval_chunk(wide, 10_000) == 250


def _cgroup_tree(tmp_path, files: dict[str, str], proc: str):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "proc").write_text(proc)
    return tmp_path, tmp_path / "proc"


def test_cgroup_v2_takes_the_tightest_limit_up_the_tree_and_counts_page_cache_as_room(tmp_path):
    root, proc = _cgroup_tree(tmp_path, {
        "cgroup.controllers": "memory\n",
        "job/memory.max": str(8 * 2**30), "job/memory.current": str(7 * 2**30),
        "job/memory.stat": f"anon 1\ninactive_file {3 * 2**30}\n",
        "job/step/memory.max": "max\n", "job/step/memory.current": str(7 * 2**30),
    }, "0::/job/step\n")
    # the leaf says `max`; the parent's 8 GiB, 7 used of which 3 are reclaimable: 4 GiB of room
    assert R._cgroup_room(root, proc) == 4 * 2**30


def test_cgroup_v1_reads_the_hierarchical_limit_and_the_mount_root_without_a_namespace(tmp_path):
    root, proc = _cgroup_tree(tmp_path, {
        "memory/memory.stat": f"cache 5\nhierarchical_memory_limit {6 * 2**30}\ntotal_inactive_file {2**30}\n",
        "memory/memory.usage_in_bytes": str(5 * 2**30),
    }, "4:memory:/docker/abc123\n0::/\n")  # /docker/abc123 is not mounted inside the container
    assert R._cgroup_room(root, proc) == 2 * 2**30
    unlimited, proc2 = _cgroup_tree(tmp_path / "u", {
        "memory/memory.stat": "hierarchical_memory_limit 9223372036854771712\n",
        "memory/memory.usage_in_bytes": "100",
    }, "4:memory:/\n")
    assert R._cgroup_room(unlimited, proc2) is None


@pytest.mark.slow
def test_the_estimate_is_the_size_of_what_a_run_takes(tmp_path):
    """Peak resident memory of a real training run, against the estimate: the same order
    (neither a tenth nor ten times), and the estimate not below what was used by more
    than the runtime's own variation."""
    import circuitlang as cl
    from circuitlang.data import load as load_data

    code = f"import sys; from circuitlang.cli import main; rc = main(sys.argv[1:]); {PEAK}; sys.exit(rc)"
    r = subprocess.run([sys.executable, "-c", code, "train", "examples/eqprop_hopfield.circ", "--epochs", "1",
                        "--out", str(tmp_path / "run"), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    peak = int(r.stdout.split("PEAK")[1])
    m = cl.compile(cl.load(ROOT / "examples/eqprop_hopfield.circ"))
    est = R.estimate(m, "train", batch=m.learning.batch, data=load_data("digits"), eval_chunk=360).total
    assert est / 3 < peak < est * 1.5, (peak, est)


# ------------------------------------------------------------------ loaders --
def test_an_idx_header_that_claims_more_than_a_gz_can_hold_is_refused(tmp_path):
    """A 1 MB IDX `.gz` used to inflate to 2.2 GB before being refused."""
    head = bytes([0, 0, 0x08, 3]) + np.array([10**6, 1000, 1000], ">u4").tobytes()
    path = tmp_path / "forged-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(head + bytes(1000)))
    with pytest.raises(DataError, match="damaged or forged: the header says 1000000x1000x1000 uint8"):
        read_idx(path)


def test_an_idx_stream_longer_than_its_header_is_read_no_further(tmp_path):
    """A gzip bomb (8 MB of zeros behind a header of 2 images) is refused after reading
    the declared bytes and one more, not after inflating it all."""
    head = bytes([0, 0, 0x08, 3]) + np.array([2, 28, 28], ">u4").tobytes()
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(head + bytes(8 * 2**20)))
    with pytest.raises(DataError, match="has trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_an_idx_file_larger_than_the_memory_is_refused_before_reading(tmp_path, monkeypatch, suffix):
    arr = np.zeros((300, 28, 28), np.uint8)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    assert read_idx(path).shape == (300, 28, 28)
    monkeypatch.setenv("CIRCUITLANG_MEMORY", "1MiB")  # the bytes and their float32 copy: 1.2 MiB
    with pytest.raises(CircuitError, match=r"300x28x28 uint8 would need 1.1\d MiB of memory, but only 1 MiB"):
        read_idx(path)


def _forged_npz(path, rows: int):
    """An .npz whose x_train header claims `rows` rows it does not hold."""
    with zipfile.ZipFile(path, "w") as z:
        for key, arr in (("x_train", np.zeros((2, 3), np.float32)), ("y_train", np.zeros(2, np.int64)),
                         ("x_test", np.zeros((2, 3), np.float32)), ("y_test", np.zeros(2, np.int64))):
            header = np.lib.format.header_data_from_array_1_0(arr)
            if key == "x_train":
                header["shape"] = (rows, 3)
            import io

            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, header)
            z.writestr(key + ".npy", buf.getvalue() + arr.tobytes())


def test_an_npz_header_that_lies_about_its_rows_is_refused_before_allocating(tmp_path):
    path = tmp_path / "forged.npz"
    _forged_npz(path, 10**12)
    with pytest.raises(DataError, match=r"x_train` declares \(1000000000000, 3\) float32 .* but holds 24 bytes"):
        load(f"npz:{path}")


def test_an_npz_larger_than_the_memory_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x_train=np.zeros((20000, 100), np.float32), y_train=np.zeros(20000, np.int64),
                        x_test=np.zeros((10, 100), np.float32), y_test=np.zeros(10, np.int64))
    assert path.stat().st_size < 100_000  # zeros compress: the file says nothing of the memory
    monkeypatch.setenv("CIRCUITLANG_MEMORY", "4MiB")
    with pytest.raises(CircuitError, match=r"x_train \(20000, 100\).* would need 15.\d MiB of memory, but only 4 MiB"):
        load(f"npz:{path}")
    monkeypatch.delenv("CIRCUITLANG_MEMORY")
    assert load(f"npz:{path}").x_train.shape == (20000, 100)


def test_npz_samples_and_labels_are_compared_from_the_headers(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(5, int), x_test=np.zeros((2, 3)), y_test=np.zeros(2, int))
    with pytest.raises(DataError, match=r"x_train holds 4 samples but y_train is shaped \(5,\)"):
        load(f"npz:{path}")


def test_a_synthetic_set_too_large_is_refused_before_drawing(monkeypatch):
    with pytest.raises(CircuitError, match="teacher of 1000000000 hidden units would need .* TiB of memory"):
        load("synthetic:hidden=1000000000")


def test_synthetic_through_the_cli():
    fails(circuitc("train", "examples/continuous_learning.circ", "--data", "synthetic:hidden=1000000000",
                   "--out", "/nonexistent/never"), 1, "would need", "`hidden=`")


# --------------------------------------------------------------- .circ files --
def test_check_dev_zero_is_refused_not_read_forever():
    fails(circuitc("check", "/dev/zero", timeout=60), 1, "/dev/zero: longer than 64 MiB")


def test_a_huge_circ_file_is_refused_unread(tmp_path):
    from circuitlang.parse import MAX_SOURCE_BYTES

    path = tmp_path / "huge.circ"
    with open(path, "wb") as f:
        f.truncate(MAX_SOURCE_BYTES + 1)  # sparse: costs no disk
    fails(circuitc("check", path), 1, "huge.circ: longer than 64 MiB")
    code = f"import sys; from circuitlang.cli import main; main(['check', sys.argv[1]]); {PEAK}"
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    peak = int(r.stdout.split("PEAK")[1])
    assert peak < 2 * MAX_SOURCE_BYTES + 2**28, (peak, r.stderr)  # read once, never decoded whole
