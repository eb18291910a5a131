"""Faults a user meets between the registry and a running model server, as real processes.

The README's export + promote, run exactly as written while a model server polls its config,
must change what is served under the label: a promote that returns success has been seen through
by the server (issue: the two config writes used to land back to back, and the server kept
serving the old version under the label without telling anyone).
"""

import os
import subprocess
import sys
import time

import httpx
import pytest

from geojax.release.errors import RegistryError
from geojax.release.registry import Registry

from conftest import free_port

POLL_S = 1


def run(*args, env):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def label_version(rest, label):
    """The version the server answers for `label` (its metadata call resolves labels), or
    None while it cannot."""
    try:
        response = httpx.get(f"{rest}/v1/models/geojax/labels/{label}/metadata", timeout=5)
    except httpx.TransportError:  # not listening yet
        return None
    if response.status_code != 200:
        return None
    return int(response.json()["model_spec"]["version"])


@pytest.fixture(scope="module")
def polling_server(tiny_saved_model, tmp_path_factory):
    """Version 1 in production, served by a model server that re-reads its config every
    POLL_S seconds; yields (base path, config file, gRPC address, REST URL). The tests below
    run in order on it: each adds the next version."""
    import shutil

    tmp_path = tmp_path_factory.mktemp("faults")
    base, config_file = tmp_path / "models" / "geojax", tmp_path / "models.config"
    registry = Registry(base, config_file=config_file, server=None)
    incoming = registry.incoming_dir()
    shutil.copytree(tiny_saved_model, incoming, dirs_exist_ok=True)
    version = registry.register(incoming, {"metrics": {"accuracy": 0.1, "macro_f1": 0.1}})
    registry.promote(version, "staging")
    registry.promote(version, "production")
    grpc_port, rest_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "geojax.model_server", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_config_file={config_file}",
         f"--model_config_file_poll_wait_seconds={POLL_S}", "--host=127.0.0.1",
         "--allow_version_labels_for_unavailable_models=true"],
        stdout=log, stderr=subprocess.STDOUT)
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        deadline = time.monotonic() + 180
        while label_version(rest, "staging") != 1:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the model server never served version 1"
            time.sleep(0.5)
        yield base, config_file, f"127.0.0.1:{grpc_port}", rest
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_readme_export_then_promote_changes_what_is_served(polling_server, tiny_workdir):
    base, config_file, grpc, rest = polling_server
    # The proxy's variable names the model server; nothing else is passed (no --server).
    env = {"GEOJAX_MODEL_SERVER": grpc}
    paths = (f"--base_path={base}", f"--config_file={config_file}")
    exported = run("geojax.export", f"--workdir={tiny_workdir}", *paths, env=env)
    assert "version 2" in exported.stdout + exported.stderr
    # The export's own label move waited for the server: development is served from version 2.
    assert label_version(rest, "development") == 2
    run("geojax.registry", *paths, "promote", "2", "--to", "staging", env=env)
    deadline = time.monotonic() + 2 * POLL_S + 1  # the server's next read of the config
    while label_version(rest, "staging") != 2:
        assert time.monotonic() < deadline, "staging still serves version 1 after the promote"
        time.sleep(0.2)
    assert label_version(rest, "production") == 1
    listing = run("geojax.registry", *paths, "list", env=env).stdout
    assert "staging" in listing


def test_promote_fails_saying_how_to_finish_when_the_server_does_not_load(polling_server):
    """A server that is up but never loads the version: the label is not moved, the config is
    put back, and the message says what to do."""
    base, config_file, grpc, rest = polling_server
    registry = Registry(base, config_file=config_file, server=grpc, load_timeout_seconds=20)
    incoming = registry.incoming_dir()
    (incoming / "saved_model.pb").write_bytes(b"not a SavedModel")  # fails to load
    config_before, staging = config_file.read_text(), label_version(rest, "staging")
    with pytest.raises(RegistryError, match="registered but not labelled"):
        registry.register(incoming, {"metrics": {"accuracy": 0.1, "macro_f1": 0.1}})
    assert config_file.read_text() == config_before
    version = max(row.version for row in registry.versions())
    result = subprocess.run(
        [sys.executable, "-m", "geojax.registry", f"--base_path={base}",
         f"--config_file={config_file}", "--load_timeout_seconds=20", "promote", str(version),
         "--to", "staging"], capture_output=True, text=True, env={
             **os.environ, "GEOJAX_MODEL_SERVER": grpc}, timeout=120)
    assert result.returncode == 2
    assert f"failed to load geojax version {version}" in result.stderr
    assert "labels left where they were" in result.stderr
    assert config_file.read_text() == config_before
    assert label_version(rest, "staging") == staging
