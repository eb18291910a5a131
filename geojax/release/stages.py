"""The registry's rules, without I/O: the stages a version moves through, the metrics gate in
front of production, and the table `python -m geojax.registry list` prints."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

STAGES: tuple[str, ...] = ("development", "staging", "canary", "production")
"""TF Serving version labels, in promotion order; `register` gives a new version the first.
`canary` is optional: a staging version on trial beside production (the proxy's rollout
setting splits or shadows traffic to it); production takes a version from staging or canary."""
REMOVABLE_STAGES: tuple[str, ...] = ("canary",)
"""Labels that may point nowhere (`remove_label`); the others always name a version."""

GATED_METRICS: dict[str, int] = {"accuracy": +1, "macro_f1": +1}
"""Metrics a production candidate must not be worse at than production (+1: higher is better).
macro_f1 is gated beside accuracy so a model cannot trade a rare class away for the mean."""


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One row of `Registry.versions()`."""

    version: int
    stages: tuple[str, ...]
    archived: bool
    created: str | None
    accuracy: float | None
    parity: Any
    size_bytes: int
    workdir: str | None
    path: Path


def is_number(x: Any) -> TypeGuard[int | float]:
    """A finite int or float (not a bool): a metric that can be compared."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def metric_regressions(candidate: Mapping[str, Any], production: Mapping[str, Any]) -> list[str]:
    """What `candidate` metrics are worse at than `production` metrics, as sentences (empty: the
    candidate may replace production). A candidate without accuracy cannot be compared."""
    problems = []
    if not is_number(candidate.get("accuracy")):
        problems.append("it has no numeric metrics.accuracy in its metadata")
    for name, sign in GATED_METRICS.items():
        new, old = candidate.get(name), production.get(name)
        if is_number(new) and is_number(old) and sign * (new - old) < 0:
            problems.append(f"{name} {new:.4f} < production's {old:.4f}")
    return problems


def format_table(infos: Sequence[VersionInfo]) -> str:
    """`versions()` as the fixed-width table that `list` prints."""
    header = ("version", "stages", "created", "accuracy", "parity", "size", "workdir")
    rows = [header]
    for info in infos:
        stages = "archived" if info.archived else ",".join(info.stages) or "-"
        rows.append(
            (
                str(info.version),
                stages,
                info.created or "-",
                f"{info.accuracy:.4f}" if info.accuracy is not None else "-",
                _format_parity(info.parity),
                _format_size(info.size_bytes),
                info.workdir or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _format_parity(parity: Any) -> str:
    if parity is None:
        return "-"
    if is_number(parity):
        return f"{parity:.1e}"
    return str(parity)[:24]


def _format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"
