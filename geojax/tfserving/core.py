"""Which versions of which models are loaded, and which labels point where: ServerCore
(model_servers/server_core.cc) with its AspiredVersionsManager -- a config's models and version
policies, a thread that polls the base paths and loads and unloads in the
AvailabilityPreservingPolicy's order, the state of every version seen, and lookup of a
ModelSpec."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geojax.core.artefact import versions_on_disk
from geojax.tfserving.metrics import ServingMetrics
from geojax.tfserving.servable import MAX_TENSOR_BYTES, Servable, load_servable, run_warmup
from geojax.tfserving.status import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    UNKNOWN,
    ServingError,
)

log = logging.getLogger(__name__)

# ModelVersionStatus.State (apis/get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


def aspired_versions(model_config: Any, on_disk: Iterable[int]) -> set[int]:
    """The versions a ModelConfig's model_version_policy asks for (default: the latest one)."""
    policy = model_config.model_version_policy
    on_disk = set(on_disk)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return on_disk
    if choice == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - on_disk
        if missing:
            log.warning("Version(s) %s of servable %s not found under base path %s",
                        sorted(missing), model_config.name, model_config.base_path)
        return wanted & on_disk
    keep = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(sorted(on_disk)[-keep:])


@dataclass
class VersionRecord:
    """One version's entry in the servable state monitor."""

    state: int
    error_code: int = OK
    error_message: str = ""
    servable: Servable | None = None


@dataclass
class ServerOptions:
    """The ServerCore options this server implements."""

    allow_version_labels_for_unavailable_models: bool = False
    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    max_tensor_bytes: int = MAX_TENSOR_BYTES


@dataclass
class _Model:
    config: Any
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)


class ServerCore:
    """Which versions are loaded, which labels point where, and lookup of a ModelSpec; the
    server's metrics live here, where the loads happen."""

    def __init__(self, options: ServerOptions, metrics: ServingMetrics | None = None):
        self.options = options
        self.metrics = metrics if metrics is not None else ServingMetrics()
        self._state = threading.Condition()
        self._reload = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._retired: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._configured = False
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._manager = threading.Thread(target=self._manage, name="version-manager",
                                         daemon=True)
        self._manager.start()

    # -- config -------------------------------------------------------------------------------

    def reload_config(self, config: Any) -> None:
        """ServerCore::ReloadConfig: validate, relabel, then add/update/remove models."""
        with self._reload:
            choice = config.WhichOneof("config")
            if choice is None:
                log.info("Taking no action for empty config.")
                return
            if choice != "model_config_list":
                raise ServingError(FAILED_PRECONDITION, "Cannot transition to requested config. "
                                   "It is only legal to transition from one ModelConfigList to "
                                   "another.")
            names = set()
            for model in config.model_config_list.config:
                if model.name in names:
                    raise ServingError(INVALID_ARGUMENT, f"Illegal to list model {model.name} "
                                       "multiple times in config list")
                names.add(model.name)
                if not model.model_platform:
                    raise ServingError(INVALID_ARGUMENT, "Illegal setting neither "
                                       "ModelServerConfig::model_type (deprecated) nor "
                                       "ModelServerConfig::model_platform.")
                if model.model_platform != "tensorflow":
                    raise ServingError(INVALID_ARGUMENT, f"Model {model.name} requests "
                                       f"unsupported platform {model.model_platform}")
            labels = self._checked_labels(config)
            with self._state:
                new_models = names - set(self._models)
                for name in set(self._models) - names:
                    log.info("Removing model %s: no longer in the config", name)
                    self._models[name].config = None
                for model in config.model_config_list.config:
                    log.info("(Re-)adding model: %s", model.name)
                    if model.name in self._models:
                        self._models[model.name].config = model
                    else:
                        self._models[model.name] = _Model(model, self._retired.pop(model.name,
                                                                                    {}))
                self._labels = labels
                self._configured = True
            self._wake.set()
            self._await_models(new_models)

    def _checked_labels(self, config: Any) -> dict[str, dict[str, int]]:
        """UpdateModelVersionLabelMap: labels may only name AVAILABLE versions (see flag)."""
        labels: dict[str, dict[str, int]] = {}
        with self._state:
            for model in config.model_config_list.config:
                records = self._models[model.name].versions if model.name in self._models else {}
                for label, version in model.version_labels.items():
                    allowed = False
                    if self.options.allow_version_labels_for_unavailable_models:
                        existing = (self._labels or {}).get(model.name, {}).get(label)
                        allowed = existing is None or existing == version
                    record = records.get(version)
                    if not allowed and (record is None or record.state != AVAILABLE):
                        raise ServingError(
                            FAILED_PRECONDITION, f"Request to assign label to version "
                            f"{version} of model {model.name}, which is not currently "
                            "available for inference")
                    labels.setdefault(model.name, {})[label] = version
        return labels

    def _await_models(self, names: set[str]) -> None:
        """WaitUntilModelsAvailable: each new model has a version AVAILABLE, or failed."""
        def settled() -> bool:
            return all(self._latest(n) is not None or self._model_failed(n) for n in names)

        with self._state:
            self._state.wait_for(lambda: settled() or self._stopped.is_set())
            failed = sorted(n for n in names if self._latest(n) is None)
            if failed:
                details = ", ".join(
                    f"{{name: {n} version: {v} due to error: {r.error_message}}}"
                    for n in failed for v, r in self._models[n].versions.items()
                    if r.error_code != OK)
                raise ServingError(UNKNOWN, f"{len(failed)} model(s) did not become available:"
                                   f" {{{details}}}")

    def _model_failed(self, name: str) -> bool:
        model = self._models[name]
        on_disk = versions_on_disk(Path(model.config.base_path)) if model.config else {}
        aspired = aspired_versions(model.config, on_disk) if model.config else set()
        return bool(aspired) and aspired <= model.failed

    # -- the manager: polls base paths, loads and unloads ------------------------------------

    def _manage(self) -> None:
        period = self.options.file_system_poll_wait_seconds
        while not self._stopped.is_set():
            self._wake.clear()  # before the work: a reload during it wakes the next round
            if self._configured:
                try:
                    self._reconcile()
                except Exception:  # a bug here must not silently stop all future loads
                    log.exception("Version manager failed; retrying at the next poll")
            self._wake.wait(period if period > 0 else None)

    def _reconcile(self) -> None:
        while not self._stopped.is_set():
            with self._state:
                action = self._next_action()
            if action is None:
                return
            kind, name, version, path = action
            if kind == "load" and path is not None:
                self._load(name, version, path)
            else:
                self._unload(name, version)

    def _next_action(self) -> tuple[str, str, int, Path | None] | None:
        """AvailabilityPreservingPolicy: unload once an aspired version serves, else load the
        newest aspired version that is not loaded."""
        for name, model in list(self._models.items()):
            on_disk = versions_on_disk(Path(model.config.base_path)) if model.config else {}
            if model.config is not None and not on_disk:
                log.warning("No versions of servable %s found under base path %s. Did you "
                            "forget to name your leaf directory as a number (eg. '/1/')?",
                            name, model.config.base_path)
            aspired = aspired_versions(model.config, on_disk) if model.config else set()
            model.failed &= aspired
            ready = {v for v, r in model.versions.items() if r.state == AVAILABLE}
            unaspired = ready - aspired
            if unaspired and (not aspired or ready & aspired or len(unaspired) > 1):
                return "unload", name, min(unaspired), None
            pending = sorted(aspired - ready - model.failed)
            if pending:
                return "load", name, pending[-1], on_disk[pending[-1]]
            if model.config is None and not model.versions.keys() - self._ended(model):
                self._retired[name] = self._models.pop(name).versions
        return None

    @staticmethod
    def _ended(model: _Model) -> set[int]:
        return {v for v, r in model.versions.items() if r.state == END}

    def _set(self, name: str, version: int, record: VersionRecord) -> None:
        with self._state:
            self._models[name].versions[version] = record
            self._state.notify_all()

    def _load(self, name: str, version: int, path: Path) -> None:
        log.info("Approving load for servable version {name: %s version: %d}", name, version)
        self._set(name, version, VersionRecord(START))
        self._set(name, version, VersionRecord(LOADING))
        try:
            servable = load_servable(name, version, path, self.metrics)
            if self.options.enable_model_warmup:
                run_warmup(servable, self.options.num_request_iterations_for_warmup)
        except Exception as err:
            code = err.code if isinstance(err, ServingError) else UNKNOWN
            message = err.message if isinstance(err, ServingError) else f"{type(err).__name__}: {err}"
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version,
                      message)
            with self._state:
                self._models[name].failed.add(version)
            self._set(name, version, VersionRecord(END, code, message))
            return
        self._set(name, version, VersionRecord(AVAILABLE, servable=servable))
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _unload(self, name: str, version: int) -> None:
        log.info("Quiescing servable version {name: %s version: %d}", name, version)
        self._set(name, version, VersionRecord(UNLOADING))
        self._set(name, version, VersionRecord(END))
        log.info("Done unloading servable version {name: %s version: %d}", name, version)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        with self._state:
            self._state.notify_all()

    # -- lookups ------------------------------------------------------------------------------

    def _latest(self, name: str) -> Servable | None:
        model = self._models.get(name)
        if model is None:
            return None
        ready = [v for v, r in model.versions.items() if r.state == AVAILABLE]
        return model.versions[max(ready)].servable if ready else None

    def servable(self, model_spec: Any) -> Servable:
        """ServerCore::GetServableHandle for a ModelSpec (name + version | version_label)."""
        name = model_spec.name
        if not name:
            raise ServingError(INVALID_ARGUMENT, "ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        with self._state:
            if choice is None:
                found = self._latest(name)
                if found is None:
                    raise ServingError(NOT_FOUND, f"Servable not found for request: "
                                       f"Latest({name})")
                return found
            if choice == "version_label":
                label = model_spec.version_label
                if self._labels is None:
                    raise ServingError(UNAVAILABLE, f"Model labels does not init yet.{label}")
                version = self._labels.get(name, {}).get(label)
                if version is None:
                    raise ServingError(INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
            else:
                version = model_spec.version.value
            model = self._models.get(name)
            record = model.versions.get(version) if model else None
            if record is None or record.state != AVAILABLE or record.servable is None:
                raise ServingError(NOT_FOUND, f"Servable not found for request: "
                                   f"Specific({name}, {version})")
            return record.servable

    def version_states(self, name: str, version: int | None) -> list[tuple[int, VersionRecord]]:
        """GetModelStatusImpl: one version, or all versions newest first (labels ignored)."""
        with self._state:
            model = self._models.get(name)
            records = dict(model.versions) if model else dict(self._retired.get(name, {}))
        if version is not None:
            if version not in records:
                raise ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")
            return [(version, records[version])]
        if not records:
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
        return sorted(records.items(), reverse=True)
