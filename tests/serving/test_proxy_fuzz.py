"""The proxy's OpenAPI schema, fuzzed with Schemathesis: no generated request gets a 5xx.

The app (`geojax.serving.app.create_app`) runs in-process over ASGI, loaded by
`schemathesis.openapi.from_asgi`, in front of a real model server process serving the tiny
model, so requests that get as far as a model call make one. Every operation is fuzzed with
positive and negative (schema-violating) data; the upload endpoints once more with a real image
as the body, so the generated query parameters reach detection. At most 25 examples per
operation and run: a few seconds after the model server is up.
"""

import shutil
import subprocess

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from geojax.core.images import encode_png
from geojax.data import compose_scene
from geojax.release.registry import Registry

from conftest import free_port
from test_proxy import start_model_server, wait_until

EXAMPLES_PER_OPERATION = 25

# A fixed image body makes Hypothesis warn that the repr of the strategy is large.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


@pytest.fixture(scope="module")
def proxy_schema(tiny_saved_model, tmp_path_factory):
    from geojax.serving.app import create_app
    from geojax.serving.settings import ProxySettings

    root = tmp_path_factory.mktemp("fuzz")
    base, config_file = root / "models" / "geojax", root / "models.config"
    registry = Registry(base, config_file=config_file)
    incoming = registry.incoming_dir()
    shutil.rmtree(incoming)
    shutil.copytree(tiny_saved_model, incoming)
    version = registry.register(incoming, {"metrics": {"accuracy": 0.5}})
    registry.promote(version, "staging")
    registry.promote(version, "production")
    grpc_port, rest_port = free_port(), free_port()
    server = start_model_server(config_file, grpc_port, rest_port, subprocess.DEVNULL)
    try:
        status = f"http://127.0.0.1:{rest_port}/v1/models/geojax/labels/production"
        wait_until(lambda: httpx.get(status).status_code == 200, "the model server")
        app = create_app(ProxySettings(model_server=f"127.0.0.1:{grpc_port}",
                                       model_base_path=str(base), max_upload_bytes=200_000,
                                       max_pixels=1_000_000, timeout_s=5))
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        server.terminate()
        server.wait(timeout=20)


def valid_uploads():
    """Real image uploads (multipart, with file names) for the upload endpoints, so generated
    query parameters reach detection and the model call (generated bodies are never decodable
    images and stop at a 4xx)."""
    part = ("scene.png", encode_png(compose_scene(np.random.default_rng(5), 160, 120).image),
            "image/png")
    return {"/detect": [("file", part)], "/predict": [("file", part)],
            "/predict/batch": [("files", part), ("files", part)],
            "/detect/batch": [("files", part), ("files", part)]}


def fuzz(strategy, files=None):
    """A Hypothesis run of the operation's generated cases: none may get a 5xx. With `files`,
    each case is sent with those multipart files as its body."""
    extra = {} if files is None else {"files": files}

    @given(case=strategy)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case):
        case.call_and_validate(checks=[not_a_server_error], **extra)

    no_server_error()


@pytest.mark.parametrize("bodies", ["generated", "valid image"])
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(proxy_schema, mode, bodies):
    # (Schemathesis' own pytest fixture loader, from_fixture, does not run on pytest 9: it sets
    # a node attribute pytest no longer has. Each operation gets a Hypothesis run here instead.)
    operations = [result.ok() for result in proxy_schema.get_all_operations()]
    uploads = valid_uploads()
    assert set(uploads) <= {op.path for op in operations}
    if bodies == "valid image":
        operations = [op for op in operations if op.path in uploads]
    fuzzed = []
    for operation in operations:
        files = None if bodies == "generated" else uploads[operation.path]
        strategy = (operation.as_strategy(generation_mode=mode) if files is None else
                    operation.as_strategy(generation_mode=mode, body={},
                                          media_type="multipart/form-data"))
        try:
            fuzz(strategy, files)
        except Unsatisfiable:  # negative mode: nothing invalid to send (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed.append(operation.path)
    # With the body fixed, negative mode can only break the detection endpoints' query
    # parameters.
    required = ({"/detect", "/detect/batch"} if bodies != "generated"
                and mode is GenerationMode.NEGATIVE else set(uploads))
    assert required <= set(fuzzed), fuzzed
