"""Asking a running TF Serving whether it has loaded a version, before a label moves to it.

"Available" is known by polling `ModelService.GetModelStatus` (gRPC), with a bounded wait, at
the model server: `server="host:port"`, or (`AUTO_SERVER`) the one at $GEOJAX_MODEL_SERVER or
DEFAULT_SERVER when something listens there. When no server listens, or with `server=None`,
nothing is asked and the registry only waits `poll_wait_seconds`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

from geojax.release.errors import RegistryError

AUTO_SERVER = "auto"
"""`Registry(server=AUTO_SERVER)`: wait at $GEOJAX_MODEL_SERVER (the proxy's variable) or
DEFAULT_SERVER when something listens there; write without waiting when nothing does."""
DEFAULT_SERVER = "localhost:8500"

log = logging.getLogger(__name__)


def running_server(server: str | None) -> str | None:
    """The server to wait at: `server` as given, or (AUTO_SERVER) the default one if anything
    listens there; None when there is none to ask."""
    if server != AUTO_SERVER:
        return server
    address = os.environ.get("GEOJAX_MODEL_SERVER") or DEFAULT_SERVER
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=2):
            return address
    except (OSError, ValueError):
        log.warning("no model server listens at %s: the config is written for its next "
                    "start (a server running elsewhere: pass --server HOST:PORT)", address)
        return None


def wait_until_available(
    server: str | None,
    model_name: str,
    versions: Sequence[int],
    *,
    load_timeout_seconds: float,
    poll_wait_seconds: float,
) -> None:
    """Return once the server (`running_server(server)`) reports every one of `versions` of
    `model_name` AVAILABLE; RegistryError when one fails to load or the time runs out. With no
    server to ask, sleep `poll_wait_seconds` instead."""
    server = running_server(server)
    if server is None:
        time.sleep(poll_wait_seconds)
        return
    # Imported here: tensorflow_serving.apis imports all of TensorFlow.
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    status_pb2 = get_model_status_pb2.ModelVersionStatus
    deadline = time.monotonic() + load_timeout_seconds
    last: dict[int, str] = dict.fromkeys(versions, "not polled")
    with grpc.insecure_channel(server) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        pending = set(versions)
        while pending:
            for version in sorted(pending):
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = model_name
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
                            f"{model_name} version {version}: "
                            f"{status.status.error_message}; labels left where they were"
                        )
            if pending and time.monotonic() >= deadline:
                states = ", ".join(f"{v}: {last[v]}" for v in sorted(pending))
                raise RegistryError(
                    f"the model server at {server} did not make {model_name} "
                    f"version(s) AVAILABLE within {load_timeout_seconds:g} s ({states});"
                    " labels left where they were. Once it loads them, run the same command "
                    "again; or give the server more time (--load_timeout_seconds), name "
                    "another (--server HOST:PORT), or write the config without waiting "
                    "(--server none)"
                )
            if pending:
                time.sleep(0.2)
