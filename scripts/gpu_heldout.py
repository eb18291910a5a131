"""Train an experiment on device-made data for a fixed number of steps, then judge it on held-out
images from the independent PIL renderer: what the GPU makes of the custom model.

    python -m scripts.gpu_heldout --config custom --steps 1500 --batch_size 128 [--dtype bfloat16]

`python -m geojax.main` does the same training with checkpoints and TensorBoard (clu's writers
need TensorFlow, which the GPU machines here lack), so this drives `geojax.training`'s own model,
optimizer, state and data-parallel step (`data.source='device'`) in a bare loop. It prints
the train rate, accuracy on our renderer's test split (`geojax.data.pipeline.eval_split`) and on
`scripts/heldout_shapes.py` images (all styles, filled only, outline only).
"""

import argparse
import time

import jax
import numpy as np

from geojax.data import pipeline
from geojax.training.config import check_config
from geojax.training.steps import create_training, evaluate_split
from scripts.bench_train import load_experiment
from scripts.heldout_shapes import heldout_samples


def heldout_split(per_class: int, img_size: int, kind: str, seed: int) -> dict:
    """A held-out set (`heldout_shapes.heldout_samples`) as one batch of arrays."""
    samples = list(heldout_samples(per_class, img_size, seed, kind))
    return {"image": np.stack([s["image"] for s in samples]),
            "label": np.asarray([s["label"] for s in samples], np.int32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="custom")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--learning_rate", type=float, default=0.0, help="0: the config's")
    parser.add_argument("--heldout_per_class", type=int, default=50)
    args = parser.parse_args()

    config = load_experiment(args.config)
    config.data.source = "device"
    config.batch_size = args.batch_size
    config.total_steps = args.steps
    config.warmup_steps = max(1, args.steps // 20)
    config.model.dtype = args.dtype
    if args.learning_rate:
        config.learning_rate = args.learning_rate
    check_config(config)
    mesh, _, _, _, state, train_step, predict_step = create_training(config)

    state, metrics = train_step(state)  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for step in range(1, args.steps):
        state, metrics = train_step(state)
        if step % 500 == 0:
            print(f"step {step}: loss {float(metrics.compute()['loss']):.3f}", flush=True)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    size = config.data.img_size
    print(f"{args.config}: {args.steps} steps x {args.batch_size} at {size} px, {args.dtype}, "
          f"device data: {seconds:.1f} s ({(args.steps - 1) * args.batch_size / seconds:.0f} "
          "images/s incl. device data)")

    splits = {
        "our renderer, test split": pipeline.eval_split(config.data, "test"),
        "held-out PIL, all styles": heldout_split(args.heldout_per_class, size, "all", 7),
        "held-out PIL, filled": heldout_split(args.heldout_per_class, size, "filled", 8),
        "held-out PIL, outline": heldout_split(args.heldout_per_class, size, "outline", 9),
    }
    print(f"\n| {args.config} ({args.steps} steps, device data) | images | accuracy |\n|---|---|---|")
    for name, split in splits.items():
        results, _ = evaluate_split(predict_step, state, split, mesh, 256)
        print(f"| {name} | {len(split['label'])} | {results['accuracy']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
