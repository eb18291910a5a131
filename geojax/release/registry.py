"""The model registry: numbered SavedModel versions under a TF Serving model base path, and the
stages development -> staging -> production as TF Serving version labels in `models.config`.

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

import contextlib
import getpass
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from geojax.core.artefact import versions_on_disk
from geojax.release.errors import RegistryError
from geojax.release.registry_files import (
    exclusive,
    files,
    fsync_dir,
    now,
    remove_stale,
    sync_and_hash,
    write_atomically,
)
from geojax.release.server_watch import AUTO_SERVER, wait_until_available
from geojax.release.serving_config import config_phases, config_text, read_config, served
from geojax.release.stages import (
    REMOVABLE_STAGES,
    STAGES,
    VersionInfo,
    is_number,
    metric_regressions,
)

INCOMING_PREFIX = ".incoming-"
ARCHIVE_DIR = "archive"
STATE_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
METADATA_FILE = "metadata.json"
STALE_INCOMING_SECONDS = 3600.0


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
            remove_stale(self.base_path, f"{INCOMING_PREFIX}*", STALE_INCOMING_SECONDS,
                         keep=incoming)
            version = max([state["last_version"], *self._versions_on_disk()], default=0) + 1
            contents = sorted(p for p in files(incoming) if p != incoming / METADATA_FILE)
            record = {
                **metadata,
                "model_name": self.model_name,
                "version": version,
                "created": now(),
                "size_bytes": sum(p.stat().st_size for p in contents),
                "sha256": {p.relative_to(incoming).as_posix(): sync_and_hash(p)
                           for p in contents},
            }
            for directory in {p.parent for p in contents}:
                fsync_dir(directory)
            try:
                text = json.dumps(record, indent=2, sort_keys=True) + "\n"
            except TypeError as e:
                raise RegistryError(f"metadata must be JSON-serialisable: {e}") from None
            write_atomically(incoming / METADATA_FILE, text)
            try:
                os.rename(incoming, self.base_path / str(version))
            except OSError as e:
                raise RegistryError(
                    f"cannot move {incoming} to {self.base_path / str(version)} ({e}); the "
                    "incoming directory must be inside the base path (use incoming_dir())"
                ) from None
            fsync_dir(self.base_path)
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
                    accuracy=accuracy if is_number(accuracy) else None,
                    parity=metadata.get("parity"),
                    size_bytes=metadata.get("size_bytes")
                    or sum(p.stat().st_size for p in files(path)),
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
            return remove_stale(self.base_path, f"{INCOMING_PREFIX}*", max_age_seconds)

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
        write_atomically(self.base_path / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def _append_history(self, state: dict[str, Any], action: str, **fields: Any) -> None:
        event = {"time": now(), "action": action, "user": getpass.getuser()}
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

    def _commit(self, state: dict[str, Any]) -> None:
        """Write the config for `state` (in two phases when a label moves to a version the
        server has not loaded), then `state`. If the version never loads, the old config is
        restored, `state` is not written, and RegistryError says so."""
        old_text, current = read_config(self.config_file)
        loaded_versions, loaded_labels = served(current, self.model_name)
        versions, labels = self._served(state)
        phases = config_phases(loaded_versions, loaded_labels, versions, labels)

        def text(phase: tuple[list[int], dict[str, int]]) -> str:
            return config_text(current, self.model_name, self.serving_base_path,
                               str(self.base_path), *phase)

        if len(phases) == 2:
            write_atomically(self.config_file, text(phases[0]))
            try:
                wait_until_available(
                    self.server, self.model_name,
                    sorted(set(versions) - set(loaded_versions)),
                    load_timeout_seconds=self.load_timeout_seconds,
                    poll_wait_seconds=self.poll_wait_seconds)
            except RegistryError:
                if old_text is None:
                    self.config_file.unlink()
                else:
                    write_atomically(self.config_file, old_text)
                raise
        self._write_state(state)
        write_atomically(self.config_file, text(phases[-1]))

    # -- disk -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive over this base path and over the config file's directory (other models'
        registries may share the config file). Always in that order, so no deadlock."""
        self._check_base_path()
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.base_path / LOCK_FILE, self.config_file.parent):
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
