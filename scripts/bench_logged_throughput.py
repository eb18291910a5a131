"""Does the trainer's logged throughput tell the truth? quick's logged images/s and MFU beside
the same train step timed bare, in one process.

    python -m scripts.bench_logged_throughput [--config quick] [--steps 600] [--bench_steps 100]

1. `geojax.training.loop.train_and_evaluate` on the config for `--steps` steps (W&B off, a scratch
   workdir): the run's totals it logs at the end (`run_images_per_sec`, `run_step_ms`,
   `run_mfu`: evaluation and checkpoints left out).
2. The same config's compiled train step called back to back `--bench_steps` times (data drawn
   on the device inside the step, as in 1; what scripts/bench_train.py times, there with a
   fixed host batch), its FLOPs from XLA's cost analysis and MFU against the same peak
   (`geojax.training.throughput.peak_flops`).
The two should agree within the trainer's per-interval overhead (logging, metric reads).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time

import jax

from geojax.training import throughput
from geojax.training.loop import train_and_evaluate
from geojax.training.steps import create_training
from geojax.training.workdir import read_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quick")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--bench_steps", type=int, default=100)
    args = parser.parse_args()
    config = importlib.import_module(f"experiments.{args.config}").get_config()
    config.total_steps = args.steps
    config.log_every_steps = max(1, args.steps // 6)
    config.eval_every_steps = config.checkpoint_every_steps = args.steps
    config.wandb.mode = "disabled"
    config.data.eval_size = 100

    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        train_and_evaluate(config, workdir)
        wall = time.perf_counter() - start
        logged = {}
        for point in read_history(workdir):
            for key in ("run_images_per_sec", "run_step_ms", "run_mfu"):
                if key in point:
                    logged[key] = point[key]

    training = create_training(config)
    state, step = training.state, training.train_step
    compiled = step.lower(state).compile()
    flops = throughput.compiled_flops(compiled)
    state, metrics = step(state)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(args.bench_steps):
        state, metrics = step(state)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / args.bench_steps
    peak = throughput.peak_flops(training.mesh.devices.flat[0], config.model.get("dtype",
                                                                                 "float32"))
    bare = {"run_images_per_sec": config.batch_size / seconds, "run_step_ms": 1000 * seconds,
            "run_mfu": flops / seconds / peak if peak else float("nan")}

    print(f"{args.config}, batch {config.batch_size}, {args.steps} trainer steps "
          f"({wall:.0f} s with compiling, evaluation and the report), {args.bench_steps} bare "
          f"steps; {jax.devices()[0].device_kind}\n")
    print("| | images/s | ms per step | MFU |")
    print("|---|---:|---:|---:|")
    print(f"| trainer, logged (`run_*`) | {logged.get('run_images_per_sec', float('nan')):.0f} | "
          f"{logged.get('run_step_ms', float('nan')):.1f} | "
          f"{logged.get('run_mfu', float('nan')):.3f} |")
    print(f"| the same step, bare | {bare['run_images_per_sec']:.0f} | "
          f"{bare['run_step_ms']:.1f} | {bare['run_mfu']:.3f} |")
    if "run_images_per_sec" in logged:
        print(f"| logged / bare | {logged['run_images_per_sec'] / bare['run_images_per_sec']:.2f}"
              f" | {logged['run_step_ms'] / bare['run_step_ms']:.2f} | "
              f"{logged.get('run_mfu', 0) / bare['run_mfu']:.2f} |")


if __name__ == "__main__":
    main()
