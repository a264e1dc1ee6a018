"""Per-epoch time of compiled .circ files against the hand-written JAX reference.

Runs `../shared/bench/ep_ref.py train` and `circuitlang.training` on the same
settings, alternately, pinned to one core with XLA single-threaded (the
second core of these machines is stolen in bursts: compare ratios measured
side by side, not absolute times). Compilation is excluded on both sides
(the reference compiles ahead of time; for circuitlang the first epoch,
which includes compilation, is dropped).

    python benchmarks/speed.py                      # proto and sb17 on Fashion-MNIST, 3 epochs, 2 rounds
    python benchmarks/speed.py --forms proto --epochs 4 --rounds 3
    python benchmarks/speed.py --data digits        # tiny, for a quick look

Writes benchmarks/results/speed.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF = (HERE.parent.parent / "shared" / "bench" / "ep_ref.py").resolve()
CIRCUITS = {"proto": HERE / "circuits" / "fashion_proto.circ", "sb17": HERE / "circuits" / "fashion_sb17.circ"}
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

OURS = r"""
import json, sys
import circuitlang as cl
from circuitlang.data import load
from circuitlang.training import train
path, data, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
overrides = json.loads(sys.argv[4])
d = load(data)
model = cl.compile(cl.load(path), overrides)
r = train(model, d, epochs=epochs, progress=False)
print("RESULT " + json.dumps(r.history))
"""


def _run(cmd, env):
    full = {**os.environ, **ONE_CORE, **env}
    p = subprocess.run(["taskset", "-c", "0", *cmd], capture_output=True, text=True, env=full)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p.stdout


def run_reference(form: str, data: str, epochs: int, arch: list[int] | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.json"
        cmd = [sys.executable, str(REF), "train", "--dataset", {"fashion-mnist": "fashion"}.get(data, data),
               "--preset", form, "--epochs", str(epochs), "--threads", "1", "--json", str(out),
               "--eval-at", str(epochs)]
        if arch:
            cmd += ["--arch", *map(str, arch)]
        _run(cmd, {})
        res = json.loads(out.read_text())
    times = res["runs"][0]["epoch_s"]
    acc = res["summary"]["test_acc"]
    return {"epoch_s": times, "test_acc": acc}


def run_ours(form: str, data: str, epochs: int, overrides: dict) -> dict:
    out = _run([sys.executable, "-c", OURS, str(CIRCUITS[form]), data, str(epochs + 1), json.dumps(overrides)], {})
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    hist = json.loads(line[len("RESULT "):])
    return {"epoch_s": [h["seconds"] for h in hist[1:]], "test_acc": hist[-1].get("test_accuracy")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--forms", default="proto,sb17")
    ap.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating reference/circuitlang rounds")
    ap.add_argument("--json", default=str(HERE / "results" / "speed.json"))
    args = ap.parse_args(argv)
    arch, overrides = None, {}
    if args.data == "digits":
        arch = [64, 500, 10]
        overrides = {}
    rows = []
    for form in args.forms.split(","):
        ref_t, our_t, ratios = [], [], []
        for r in range(args.rounds):
            ref = run_reference(form, args.data, args.epochs, arch)
            ours = run_ours(form, args.data, args.epochs, overrides) if args.data != "digits" else run_ours_digits(form, args.epochs)
            ref_t += ref["epoch_s"]
            our_t += ours["epoch_s"]
            ratios.append(statistics.median(ours["epoch_s"]) / statistics.median(ref["epoch_s"]))
            print(f"{form} round {r}: reference {statistics.median(ref['epoch_s']):.3f} s/epoch, "
                  f"circuitlang {statistics.median(ours['epoch_s']):.3f} s/epoch, ratio {ratios[-1]:.3f}", flush=True)
        rows.append({
            "form": form, "data": args.data, "epochs": args.epochs, "rounds": args.rounds,
            "reference_s_per_epoch": statistics.median(ref_t), "circuitlang_s_per_epoch": statistics.median(our_t),
            "ratio_median_of_rounds": statistics.median(ratios), "ratios": ratios,
            "reference_epochs": ref_t, "circuitlang_epochs": our_t,
        })
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print("\n| form | data | reference s/epoch | circuitlang s/epoch | ratio (median of rounds) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['form']} | {r['data']} | {r['reference_s_per_epoch']:.3f} | {r['circuitlang_s_per_epoch']:.3f} "
              f"| {r['ratio_median_of_rounds']:.3f} |")
    return 0


def run_ours_digits(form: str, epochs: int) -> dict:
    """The same circuits resized to digits' 64 inputs (a quick check, not the target)."""
    text = CIRCUITS[form].read_text().replace("[784]", "[64]")
    with tempfile.NamedTemporaryFile("w", suffix=".circ", delete=False) as f:
        f.write(text)
    try:
        out = _run([sys.executable, "-c", OURS, f.name, "digits", str(epochs + 1), "{}"], {})
    finally:
        os.unlink(f.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    hist = json.loads(line[len("RESULT "):])
    return {"epoch_s": [h["seconds"] for h in hist[1:]], "test_acc": hist[-1].get("test_accuracy")}


if __name__ == "__main__":
    sys.exit(main())
