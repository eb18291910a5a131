"""The model registry: numbered SavedModel versions under a TF Serving model base path, and the
stages development -> staging -> production as TF Serving version labels in `models.config`.

    python -m geojax.registry --base_path export/geojax list
    python -m geojax.registry --base_path export/geojax promote 3 --to staging
    python -m geojax.registry --base_path export/geojax promote 3 --to production
    python -m geojax.registry --base_path export/geojax rollback --stage production
    python -m geojax.registry --base_path export/geojax archive 1

The exporter writes a SavedModel into `Registry.incoming_dir()` (a hidden directory inside the
base path, which TF Serving ignores because its name is not a number) and hands it to
`Registry.register`, which renames it into place as the next version: TF Serving never sees a
half-written version. Every change runs under an `fcntl` lock, rewrites the model server config
file atomically and appends to `registry.json` in the base path (labels, rollback stacks,
archived versions, history).

TF Serving's rules this module follows (tensorflow/serving, `tensorflow_serving/g3doc/
serving_config.md`, "Assigning String Labels to Model Versions"; the config is a text-format
`ModelServerConfig` from `tensorflow_serving/config/model_server_config.proto`):

- A label may only be (re)assigned to a version that is already loaded and available; the
  server's `--allow_version_labels_for_unavailable_models` flag only covers labels not in use yet
  (`ServerCore::UpdateModelVersionLabelMap` in `model_servers/server_core.cc`). So a label that
  must move to a version the current config does not list is moved in two writes: first the new
  version is listed with the labels unchanged; once it is AVAILABLE the label moves (the server
  updates labels before it unloads versions dropped by the same config).
- "Available" is known by polling `ModelService.GetModelStatus` (gRPC), with a bounded wait, at
  the model server: `server="host:port"`, or by default (`AUTO_SERVER`) the one at
  $GEOJAX_MODEL_SERVER or localhost:8500 when something listens there. If that server does not
  load the version in time, the old config is put back and the command fails saying how to
  finish. Only when no server listens (none is running: the config is then for its next start)
  or with `server=None` does the registry write both phases without asking, `poll_wait_seconds`
  apart. So a promote that returns success has been seen through by the server it found.
- Start the server with `--allow_version_labels_for_unavailable_models=true`: at startup every
  label is new and no version is loaded yet.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import getpass
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from geojax.core.artefact import versions_on_disk

STAGES: tuple[str, ...] = ("development", "staging", "canary", "production")
"""TF Serving version labels, in promotion order; `register` gives a new version the first.
`canary` is optional: a staging version on trial beside production (the proxy's rollout
setting splits or shadows traffic to it); production takes a version from staging or canary."""
REMOVABLE_STAGES: tuple[str, ...] = ("canary",)
"""Labels that may point nowhere (`remove_label`); the others always name a version."""

GATED_METRICS: dict[str, int] = {"accuracy": +1, "macro_f1": +1}
"""Metrics a production candidate must not be worse at than production (+1: higher is better).
macro_f1 is gated beside accuracy so a model cannot trade a rare class away for the mean."""

INCOMING_PREFIX = ".incoming-"
ARCHIVE_DIR = "archive"
STATE_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
METADATA_FILE = "metadata.json"
STALE_INCOMING_SECONDS = 3600.0

AUTO_SERVER = "auto"
"""`Registry(server=AUTO_SERVER)`: wait at $GEOJAX_MODEL_SERVER (the proxy's variable) or
DEFAULT_SERVER when something listens there; write without waiting when nothing does."""
DEFAULT_SERVER = "localhost:8500"

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """A registry operation a user asked for that cannot be done; the message says why."""


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


# ---------------------------------------------------------------------------------------------
# Pure pieces: the config proto, the write plan, the metrics gate, the table
# ---------------------------------------------------------------------------------------------


def model_config(
    model_name: str, base_path: str, versions: Sequence[int], labels: Mapping[str, int]
) -> model_server_config_pb2.ModelConfig:
    """The `ModelConfig` serving exactly `versions`, with `labels` as version labels."""
    config = model_server_config_pb2.ModelConfig(
        name=model_name, base_path=base_path, model_platform="tensorflow"
    )
    config.model_version_policy.specific.versions.extend(sorted(versions))
    for label, version in labels.items():
        config.version_labels[label] = version
    return config


def config_phases(
    loaded_versions: Sequence[int],
    loaded_labels: Mapping[str, int],
    versions: Sequence[int],
    labels: Mapping[str, int],
) -> list[tuple[list[int], dict[str, int]]]:
    """The (versions, labels) configs to write, in order, to go from what the server has now to
    the target. Two when a label would point at a version the current config does not list (it
    is not loaded yet): first the union of versions with the labels unchanged, then the target.
    """
    target = (sorted(set(versions)), dict(labels))
    if all(v in loaded_versions for v in labels.values()):
        return [target]
    return [(sorted(set(loaded_versions) | set(versions)), dict(loaded_labels)), target]


def metric_regressions(candidate: Mapping[str, Any], production: Mapping[str, Any]) -> list[str]:
    """What `candidate` metrics are worse at than `production` metrics, as sentences (empty: the
    candidate may replace production). A candidate without accuracy cannot be compared."""
    problems = []
    if not _is_number(candidate.get("accuracy")):
        problems.append("it has no numeric metrics.accuracy in its metadata")
    for name, sign in GATED_METRICS.items():
        new, old = candidate.get(name), production.get(name)
        if _is_number(new) and _is_number(old) and sign * (new - old) < 0:
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


def _is_number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _format_parity(parity: Any) -> str:
    if parity is None:
        return "-"
    if _is_number(parity):
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


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, locks, hashes
# ---------------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    # NamedTemporaryFile is 0600; the server (often another user in a container) must read it.
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)
    _fsync_dir(path.parent)  # the rename itself survives a crash only once its directory is


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(root):
        for name in sorted(filenames):
            yield Path(dirpath, name)


def _sync_and_hash(path: Path) -> str:
    """The file's sha256, after forcing its contents to disk (a version is renamed into place
    only once every file of it is durable)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


class Registry:
    """Versions of one model under `base_path`, served by TF Serving through `config_file`.

    `serving_base_path` is `base_path` as the server sees it (e.g. `/models/geojax` inside the
    `tensorflow/serving` container; default: what the config file already says, else the
    absolute local path). `server` ("host:port", gRPC) lets label moves wait until TF Serving
    has loaded the version, for at most `load_timeout_seconds`; AUTO_SERVER (the default) finds
    the server at $GEOJAX_MODEL_SERVER or DEFAULT_SERVER if one listens; None never asks a
    server and waits `poll_wait_seconds` between the two writes.
    """

    def __init__(
        self,
        base_path: str | os.PathLike[str],
        config_file: str | os.PathLike[str] = "serving/models.config",
        model_name: str = "geojax",
        serving_base_path: str | None = None,
        *,
        server: str | None = AUTO_SERVER,
        poll_wait_seconds: float = 0.0,
        load_timeout_seconds: float = 300.0,
    ) -> None:
        self.base_path = Path(base_path).absolute()
        self.config_file = Path(config_file).absolute()
        self.model_name = model_name
        self.serving_base_path = serving_base_path
        self.server = server
        self.poll_wait_seconds = poll_wait_seconds
        self.load_timeout_seconds = load_timeout_seconds

    # -- public API --------------------------------------------------------------------------

    def incoming_dir(self) -> Path:
        """A fresh directory inside the base path for the exporter to write a SavedModel into;
        creates the base path if needed. Pass it to `register` when the SavedModel is complete.
        """
        self.base_path.mkdir(parents=True, exist_ok=True)
        path = self.base_path / f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def register(self, incoming: str | os.PathLike[str], metadata: Mapping[str, Any]) -> int:
        """Make the complete SavedModel in `incoming` the next version and label it
        development; returns the version.

        `metadata` goes to the version's `metadata.json`; the export is expected to give
        `metrics` (evaluate's metrics.json: `accuracy`, `macro_f1`, ...), `parity` (max |JAX -
        SavedModel| on a check batch) and `workdir`. The registry adds `version`, `created`,
        `model_name`, `size_bytes` and `sha256` (every file of the version, by relative path).
        """
        incoming = Path(incoming).absolute()
        if not incoming.is_dir():
            raise RegistryError(f"{incoming} is not a directory; export into incoming_dir()")
        if not any((incoming / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise RegistryError(f"{incoming} holds no saved_model.pb: not a complete SavedModel")
        with self._locked():
            state = self._read_state()
            self._remove_stale_incoming(STALE_INCOMING_SECONDS, keep=incoming)
            version = max([state["last_version"], *self._versions_on_disk()], default=0) + 1
            files = sorted(p for p in _files(incoming) if p != incoming / METADATA_FILE)
            record = {
                **metadata,
                "model_name": self.model_name,
                "version": version,
                "created": _now(),
                "size_bytes": sum(p.stat().st_size for p in files),
                "sha256": {p.relative_to(incoming).as_posix(): _sync_and_hash(p)
                           for p in files},
            }
            for directory in {p.parent for p in files}:
                _fsync_dir(directory)
            try:
                text = json.dumps(record, indent=2, sort_keys=True) + "\n"
            except TypeError as e:
                raise RegistryError(f"metadata must be JSON-serialisable: {e}") from None
            _write_atomically(incoming / METADATA_FILE, text)
            try:
                os.rename(incoming, self.base_path / str(version))
            except OSError as e:
                raise RegistryError(
                    f"cannot move {incoming} to {self.base_path / str(version)} ({e}); the "
                    "incoming directory must be inside the base path (use incoming_dir())"
                ) from None
            _fsync_dir(self.base_path)
            # The number is spent from here on, even if the label move below fails.
            state["last_version"] = version
            self._append_history(state, "register", version=version)
            self._write_state(state)
            try:
                self._move_label(state, "development", version, "promote", reason="registered")
            except RegistryError as e:
                raise RegistryError(
                    f"version {version} was registered but not labelled development: {e}"
                ) from None
        return version

    def promote(self, version: int, to: str, *, force: bool = False, reason: str = "") -> None:
        """Point the `to` label at `version`.

        Canary requires the version to be in staging now. Production requires it to be in
        staging or canary now and its gated metrics (`GATED_METRICS`) to be no worse than
        production's (no gate while production is unset); `force=True` (with a `reason`, which
        is recorded) overrides the metrics gate only. Promoting to the stage a version already
        holds does nothing.
        """
        self._check_stage(to)
        with self._locked():
            state = self._read_state()
            self._check_live(version)
            labels = state["labels"]
            if labels.get(to) == version:
                return
            if force and not reason.strip():
                raise RegistryError("--force needs a --reason; it is recorded in the history")
            forced: list[str] = []
            if to == "canary" and labels.get("staging") != version:
                raise RegistryError(
                    f"version {version} is not in staging (staging is "
                    f"{labels.get('staging', 'unset')}); promote it to staging first"
                )
            if to == "production":
                if version not in (labels.get("staging"), labels.get("canary")):
                    raise RegistryError(
                        f"version {version} is not in staging or canary (staging is "
                        f"{labels.get('staging', 'unset')}, canary "
                        f"{labels.get('canary', 'unset')}); promote it to staging first"
                    )
                current = labels.get("production")
                if current is not None:
                    problems = metric_regressions(
                        self._metadata(version).get("metrics") or {},
                        self._metadata(current).get("metrics") or {},
                    )
                    if problems and not force:
                        raise RegistryError(
                            f"version {version} may not replace production version {current}: "
                            + "; ".join(problems)
                            + ". Pass --force --reason TEXT to promote anyway"
                        )
                    forced = problems
            self._move_label(
                state, to, version, "promote", reason=reason or None, overridden=forced or None
            )

    def rollback(self, stage: str) -> int:
        """Point `stage` back at the version it pointed at before; returns that version."""
        self._check_stage(stage)
        with self._locked():
            state = self._read_state()
            stack = state["previous"].get(stage) or []
            if not stack:
                raise RegistryError(
                    f"no earlier {stage} version to roll back to (its history is empty)"
                )
            target = stack[-1]
            self._check_live(target)
            self._move_label(state, stage, target, "rollback", push=False)
        return target

    def remove_label(self, stage: str) -> int:
        """Point `stage` (one of REMOVABLE_STAGES: the canary, when its trial ends) at no
        version; returns the version it pointed at. The history keeps the move, and a
        `rollback` of the stage brings the label back."""
        self._check_stage(stage)
        if stage not in REMOVABLE_STAGES:
            raise RegistryError(f"the {stage} label always names a version; only "
                                f"{', '.join(REMOVABLE_STAGES)} can be removed")
        with self._locked():
            state = self._read_state()
            version = state["labels"].get(stage)
            if version is None:
                raise RegistryError(f"no version is in {stage}")
            state["previous"].setdefault(stage, []).append(version)
            del state["labels"][stage]
            self._append_history(state, "remove", stage=stage, previous=version)
            self._commit(state)
        return int(version)

    def archive(self, version: int) -> None:
        """Move a version no label points at out of TF Serving's view, to `archive/<version>`.
        Its number is never reused. The production rollback target cannot be archived either:
        it is kept loaded so that a rollback is instant."""
        with self._locked():
            state = self._read_state()
            self._check_live(version)
            stages = [s for s, v in state["labels"].items() if v == version]
            if stages:
                raise RegistryError(
                    f"version {version} is {', '.join(stages)}; point that label elsewhere "
                    "(promote or rollback) before archiving it"
                )
            if self._rollback_target(state, "production") == version:
                raise RegistryError(
                    f"version {version} is the production rollback target; it can be archived "
                    "once another version has replaced the current production"
                )
            (self.base_path / ARCHIVE_DIR).mkdir(exist_ok=True)
            os.rename(self.base_path / str(version), self.base_path / ARCHIVE_DIR / str(version))
            state["archived"] = sorted({*state["archived"], version})
            for stack in state["previous"].values():
                stack[:] = [v for v in stack if v != version]
            self._append_history(state, "archive", version=version)
            self._commit(state)

    def versions(self) -> list[VersionInfo]:
        """Every version on disk, live and archived, oldest first."""
        self._check_base_path()
        state = self._read_state()
        rows = []
        for version, path, archived in self._version_dirs():
            metadata = self._read_metadata(path)
            accuracy = (metadata.get("metrics") or {}).get("accuracy")
            rows.append(
                VersionInfo(
                    version=version,
                    stages=tuple(s for s in STAGES if state["labels"].get(s) == version),
                    archived=archived,
                    created=metadata.get("created"),
                    accuracy=accuracy if _is_number(accuracy) else None,
                    parity=metadata.get("parity"),
                    size_bytes=metadata.get("size_bytes")
                    or sum(p.stat().st_size for p in _files(path)),
                    workdir=metadata.get("workdir"),
                    path=path,
                )
            )
        return rows

    def labels(self) -> dict[str, int]:
        """Stage -> version, for the stages that are set."""
        self._check_base_path()
        return dict(self._read_state()["labels"])

    def history(self) -> list[dict[str, Any]]:
        """Every change, oldest first."""
        self._check_base_path()
        return list(self._read_state()["history"])

    def gc(self, max_age_seconds: float = STALE_INCOMING_SECONDS) -> list[Path]:
        """Delete incoming directories (and the exporter's assets folders beside them, named
        after them) untouched for `max_age_seconds`, left by exports that died before
        `register`; returns what was deleted."""
        self._check_base_path()
        with self._locked():
            return self._remove_stale_incoming(max_age_seconds)

    # -- state ------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        path = self.base_path / STATE_FILE
        state: dict[str, Any] = {
            "model_name": self.model_name,
            "last_version": 0,
            "labels": {},
            "previous": {},
            "archived": [],
            "history": [],
        }
        if path.exists():
            try:
                state.update(json.loads(path.read_text()))
            except json.JSONDecodeError as e:
                raise RegistryError(f"{path} is not valid JSON ({e}); restore it") from None
        return state

    def _write_state(self, state: Mapping[str, Any]) -> None:
        _write_atomically(self.base_path / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def _append_history(self, state: dict[str, Any], action: str, **fields: Any) -> None:
        event = {"time": _now(), "action": action, "user": getpass.getuser()}
        event.update({k: v for k, v in fields.items() if v is not None})
        state["history"].append(event)

    def _move_label(
        self,
        state: dict[str, Any],
        stage: str,
        version: int,
        action: str,
        *,
        push: bool = True,
        **fields: Any,
    ) -> None:
        """Point `stage` at `version` in `state`, record why, and write config and state."""
        previous = state["labels"].get(stage)
        stack = state["previous"].setdefault(stage, [])
        if push and previous is not None:
            stack.append(previous)
        elif not push:
            stack.pop()
        state["labels"][stage] = version
        self._append_history(
            state, action, stage=stage, version=version, previous=previous, **fields
        )
        self._commit(state)

    def _rollback_target(self, state: Mapping[str, Any], stage: str) -> int | None:
        stack = state["previous"].get(stage) or []
        return stack[-1] if stack else None

    # -- what TF Serving sees -------------------------------------------------------------

    def _served(self, state: Mapping[str, Any]) -> tuple[list[int], dict[str, int]]:
        labels = {s: state["labels"][s] for s in STAGES if s in state["labels"]}
        versions = set(labels.values())
        target = self._rollback_target(state, "production")
        if target is not None:
            versions.add(target)
        return sorted(versions), labels

    def _read_config(self) -> tuple[str | None, model_server_config_pb2.ModelServerConfig]:
        config = model_server_config_pb2.ModelServerConfig()
        if not self.config_file.exists():
            return None, config
        text = self.config_file.read_text()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as e:
            raise RegistryError(
                f"{self.config_file} is not a text-format ModelServerConfig ({e}); fix or "
                "delete it (the registry rewrites it from registry.json)"
            ) from None
        return text, config

    def _config_text(
        self,
        current: model_server_config_pb2.ModelServerConfig,
        versions: Sequence[int],
        labels: Mapping[str, int],
    ) -> str:
        """`current` with this model's entry replaced (other models are kept as they are)."""
        new = model_server_config_pb2.ModelServerConfig()
        # Kept unless given: a command run without --serving_base_path must not repoint a
        # container's server at a host path.
        existing = [c for c in current.model_config_list.config if c.name == self.model_name]
        base_path = self.serving_base_path or (
            existing[0].base_path if existing else str(self.base_path)
        )
        ours = model_config(self.model_name, base_path, versions, labels)
        placed = False
        for config in current.model_config_list.config:
            if config.name != self.model_name:
                new.model_config_list.config.append(config)
            elif not placed:
                new.model_config_list.config.append(ours)
                placed = True
        if not placed:
            new.model_config_list.config.append(ours)
        return (
            "# Written by geojax.registry from registry.json; change it with\n"
            "# `python -m geojax.registry`, not by hand.\n" + text_format.MessageToString(new)
        )

    def _commit(self, state: dict[str, Any]) -> None:
        """Write the config for `state` (in two phases when a label moves to a version the
        server has not loaded), then `state`. If the version never loads, the old config is
        restored, `state` is not written, and RegistryError says so."""
        old_text, current = self._read_config()
        loaded_versions: list[int] = []
        loaded_labels: dict[str, int] = {}
        for config in current.model_config_list.config:
            if config.name == self.model_name:
                loaded_versions = list(config.model_version_policy.specific.versions)
                loaded_labels = dict(config.version_labels)
        versions, labels = self._served(state)
        phases = config_phases(loaded_versions, loaded_labels, versions, labels)
        if len(phases) == 2:
            _write_atomically(self.config_file, self._config_text(current, *phases[0]))
            try:
                self._wait_until_available(sorted(set(versions) - set(loaded_versions)))
            except RegistryError:
                if old_text is None:
                    self.config_file.unlink()
                else:
                    _write_atomically(self.config_file, old_text)
                raise
        self._write_state(state)
        _write_atomically(self.config_file, self._config_text(current, *phases[-1]))

    def _running_server(self) -> str | None:
        """The server to wait at: the one given, or (AUTO_SERVER) the default one if anything
        listens there; None when there is none to ask."""
        if self.server != AUTO_SERVER:
            return self.server
        address = os.environ.get("GEOJAX_MODEL_SERVER") or DEFAULT_SERVER
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=2):
                return address
        except (OSError, ValueError):
            log.warning("no model server listens at %s: the config is written for its next "
                        "start (a server running elsewhere: pass --server HOST:PORT)", address)
            return None

    def _wait_until_available(self, versions: Sequence[int]) -> None:
        server = self._running_server()
        if server is None:
            time.sleep(self.poll_wait_seconds)
            return
        # Imported here: tensorflow_serving.apis imports all of TensorFlow.
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        status_pb2 = get_model_status_pb2.ModelVersionStatus
        deadline = time.monotonic() + self.load_timeout_seconds
        last: dict[int, str] = dict.fromkeys(versions, "not polled")
        with grpc.insecure_channel(server) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            pending = set(versions)
            while pending:
                for version in sorted(pending):
                    request = get_model_status_pb2.GetModelStatusRequest()
                    request.model_spec.name = self.model_name
                    request.model_spec.version.value = version
                    try:
                        response = stub.GetModelStatus(request, timeout=10)
                    except grpc.RpcError as e:
                        last[version] = f"{e.code().name}: {e.details()}"
                        continue
                    for status in response.model_version_status:
                        if status.version != version:
                            continue
                        last[version] = status_pb2.State.Name(status.state)
                        if status.state == status_pb2.AVAILABLE:
                            pending.discard(version)
                        elif status.status.error_code:
                            raise RegistryError(
                                f"the model server at {server} failed to load "
                                f"{self.model_name} version {version}: "
                                f"{status.status.error_message}; labels left where they were"
                            )
                if pending and time.monotonic() >= deadline:
                    states = ", ".join(f"{v}: {last[v]}" for v in sorted(pending))
                    raise RegistryError(
                        f"the model server at {server} did not make {self.model_name} "
                        f"version(s) AVAILABLE within {self.load_timeout_seconds:g} s ({states});"
                        " labels left where they were. Once it loads them, run the same command "
                        "again; or give the server more time (--load_timeout_seconds), name "
                        "another (--server HOST:PORT), or write the config without waiting "
                        "(--server none)"
                    )
                if pending:
                    time.sleep(0.2)

    # -- disk -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive over this base path and over the config file's directory (other models'
        registries may share the config file). Always in that order, so no deadlock."""
        self._check_base_path()
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            fd = os.open(self.base_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            config_dir = self.config_file.parent
            if not config_dir.samefile(self.base_path):
                dir_fd = os.open(config_dir, os.O_RDONLY)
                stack.callback(os.close, dir_fd)
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
            yield

    def _check_base_path(self) -> None:
        if not self.base_path.is_dir():
            raise RegistryError(
                f"base path {self.base_path} does not exist; check --base_path, or export a "
                "model first (the export creates it)"
            )

    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")

    def _check_live(self, version: int) -> None:
        if (self.base_path / str(version)).is_dir():
            return
        if (self.base_path / ARCHIVE_DIR / str(version)).is_dir():
            raise RegistryError(
                f"version {version} is archived ({ARCHIVE_DIR}/{version}); archived versions "
                "cannot be promoted or archived again"
            )
        known = ", ".join(str(v) for v, _, archived in self._version_dirs() if not archived)
        raise RegistryError(
            f"unknown version {version}; versions: {known or 'none yet'} (see `list`)"
        )

    def _version_dirs(self) -> list[tuple[int, Path, bool]]:
        return sorted((version, path, archived) for archived, parent in (
            (False, self.base_path), (True, self.base_path / ARCHIVE_DIR))
            for version, path in versions_on_disk(parent).items())

    def _versions_on_disk(self) -> list[int]:
        return [v for v, _, _ in self._version_dirs()]

    def _metadata(self, version: int) -> dict[str, Any]:
        return self._read_metadata(self.base_path / str(version))

    @staticmethod
    def _read_metadata(path: Path) -> dict[str, Any]:
        try:
            return json.loads((path / METADATA_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _remove_stale_incoming(
        self, max_age_seconds: float, keep: Path | None = None
    ) -> list[Path]:
        now = time.time()
        removed = []
        for path in sorted(self.base_path.glob(f"{INCOMING_PREFIX}*")):
            if path == keep or not path.is_dir():
                continue
            # The newest file counts: an export still writing keeps its directory fresh.
            newest = max((p.stat().st_mtime for p in _files(path)), default=path.stat().st_mtime)
            if now - max(newest, path.stat().st_mtime) >= max_age_seconds:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geojax.registry",
        description="Promote, roll back and archive model versions served by TF Serving.",
    )
    parser.add_argument("--base_path", default="export/geojax", help="model base path")
    parser.add_argument("--config_file", default="serving/models.config")
    parser.add_argument("--model_name", default="geojax")
    parser.add_argument("--serving_base_path", default=None, help="base path as TF Serving sees it")
    parser.add_argument(
        "--server", default=AUTO_SERVER,
        help="model server gRPC host:port to wait at until a version is AVAILABLE before a "
             "label moves to it; 'auto' (default): $GEOJAX_MODEL_SERVER or localhost:8500 if "
             "a server listens there; 'none': never wait (the config is for the next start)")
    parser.add_argument("--poll_wait_seconds", type=float, default=0.0)
    parser.add_argument("--load_timeout_seconds", type=float, default=300.0)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, stages, metrics")
    promote = commands.add_parser("promote", help="point a stage's label at a version")
    promote.add_argument("version", type=int)
    promote.add_argument("--to", required=True, help="|".join(STAGES))
    promote.add_argument("--force", action="store_true", help="override the metrics gate")
    promote.add_argument("--reason", default="", help="why (required with --force)")
    rollback = commands.add_parser("rollback", help="point a stage back at its previous version")
    rollback.add_argument("--stage", required=True, help="|".join(STAGES))
    remove = commands.add_parser("remove", help="point the canary label at no version "
                                 "(the trial is over)")
    remove.add_argument("--stage", required=True, help="|".join(REMOVABLE_STAGES))
    archive = commands.add_parser("archive", help="move an unlabelled version out of serving")
    archive.add_argument("version", type=int)
    gc = commands.add_parser("gc", help="delete incoming dirs left by exports that died")
    gc.add_argument("--max_age_seconds", type=float, default=STALE_INCOMING_SECONDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (2 and `error: ...` on stderr for a user error)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(message)s")
    registry = Registry(
        args.base_path,
        args.config_file,
        args.model_name,
        args.serving_base_path,
        server=None if args.server == "none" else args.server,
        poll_wait_seconds=args.poll_wait_seconds,
        load_timeout_seconds=args.load_timeout_seconds,
    )
    try:
        if args.command == "list":
            print(format_table(registry.versions()))
        elif args.command == "promote":
            registry.promote(args.version, args.to, force=args.force, reason=args.reason)
            print(f"{args.to} -> version {args.version}")
        elif args.command == "rollback":
            print(f"{args.stage} -> version {registry.rollback(args.stage)}")
        elif args.command == "remove":
            print(f"{args.stage} -> no version (was {registry.remove_label(args.stage)})")
        elif args.command == "archive":
            registry.archive(args.version)
            print(f"archived version {args.version}")
        elif args.command == "gc":
            for path in registry.gc(args.max_age_seconds):
                print(f"removed {path}")
    except (RegistryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
