"""The model server config file the registry owns: a text-format `ModelServerConfig`
(`tensorflow_serving/config/model_server_config.proto`) listing the versions to serve and the
stages as version labels, and the order in which to write it so TF Serving accepts each label.

A label may only be (re)assigned to a version that is already loaded and available
(`ServerCore::UpdateModelVersionLabelMap` in `model_servers/server_core.cc`), so a label that
must move to a version the current config does not list is moved in two writes (`config_phases`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from geojax.release.errors import RegistryError

HEADER = (
    "# Written by geojax.registry from registry.json; change it with\n"
    "# `python -m geojax.registry`, not by hand.\n"
)


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


def read_config(path: Path) -> tuple[str | None, model_server_config_pb2.ModelServerConfig]:
    """The config file's text (None when there is no file yet) and its parsed contents."""
    config = model_server_config_pb2.ModelServerConfig()
    if not path.exists():
        return None, config
    text = path.read_text()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise RegistryError(
            f"{path} is not a text-format ModelServerConfig ({e}); fix or "
            "delete it (the registry rewrites it from registry.json)"
        ) from None
    return text, config


def served(
    config: model_server_config_pb2.ModelServerConfig, model_name: str
) -> tuple[list[int], dict[str, int]]:
    """The versions and labels `config` serves of `model_name` (empty when it is not listed)."""
    versions: list[int] = []
    labels: dict[str, int] = {}
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            versions = list(entry.model_version_policy.specific.versions)
            labels = dict(entry.version_labels)
    return versions, labels


def config_text(
    current: model_server_config_pb2.ModelServerConfig,
    model_name: str,
    base_path: str | None,
    local_base_path: str,
    versions: Sequence[int],
    labels: Mapping[str, int],
) -> str:
    """`current` with `model_name`'s entry replaced (other models are kept as they are). Its
    base path is `base_path`; when that is None, what `current` says, else `local_base_path`."""
    new = model_server_config_pb2.ModelServerConfig()
    # Kept unless given: a command run without --serving_base_path must not repoint a
    # container's server at a host path.
    existing = [c for c in current.model_config_list.config if c.name == model_name]
    base_path = base_path or (existing[0].base_path if existing else local_base_path)
    ours = model_config(model_name, base_path, versions, labels)
    placed = False
    for config in current.model_config_list.config:
        if config.name != model_name:
            new.model_config_list.config.append(config)
        elif not placed:
            new.model_config_list.config.append(ours)
            placed = True
    if not placed:
        new.model_config_list.config.append(ours)
    return HEADER + text_format.MessageToString(new)
