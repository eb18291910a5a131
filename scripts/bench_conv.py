"""Convolution speed on this machine: `lax.conv_general_dilated` / `flax.linen.Conv` vs
`geojax.models.conv` (same forward pass and input gradient, weight gradient as GEMMs).

    python -m scripts.bench_conv [--reps 9] [--batch 32] [--steps 2] [--sizes 64 128]

Per layer: forward, input-gradient and weight-gradient GFLOP/s of each, and the time of a whole
forward + backward (both gradients); then a small ResNet's jitted Adam train step in images/s
(batch 32 of 64x64 and 128x128 images).
The two sides run interleaved in one process and the medians are compared, so the ratios hold
on a shared, noisy machine even where the absolute numbers wander.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from geojax.models.conv import Conv, conv2d

# XLA:CPU compiler option that keeps YNNPACK for single matmuls only, so convolutions (and
# the elementwise ops YNNPACK would fuse into them) go back to XLA's own (Eigen) code.
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}

# name, input side, input channels, kernel side, stride, output channels
LAYERS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("3x3 64->64, 64x64", 64, 64, 3, 1, 64),
    ("3x3 128->128, 32x32", 32, 128, 3, 1, 128),
    ("3x3/2 64->128, 64x64", 64, 64, 3, 2, 128),
    ("1x1/2 64->128, 64x64", 64, 64, 1, 2, 128),
    ("1x1 256->64, 32x32", 32, 256, 1, 1, 64),
    ("7x7/2 3->64, 64x64 (stem)", 64, 3, 7, 2, 64),
    ("3x3 256->256, 8x8 (lax path)", 8, 256, 3, 1, 256),
)


def median_times(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds per call of each thunk, the thunks run round-robin after two warm-ups."""
    for fn in fns.values():
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def lax_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def layer_row(
    name: str, side: int, cin: int, ksize: int, stride: int, cout: int, batch: int, reps: int
) -> str:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, side, side, cin)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((ksize, ksize, cin, cout)) * 0.05, jnp.float32)
    out_side = -(-side // stride)
    g = jnp.asarray(rng.standard_normal((batch, out_side, out_side, cout)), jnp.float32)
    flops = 2 * batch * out_side**2 * ksize**2 * cin * cout

    def lax_impl(x: jax.Array, k: jax.Array) -> jax.Array:
        return lax_conv(x, k, stride)

    def our_impl(x: jax.Array, k: jax.Array) -> jax.Array:
        return conv2d(x, k, stride, "SAME")

    def fwd_bwd(x: jax.Array, k: jax.Array, g: jax.Array, conv: Callable[..., Any]) -> Any:
        y, vjp = jax.vjp(conv, x, k)
        return y, vjp(g)

    fns: dict[str, Callable[[], Any]] = {}
    for impl, conv in (("lax", lax_impl), ("ours", our_impl)):
        fwd = jax.jit(conv)
        dx = jax.jit(lambda x, k, g, conv=conv: jax.vjp(conv, x, k)[1](g)[0])
        dk = jax.jit(lambda x, k, g, conv=conv: jax.vjp(conv, x, k)[1](g)[1])
        both = jax.jit(functools.partial(fwd_bwd, conv=conv))
        fns[f"{impl} fwd"] = lambda fwd=fwd: fwd(x, kernel)
        fns[f"{impl} dx"] = lambda dx=dx: dx(x, kernel, g)
        fns[f"{impl} dk"] = lambda dk=dk: dk(x, kernel, g)
        fns[f"{impl} fwd+bwd"] = lambda both=both: both(x, kernel, g)
    no_ynn_dk = jax.jit(lambda x, k, g: jax.vjp(lax_impl, x, k)[1](g)[1], compiler_options=NO_YNN)
    fns["lax no-YNN dk"] = lambda: no_ynn_dk(x, kernel, g)
    t = median_times(fns, reps)
    gf = {key: flops / seconds / 1e9 for key, seconds in t.items()}
    cells = [name]
    for part in ("fwd", "dx", "dk"):
        lax_gf, our_gf = gf[f"lax {part}"], gf[f"ours {part}"]
        cells.append(f"{lax_gf:.0f} / {our_gf:.0f} ({our_gf / lax_gf:.2f}x)")
    cells.append(f"{gf['lax no-YNN dk']:.0f}")
    lax_ms, our_ms = 1e3 * t["lax fwd+bwd"], 1e3 * t["ours fwd+bwd"]
    cells.append(f"{lax_ms:.0f} / {our_ms:.0f} ({lax_ms / our_ms:.2f}x)")
    return "| " + " | ".join(cells) + " |"


class Block(nn.Module):
    """conv3x3(/s)+BN+ReLU, conv3x3+BN, + skip (1x1 conv+BN when the shape changes), ReLU."""

    features: int
    strides: int
    conv: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        y = self.conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = norm()(self.conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            x = self.conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + y)


class SmallResNet(nn.Module):
    """7x7/2 stem (64) then blocks of 64, 128 /2, 256 /2 channels, GAP, Dense(10)."""

    conv: Any = nn.Conv
    widths: Sequence[int] = (64, 128, 256)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.conv(self.widths[0], (7, 7), strides=2, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        for i, width in enumerate(self.widths):
            x = Block(width, 1 if i == 0 else 2, self.conv)(x, train)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def train_step_fn(
    model: nn.Module, tx: optax.GradientTransformation, compiler_options: dict[str, str] | None
) -> Callable[..., Any]:
    @functools.partial(jax.jit, compiler_options=compiler_options)
    def step(state: Any, images: jax.Array, labels: jax.Array) -> Any:
        params, batch_stats, opt_state = state

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state

    return step


def train_row(batch: int, side: int, steps: int, reps: int) -> str:
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((batch, side, side, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    tx = optax.adam(1e-3)
    fns: dict[str, Callable[[], Any]] = {}
    for impl, conv, options in (
        ("nn.Conv", nn.Conv, None),
        ("Conv", Conv, None),
        ("nn.Conv no-YNN", nn.Conv, NO_YNN),
    ):
        model = SmallResNet(conv=conv)
        variables = model.init(jax.random.key(0), images, train=False)
        params = variables["params"]
        state = (params, variables["batch_stats"], tx.init(params))
        step = train_step_fn(model, tx, options)

        def run(step: Callable[..., Any] = step, state: Any = state) -> Any:
            for _ in range(steps):
                state = step(state, images, labels)
            return state

        fns[impl] = run
    t = median_times(fns, reps)
    rates = {impl: batch * steps / seconds for impl, seconds in t.items()}
    speedup = rates["Conv"] / rates["nn.Conv"]
    return (
        f"| SmallResNet, batch {batch}, {side}x{side} | {rates['nn.Conv']:.1f} | "
        f"{rates['Conv']:.1f} | {speedup:.2f}x | {rates['nn.Conv no-YNN']:.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="timed calls per layer variant")
    parser.add_argument("--train-reps", type=int, default=5, help="timed calls per train variant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1, help="train steps per timed call")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 128], help="train-step image sides (px)"
    )
    args = parser.parse_args(argv)

    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, float32, batch {args.batch}")
    print()
    print("| layer | forward GFLOP/s lax / ours | input grad | weight grad "
          "| weight grad, lax no-YNN | fwd+bwd ms lax / ours |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for layer in LAYERS:
        print(layer_row(*layer, batch=args.batch, reps=args.reps), flush=True)
    print()
    print("| Adam train step | images/s nn.Conv | images/s Conv | speed-up "
          "| images/s nn.Conv no-YNN |")  # fmt: skip
    print("|---|---|---|---|---|")
    for side in args.sizes:
        print(train_row(args.batch, side, args.steps, args.train_reps), flush=True)


if __name__ == "__main__":
    main()
