"""The files of a training workdir beside its checkpoints: the resolved config
(config.json), the logged history (history.jsonl) and the temperatures fitted after training
(calibration.json)."""

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from geojax.training.checkpoints import CheckpointError

CONFIG_FILENAME = "config.json"
HISTORY_FILENAME = "history.jsonl"
CALIBRATION_FILENAME = "calibration.json"


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config the run uses to WORKDIR/config.json."""
    path = epath.Path(workdir) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = epath.Path(workdir) / CONFIG_FILENAME
    if not path.exists():
        raise CheckpointError(f"{path} not found: is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def append_history(workdir: str, step: int, split: str, values: Mapping[str, float]) -> None:
    """One JSON line per logged point; the training-curves plot reads it."""
    with open(os.path.join(workdir, HISTORY_FILENAME), "a") as f:
        f.write(json.dumps({"step": step, "split": split, **values}) + "\n")


def read_history(workdir: str) -> list[dict[str, Any]]:
    """Logged points, the last write winning where a resumed run logged a step twice."""
    path = os.path.join(workdir, HISTORY_FILENAME)
    if not os.path.exists(path):
        return []
    points: dict[tuple[int, str], dict[str, Any]] = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                point = json.loads(line)
                points[(point["step"], point["split"])] = point
            except (ValueError, KeyError, TypeError):
                # A run killed mid-write leaves a truncated last line: skip what is unreadable.
                logging.warning("%s line %d is not a logged point; skipped", path, number)
    return [points[k] for k in sorted(points)]


def write_calibration(workdir: str, step: int, temperature: float,
                      values: Mapping[str, float]) -> None:
    """Records the temperature fitted for checkpoint `step` (with its ECE before and after) in
    WORKDIR/calibration.json, beside the others calibrated there."""
    path = epath.Path(workdir) / CALIBRATION_FILENAME
    entries = json.loads(path.read_text()) if path.exists() else {}
    entries[str(step)] = {"temperature": temperature, **values}
    path.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")


def read_temperature(workdir: str, step: int) -> float:
    """The softmax temperature fitted for checkpoint `step` after training (1.0, i.e. raw
    logits, for a checkpoint that was never calibrated)."""
    path = epath.Path(workdir) / CALIBRATION_FILENAME
    if not path.exists():
        return 1.0
    try:
        entry = json.loads(path.read_text()).get(str(step), {})
        return float(entry.get("temperature", 1.0))
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} cannot be read ({err}): delete it to use raw logits, or "
                              "rerun training to calibrate again") from err
