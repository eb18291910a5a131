"""Data pipeline throughput: rendering, augmentation and the whole loader, per core.

    python -m scripts.bench_data [--sizes 64 224] [--seconds 3] [--workers 2]

Render and augment run in this process (one core). The loader runs `--workers` processes; its
images/s is divided by the workers to give a per-core figure, and its parallel efficiency is
reported against render + augment measured here, in the same run (numbers on a shared machine
are noisy; the ratios hold).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geojax.data import default_data_config, render_shape, train_batches
from geojax.data.augment import augment, train_augmentation


def rate(fn, seconds: float) -> float:
    """Calls of `fn` per second over about `seconds` (after one warm-up call)."""
    fn(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    pipeline = train_augmentation()
    print("| size | render img/s/core | augment img/s/core | render+augment img/s/core "
          "| loader img/s/core | loader efficiency |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        images = [render_shape(np.random.default_rng(i), size).image for i in range(64)]
        render = rate(lambda i, s=size: render_shape(np.random.default_rng(i), s), args.seconds)
        aug = rate(lambda i, images=images: augment(pipeline, images[i % 64], i), args.seconds)
        both = 1 / (1 / render + 1 / aug)
        cfg = default_data_config()
        cfg.img_size, cfg.workers, cfg.prefetch = size, args.workers, 2 * args.workers
        with train_batches(cfg, args.batch, seed=0) as stream:
            next(stream)  # start-up: spawn workers, import
            batches = rate(lambda _i: next(stream), args.seconds * 2)
        loader = batches * args.batch / max(args.workers, 1)
        print(f"| {size} | {render:.0f} | {aug:.0f} | {both:.0f} | {loader:.0f} "
              f"| {loader / both:.2f} |", flush=True)


if __name__ == "__main__":
    main()
