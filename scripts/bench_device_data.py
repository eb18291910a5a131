"""Does the accelerator wait for data? Train-step images/s with device data vs the CPU loader.

    python -m scripts.bench_device_data [--config custom] [--batch_size 256] [--img_size 224]
                                        [--steps 20] [--dtype bfloat16] [--workers N]
                                        [--skip_cpu_loader] [--skip_torch] [--parts]

In one run, on the same devices and the same config (experiments/NAME.py):
  (a) bare train step on a fixed batch already on the devices (the ceiling),
  (b) end-to-end device data: render + augment + train in one jitted step (data.source='device'),
  (c) device render + augment alone,
  (d) the CPU loader (geojax.data.pipeline.train_batches, --workers processes) alone,
  (e) PyTorch: the same SE-ResNet, full train step (scripts/torch_se_resnet.py), eager and
      torch.compile, on a batch already on the device, when torch and that file are present,
  (f) PyTorch end to end: torch.compile's step fed by the CPU loader of (d).
Prints a markdown table with each figure's ratio to (a). Compilation is excluded everywhere.
`--parts` instead times each part of (c) alone (sampling, background, distance, render, each
augmentation op, the whole sample): where the device data's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import jax
import jax.numpy as jnp

from geojax.data import pipeline
from geojax.data.device import augment as device_augment
from geojax.data.device import batches as device_batches
from geojax.data.device import geometry as device_geometry
from geojax.data.device import render as device_render
from geojax.training.state import create_mesh
from geojax.training.steps import create_training
from scripts.bench_train import bench, bench_loader, load_experiment


def say(*args: object) -> None:
    print(*args, flush=True)


def timed(run: Callable[[int], object], steps: int) -> float:
    """Seconds per call of run(i) over `steps` calls after one warm-up call (compilation)."""
    jax.block_until_ready(run(0))
    start = time.perf_counter()
    out = None
    for i in range(1, steps + 1):
        out = run(i)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def device_step_rate(config, steps: int) -> float:
    """(b) images/s of the device-data step: render + augment + train in one jitted step."""
    training = create_training(config)  # config.data.source is 'device'
    holder = {"state": training.state}
    device_step = training.train_step

    def on_device(_):
        holder["state"], metrics = device_step(holder["state"])
        return metrics

    return config.batch_size / timed(on_device, steps)


def part_rates(config, steps: int) -> list[tuple[str, float]]:
    """Images/s of each part of a device sample alone (jit of vmap over one device's batch),
    to see where render + augment spend their time: sampling, background, distance, the whole
    render, the augmentation and each of its ops, the whole sample."""
    data = config.data
    size, batch = int(data.img_size), config.batch_size
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    bank = device_batches.noise_bank(0, 1, size)
    labels = jnp.arange(batch) % 10

    def sample(k, label):
        geometry = device_geometry.sample_geometry(k, label, size, tuple(data.size_range))
        return geometry, device_render.sample_style(k, geometry["radius"], bool(data.effects))

    geometry, style = jax.jit(jax.vmap(sample))(keys, labels)
    drawn = jax.jit(jax.vmap(lambda k: device_render.render_sample(k, size, bank=bank)))(keys)
    images = {"image": drawn["image"], "label": drawn["label"],
              "box": jnp.zeros((batch, 4), jnp.int32)}
    parts: list[tuple[str, Callable, tuple]] = [
        ("sample geometry + style", jax.vmap(sample), (keys, labels)),
        ("background", jax.vmap(lambda k, st: device_render.draw_background(k, st, size, bank)),
         (keys, style)),
        ("signed distance", jax.vmap(lambda g, st: device_geometry.signed_distance(
            g, size, st["jitter"])), (geometry, style)),
        ("render (all of the above, coverage, effects)", jax.vmap(
            lambda k: device_render.render_sample(k, size, tuple(data.size_range),
                                                  bool(data.effects), bank)), (keys,)),
    ]
    ops = data.device_ops.split("|") if data.augment else []
    for spec in ([data.device_ops] if ops else []) + ops:
        augment = device_augment.compose(spec)
        name = "augment: all ops" if spec == data.device_ops else f"  op {spec.strip()}"
        parts.append((name, jax.vmap(lambda k, x, f=augment: {
            key: v for key, v in f(k, {**x, "noise_bank": bank}).items() if key != "noise_bank"}),
            (keys, images)))
    parts.append(("whole sample (render + augment + box)", jax.vmap(
        device_batches.sample_fn(data), in_axes=(0, None)), (keys, bank)))
    rates = []
    for name, fn, fn_args in parts:
        compiled = jax.jit(fn)
        rates.append((name, batch / timed(lambda _, f=compiled, a=fn_args: f(*a), steps)))
        say(f"{name}: {rates[-1][1]:.0f} images/s")
    return rates


def device_data_rate(config, steps: int) -> float:
    """(c) images/s of render + augment alone, sharded over all devices."""
    make = device_batches.batch_fn(config.data, create_mesh(), config.batch_size, config.seed)
    return config.batch_size / timed(lambda i: make(i), steps)


def stream_config(config):
    """`config` with the CPU loader (render + albumentations in worker processes)."""
    stream = config.copy_and_resolve_references()
    stream.data.source = "stream"
    stream.data.prefetch = max(int(config.data.prefetch), 2 * int(config.data.workers))
    return stream


def cpu_loader_rate(config, batches: int) -> float:
    """(d) images/s of the CPU loader alone."""
    return bench_loader(stream_config(config), batches)


def torch_rates(config, steps: int, loader: bool) -> dict[str, float]:
    """(e) PyTorch images/s, eager and torch.compile on one batch already on the device, and
    (f) with `loader`, torch.compile fed by the same CPU loader as (d) (PyTorch end to end);
    {} with a note when unavailable."""
    try:
        import torch

        from scripts.torch_se_resnet import bench_torch
    except ImportError as e:
        say(f"note: no PyTorch column ({e})")
        return {}
    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_size, img_size = config.batch_size, int(config.data.img_size)
    dtype = str(config.model.dtype)
    runs = [("(e) PyTorch eager train step", False, False),
            ("(e) PyTorch torch.compile train step", True, False)]
    if loader:
        runs.append((f"(f) PyTorch torch.compile fed by the CPU loader, "
                     f"{config.data.workers} workers", True, True))
    rates = {}
    for name, compile_, fed in runs:
        try:
            source = (pipeline.train_batches(stream_config(config).data, batch_size, seed=0)
                      if fed else contextlib.nullcontext())
            with source as stream:
                rates[name] = bench_torch(batch_size, img_size, steps, compile=compile_,
                                          device=torch_device, dtype=dtype, batches=stream)
        except Exception as e:  # a failed torch run must not lose the JAX figures
            say(f"note: {name} failed: {type(e).__name__}: {e}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="custom", help="experiments/NAME.py")
    parser.add_argument("--batch_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--img_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="", help="model compute dtype, e.g. bfloat16")
    parser.add_argument("--workers", type=int, default=-1, help="-1: config.data.workers")
    parser.add_argument("--skip_cpu_loader", action="store_true")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--parts", action="store_true",
                        help="only time each part of render + augment alone (one device's "
                             "batch) and exit")
    args = parser.parse_args()

    config = load_experiment(args.config)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.img_size:
        config.data.img_size = args.img_size
    if args.dtype:
        config.model.dtype = args.dtype
    if args.workers >= 0:
        config.data.workers = args.workers
    config.data.source = "device"
    pipeline.check_data_config(config.data)
    devices = jax.devices()
    say(f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}; config {args.config}, batch {config.batch_size}, "
        f"{config.data.img_size} px, dtype {config.model.dtype}, augment "
        f"{config.data.augment}, effects {config.data.effects}, steps {args.steps}")

    if args.parts:
        rates = part_rates(config, args.steps)
        say("\n| part (one device's batch) | images/s |\n|---|---|")
        for name, rate in rates:
            say(f"| {name} | {rate:,.0f} |")
        return

    rows: list[tuple[str, float]] = []
    bare = bench(config, args.steps)["images_per_s"]
    end_to_end = device_step_rate(config, args.steps)
    rows.append(("(a) bare train step, batch on device", bare))
    say(f"(a) {bare:.0f} images/s")
    rows.append(("(b) device data + train step (one jitted step)", end_to_end))
    say(f"(b) {end_to_end:.0f} images/s")
    data_only = device_data_rate(config, args.steps)
    rows.append(("(c) device render + augment alone", data_only))
    say(f"(c) {data_only:.0f} images/s")
    if not args.skip_cpu_loader:
        workers = int(config.data.workers)
        loader = cpu_loader_rate(config, max(2, args.steps // 2))
        rows.append((f"(d) CPU loader alone, {workers} workers", loader))
        say(f"(d) {loader:.0f} images/s")
    torch_figures = {} if args.skip_torch else torch_rates(
        config, args.steps, loader=not args.skip_cpu_loader)
    for name, rate in torch_figures.items():
        rows.append((name, rate))
        say(f"{name}: {rate:.0f} images/s")

    say("\n| what | images/s | vs (a) |\n|---|---|---|")
    for name, rate in rows:
        say(f"| {name} | {rate:,.0f} | {rate / bare:.2f} |")


if __name__ == "__main__":
    main()
