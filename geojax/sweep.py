"""Run a W&B sweep file offline: grid or random trials, each its own workdir and W&B run.

    python -m geojax.sweep experiments/sweep.yaml --count 4 [--workdir runs/sweep]

W&B's own controller (`wandb sweep` + `wandb agent`) needs its server; this runner reads the same
YAML (`method`, `metric`, `parameters`, `command`) and runs the trials one after another, then
prints a table ranked by the sweep's metric. Supported parameter forms: `value`, `values`,
`distribution` uniform / log_uniform_values / int_uniform / q_uniform (random search only).
The runner itself is `geojax.training.sweep`.
"""

import argparse
import sys
from collections.abc import Sequence

import yaml

from geojax.core.errors import user_errors
from geojax.training.sweep import format_table, load_sweep, run_sweep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="W&B sweep YAML (experiments/sweep.yaml)")
    parser.add_argument("--count", type=int, default=4, help="number of trials")
    parser.add_argument("--workdir", default="runs/sweep", help="trial workdirs go under it")
    parser.add_argument("--seed", type=int, default=0, help="random search seed")
    args = parser.parse_args(argv)
    with user_errors("geojax.sweep", OSError, yaml.YAMLError):
        spec = load_sweep(args.sweep)
        rows = run_sweep(args.sweep, args.count, args.workdir, args.seed)
    metric = spec.get("metric", {}).get("name", "val_accuracy")
    goal = spec.get("metric", {}).get("goal", "maximize")
    print(format_table(rows, metric, goal))
    finished = [r for r in rows if r.get(metric) is not None]
    if finished:
        best = max(finished, key=lambda r: r[metric] if goal == "maximize" else -r[metric])
        print(f"best: trial {best['trial']} {metric}={best[metric]:.4f} ({best['workdir']})")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
