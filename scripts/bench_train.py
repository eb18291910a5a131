"""Train-step throughput (images/s) per experiment config, at its own input size.

    python scripts/bench_train.py [--configs custom light resnet50 ...] [--batch_size 32]
                                  [--steps 10] [--img_size N] [--dtype bfloat16]

Times the jitted data-parallel train step alone (synthetic uint8 batches already on the
devices, compilation excluded), over every local device, the way `geojax.train` runs it.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from geojax import NUM_CLASSES, models, train

DEFAULT_CONFIGS = ("quick", "light", "custom", *models.TRANSFER_MODELS)


def load_experiment(name: str) -> ml_collections.ConfigDict:
    """experiments/NAME.py's config (the experiments package sits beside scripts/)."""
    repo = str(Path(__file__).resolve().parent.parent)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    return importlib.import_module(f"experiments.{name}").get_config()


def bench(name: str, batch_size: int, steps: int, img_size: int | None,
          dtype: str | None) -> dict[str, float]:
    """Steady-state images/s and ms/step of one config's train step."""
    config = load_experiment(name)
    config.batch_size = batch_size
    if img_size:
        config.data.img_size = img_size
    if dtype:
        config.model.dtype = dtype
    size = config.data.img_size
    mesh = train.create_mesh()
    model = train.create_model(config)
    tx = train.create_optimizer(config, train.create_learning_rate_fn(config), model)
    state = train.create_train_state(jax.random.PRNGKey(0), config, model, tx)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    train_step, _ = train.make_parallel_steps(mesh, model, tx, config.label_smoothing)
    rng = np.random.default_rng(0)
    batch = next(train.global_batches(iter([{
        "image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32),
    }]), mesh))
    state, metrics = train_step(state, batch)  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / steps
    return {"img_size": size, "ms_per_step": 1000 * seconds, "images_per_s": batch_size / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--img_size", type=int, default=0, help="0: each config's own")
    parser.add_argument("--dtype", default="", help="compute dtype override, e.g. bfloat16")
    args = parser.parse_args()
    devices = jax.devices()
    print(f"{len(devices)} x {devices[0].device_kind}, global batch {args.batch_size}")
    print("| config | px | ms/step | images/s |\n|---|---|---|---|")
    for name in args.configs:
        result = bench(name, args.batch_size, args.steps, args.img_size or None,
                       args.dtype or None)
        print(f"| {name} | {result['img_size']} | {result['ms_per_step']:.1f} | "
              f"{result['images_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
