"""Baselines for the continuous-learning example on the synthetic teacher.

    python benchmarks/continuous_baseline.py

Prints the test MSE of (a) a linear least-squares fit and (b) the same MLP
392-512-512-10 (inputs x − 1/2, tanh hidden layers, linear output, Glorot
init, output weights at zero, output bias 1/2) trained by **backprop** with
the optimizer of `examples/continuous_learning.circ`: each batch of 32 seen
for 20 Adam steps (lr 5e-5, b1 0.995, b2 0.99995), 10 epochs. This is what
the streaming circuit should approach: its rule's updates are backprop's
deltas scaled by the nudge.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from circuitlang.data import load

SIZES = [(392, 512), (512, 512), (512, 10)]


def _init(key):
    keys = jax.random.split(key, len(SIZES))
    p = {}
    for i, (a, b) in enumerate(SIZES):
        lim = np.sqrt(6 / (a + b))
        p[f"W{i}"] = jax.random.uniform(keys[i], (b, a), minval=-lim, maxval=lim)
        p[f"b{i}"] = jnp.zeros(b)
    p["W2"] = jnp.zeros_like(p["W2"])
    p["b2"] = jnp.full_like(p["b2"], 0.5)
    return p


def _forward(p, x):
    h = jnp.tanh((x - 0.5) @ p["W0"].T + p["b0"][None, :])
    h = jnp.tanh(h @ p["W1"].T + p["b1"][None, :])
    return h @ p["W2"].T + p["b2"][None, :]


def _loss(p, x, y):
    return 0.5 * jnp.mean(jnp.sum((_forward(p, x) - y) ** 2, -1))


def main(epochs: int = 10, batch: int = 32, repeats: int = 20) -> None:
    d = load("synthetic")
    X, Y, Xt, Yt = map(jnp.asarray, (d.x_train, d.y_train, d.x_test, d.y_test))
    A = np.c_[d.x_train, np.ones(len(d.x_train))]
    coef, *_ = np.linalg.lstsq(A, d.y_train, rcond=None)
    lin = float(np.mean((np.c_[d.x_test, np.ones(len(d.x_test))] @ coef - d.y_test) ** 2))
    print(f"linear least squares: test MSE {lin:.4f}")

    opt = optax.adam(5e-5, b1=0.995, b2=0.99995)
    p = _init(jax.random.key(0))
    st = opt.init(p)
    n = len(X) // batch * batch

    @jax.jit
    def epoch(p, st, key):
        idx = jax.random.permutation(key, len(X))[:n].reshape(-1, batch)

        def one(c, i):
            def step(c, _):
                p, st = c
                u, st = opt.update(jax.grad(_loss)(p, X[i], Y[i]), st, p)
                return (optax.apply_updates(p, u), st), None

            return jax.lax.scan(step, c, None, length=repeats)[0], None

        return jax.lax.scan(one, (p, st), idx)[0]

    print(f"backprop, same optimizer: epoch 0 test MSE {float(jnp.mean((_forward(p, Xt) - Yt) ** 2)):.4f}")
    for e in range(epochs):
        p, st = epoch(p, st, jax.random.key(e))
        print(f"backprop, same optimizer: epoch {e + 1} test MSE {float(jnp.mean((_forward(p, Xt) - Yt) ** 2)):.4f}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    main(a.epochs, a.batch, a.repeats)
