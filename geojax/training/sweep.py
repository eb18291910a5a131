"""A W&B sweep file run offline: grid or random trials, each its own workdir and W&B run
(the command is `python -m geojax.sweep`).

W&B's own controller (`wandb sweep` + `wandb agent`) needs its server; this runner reads the same
YAML (`method`, `metric`, `parameters`, `command`) and runs the trials one after another
(`run_sweep`); `format_table` ranks them by the sweep's metric. Supported parameter forms:
`value`, `values`, `distribution` uniform / log_uniform_values / int_uniform / q_uniform (random
search only).
"""

import itertools
import json
import math
import os
import random
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from geojax.core.errors import UserError

DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


class SweepError(UserError, ValueError):
    """A sweep file this runner cannot run; the message names the problem."""


def load_sweep(path: str) -> dict[str, Any]:
    """The sweep spec, checked for what the runner needs."""
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or "parameters" not in spec:
        raise SweepError(f"{path}: not a W&B sweep file (no 'parameters')")
    if spec.get("method", "random") not in ("grid", "random"):
        raise SweepError(
            f"{path}: method {spec.get('method')!r} needs W&B's server; offline runs 'grid' "
            "or 'random'"
        )
    metric = spec.get("metric", {})
    if metric.get("goal", "maximize") not in ("maximize", "minimize"):
        raise SweepError(f"{path}: metric.goal must be 'maximize' or 'minimize'")
    return spec


def _sample(name: str, parameter: Mapping[str, Any], rng: random.Random) -> Any:
    if "value" in parameter:
        return parameter["value"]
    if "values" in parameter:
        return rng.choice(parameter["values"])
    distribution = parameter.get("distribution", "uniform")
    low: Any = parameter.get("min")  # numbers from YAML; a missing one fails the draw below
    high: Any = parameter.get("max")
    if distribution == "uniform":
        return rng.uniform(low, high)
    if distribution == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if distribution == "int_uniform":
        return rng.randint(low, high)
    if distribution == "q_uniform":
        q = parameter.get("q", 1)
        return round(rng.uniform(low, high) / q) * q
    raise SweepError(f"parameter {name}: distribution {distribution!r} is not supported offline")


def trials(spec: Mapping[str, Any], count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Parameter assignments: the grid in order (up to `count`), or `count` random draws."""
    parameters = spec["parameters"]
    names = sorted(parameters)
    if spec.get("method", "random") == "grid":
        axes = []
        for name in names:
            p = parameters[name]
            if "value" in p:
                axes.append([p["value"]])
            elif "values" in p:
                axes.append(list(p["values"]))
            else:
                raise SweepError(f"grid search needs 'values' for parameter {name}")
        for combination in itertools.islice(itertools.product(*axes), count):
            yield dict(zip(names, combination, strict=True))
        return
    rng = random.Random(seed)
    for _ in range(count):
        yield {name: _sample(name, parameters[name], rng) for name in names}


def _format_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "(" + ",".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def trial_command(spec: Mapping[str, Any], assignment: Mapping[str, Any], workdir: str) -> list[str]:
    """The sweep's command with W&B's macros filled in and --workdir pointed at the trial's."""
    args = [f"--{name}={_format_value(value)}" for name, value in sorted(assignment.items())]
    command: list[str] = []
    for part in spec.get("command", DEFAULT_COMMAND):
        if part == "${env}":
            continue
        if part == "${interpreter}":
            command.append(sys.executable)
        elif part == "${program}":
            command.append(spec["program"])
        elif part == "${args}":
            command.extend(args)
        elif part == "${args_no_hyphens}":
            command.extend(a[2:] for a in args)
        elif part in ("python", "python3"):
            command.append(sys.executable)
        else:
            command.append(part)
    command = [a for a in command if not a.startswith("--workdir")]
    return [*command, f"--workdir={workdir}"]


def trial_result(workdir: str) -> dict[str, float]:
    """Best validation metrics and the test report of a finished trial's workdir."""
    result: dict[str, float] = {}
    history = Path(workdir) / "history.jsonl"
    if history.exists():
        for line in history.read_text().splitlines():
            point = json.loads(line)
            for key, value in point.items():
                if key.startswith("val_"):
                    best = result.get(key)
                    if best is None:
                        result[key] = value
                    else:
                        result[key] = min(best, value) if key.endswith("loss") else max(best, value)
    report = Path(workdir) / "eval" / "metrics.json"
    if report.exists():
        result["test_accuracy"] = json.loads(report.read_text())["accuracy"]
    return result


def run_sweep(path: str, count: int, workdir: str, seed: int = 0) -> list[dict[str, Any]]:
    """Runs the trials; returns one row per trial (assignment, return code, metrics)."""
    spec = load_sweep(path)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    rows = []
    for index, assignment in enumerate(trials(spec, count, seed)):
        trial_dir = os.path.join(workdir, f"trial-{index:03d}")
        command = trial_command(spec, assignment, trial_dir)
        print(f"[sweep] trial {index}: {shlex.join(command)}", flush=True)
        returncode = subprocess.run(command, env=env).returncode
        rows.append({"trial": index, "workdir": trial_dir, "returncode": returncode,
                     **assignment, **trial_result(trial_dir)})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], metric: str, goal: str) -> str:
    """A markdown table, best trial first (failed trials last)."""
    def key(row):
        value = row.get(metric)
        if value is None:
            return math.inf
        return -value if goal == "maximize" else value

    rows = sorted(rows, key=key)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                 for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
