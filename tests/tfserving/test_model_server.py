"""The local TF Serving stand-in, run as a real subprocess: gRPC and REST answer as TF Serving does,
and its --monitoring_config_file endpoint serves TF Serving's metrics in Prometheus text.

The tiny model is exported once per test run (conftest's `tiny_saved_model`); under
`pytest -n 2 --dist loadfile` the module stays on one worker and starts one server.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from geojax.core.images import encode_png

from conftest import TINY_SIZE, free_port, tiny_samples

SIZE = TINY_SIZE
MODEL = "geojax"
READY_TIMEOUT = 180.0
METRICS_PATH = "/monitoring/geojax/metrics"


def model_config(base, versions, labels):
    versions_text = " ".join(f"versions: {v}" for v in versions)
    labels_text = "\n".join(f'    version_labels {{ key: "{k}" value: {v} }}'
                            for k, v in labels.items())
    return f"""model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ {versions_text} }} }}
{labels_text}
  }}
}}
"""


def write_config(path, text):
    """Replace the config file atomically, as a registry must (the server may read it anytime)."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def exported(tiny_saved_model, tmp_path_factory):
    """The shared tiny model as versions 1 and 2 (the same weights) of one base path, and the
    samples its warm-up file was made from."""
    base = tmp_path_factory.mktemp("model_server") / MODEL
    shutil.copytree(tiny_saved_model, base / "1")
    shutil.copytree(tiny_saved_model, base / "2")
    return base, tiny_samples(3)


@pytest.fixture(scope="module")
def reference(exported, launched):
    """The SavedModel run directly with TensorFlow: what the server must answer."""
    import tensorflow as tf

    base, samples = exported
    loaded = tf.saved_model.load(str(base / "1"))
    pngs = [encode_png(s) for s in samples]
    pixels = np.stack(samples).astype(np.float32) / 255
    encoded = loaded.signatures["serving_default"](images=tf.constant(pngs))
    raw = loaded.signatures["predict_pixels"](images=tf.constant(pixels))
    return {"pngs": pngs, "pixels": pixels,
            "encoded": {k: v.numpy() for k, v in encoded.items()},
            "pixels_out": {k: v.numpy() for k, v in raw.items()}}


@pytest.fixture(scope="module")
def launched(exported, tmp_path_factory):
    """The server process, started; `server` waits for it (the reference is computed meanwhile)."""
    base, _ = exported
    workdir = tmp_path_factory.mktemp("server")
    config_file = workdir / "models.config"
    config_file.write_text(model_config(base, [1], {"production": 1}))
    monitoring_file = workdir / "monitoring.config"
    monitoring_file.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    grpc_port, rest_port = free_port(), free_port()
    log_file = workdir / "server.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "geojax.model_server", "--port", str(grpc_port),
             "--rest_api_port", str(rest_port), "--model_config_file", str(config_file),
             "--model_config_file_poll_wait_seconds", "1", "--host", "127.0.0.1",
             "--allow_version_labels_for_unavailable_models=true",
             "--monitoring_config_file", str(monitoring_file),
             "--xla_cpu_compilation_enabled=true",
             f"--max_request_bytes={MAX_REQUEST}", f"--max_tensor_bytes={MAX_TENSOR}",
             "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"rest": f"http://127.0.0.1:{rest_port}", "grpc": f"127.0.0.1:{grpc_port}",
               "config": config_file, "base": base, "log": log_file, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def server(launched, reference):
    def ready():
        assert launched["process"].poll() is None, (
            f"server exited:\n{launched['log'].read_text()[-3000:]}")
        try:
            response = httpx.get(f"{launched['rest']}/v1/models/{MODEL}", timeout=2)
            return response.status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "the model server to serve", READY_TIMEOUT)
    return launched


@pytest.fixture(scope="module")
def stubs(server):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server["grpc"])
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def predict_request(inputs, signature="", version=None, label=None, name=MODEL):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs_of(response):
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_error(call, request):
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value.code().name, info.value.details()


def test_json_of_tensors_is_shaped_and_printed_as_tf_serving():
    from geojax.tfserving.json_tensor import format_decimal, json_to_array, predict_json
    from geojax.tfserving.status import ServingError

    one = {"y": np.array([[2.5], [3.0]], np.float32)}
    assert json.loads(predict_json(one, "row")) == {"predictions": [[2.5], [3.0]]}
    assert json.loads(predict_json(one, "columnar")) == {"outputs": [[2.5], [3.0]]}
    many = {"label": np.array([b"circle", b"star"], object),
            "png_bytes": np.array([b"\x89P", b"\x00"], object), "k": np.array([1, 2])}
    assert json.loads(predict_json(many, "row"))["predictions"][0] == {
        "label": "circle", "png_bytes": {"b64": "iVA="}, "k": 1}
    assert json.loads(predict_json(many, "columnar"))["outputs"]["label"] == ["circle", "star"]
    assert [format_decimal(float(np.float32(v)), True) for v in (0.1, 3, 0.669074059, 1e-5)] == [
        "0.1", "3.0", "0.669074059", "1e-05"]
    assert format_decimal(float("nan"), True) == "NaN"
    with pytest.raises(ServingError, match="Encountered list at unexpected size: 1 at level: 1 "
                                           "expected size: 2"):
        json_to_array([[1.0, 2.0], [3.0]], "float")
    assert json_to_array([[1, 2]], "float").dtype == np.float32


def test_grpc_predict_both_signatures_equal_the_saved_model(stubs, reference):
    prediction, _ = stubs
    response = prediction.Predict(predict_request({"images": reference["pngs"]}))
    got = outputs_of(response)
    want = reference["encoded"]
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(got) == {"probabilities", "classes", "class_names", "logits",
        "shape_found"}
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    assert list(got["class_names"]) == list(want["class_names"])
    assert response.outputs["probabilities"].float_val  # typed fields, as TF Serving answers

    response = prediction.Predict(predict_request(
        {"images": reference["pixels"]}, signature="predict_pixels", label="production"))
    got = outputs_of(response)
    np.testing.assert_allclose(got["probabilities"], reference["pixels_out"]["probabilities"],
                               atol=1e-6)
    assert response.model_spec.version.value == 1

    request = predict_request({"images": reference["pixels"]}, signature="predict_pixels")
    request.output_filter.append("classes")
    assert set(prediction.Predict(request).outputs) == {"classes"}


def test_grpc_metadata_and_status(stubs):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    prediction, model_service = stubs
    response = prediction.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": MODEL}, metadata_field=["signature_def"]))
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    for name in ("serving_default", "predict_pixels"):
        signature = signatures.signature_def[name]
        assert list(signature.inputs) == ["images"]
        assert set(signature.outputs) == {"probabilities", "classes", "class_names", "logits",
        "shape_found"}
        assert signature.method_name == "tensorflow/serving/predict"
    assert [d.size for d in signatures.signature_def["predict_pixels"].inputs[
        "images"].tensor_shape.dim] == [-1, SIZE, SIZE, 3]

    status = model_service.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}))
    (version,) = status.model_version_status
    assert (version.version, version.state, version.status.error_code) == (
        1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)


def test_grpc_errors_use_tf_serving_codes_and_messages(stubs, reference):
    from tensorflow_serving.apis import classification_pb2, get_model_status_pb2

    prediction, model_service = stubs
    images = {"images": reference["pngs"][:1]}
    assert grpc_error(prediction.Predict, predict_request(images, version=7)) == (
        "NOT_FOUND", "Servable not found for request: Specific(geojax, 7)")
    assert grpc_error(prediction.Predict, predict_request(images, name="nope")) == (
        "NOT_FOUND", "Servable not found for request: Latest(nope)")
    assert grpc_error(prediction.Predict, predict_request(images, label="nope")) == (
        "INVALID_ARGUMENT", "Unrecognized servable version label: nope")
    assert grpc_error(prediction.Predict, predict_request(
        images, signature="predict_pixels")) == (
        "INVALID_ARGUMENT", "Expects arg[0] to be float but string is provided")
    assert grpc_error(prediction.Predict, predict_request(images, signature="nope")) == (
        "FAILED_PRECONDITION", 'Serving signature key "nope" not found.')
    assert grpc_error(prediction.Predict, predict_request({"pixels": [1.0]})) == (
        "INVALID_ARGUMENT", "input tensor alias not found in signature: pixels. Inputs expected "
        "to be in the set {images}.")
    assert grpc_error(model_service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": MODEL, "version": {"value": 7}})) == (
        "NOT_FOUND", "Could not find version 7 of model geojax")
    assert grpc_error(prediction.Classify, classification_pb2.ClassificationRequest(
        model_spec={"name": MODEL}))[0] == "UNIMPLEMENTED"


def test_grpc_reload_config_refuses_what_tf_serving_refuses(stubs, server):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    _, model_service = stubs

    def reload(text):
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        return grpc_error(model_service.HandleReloadConfigRequest,
                          model_management_pb2.ReloadConfigRequest(config=config))

    moved = model_config(server["base"], [1, 2], {"production": 2})
    assert reload(moved) == ("FAILED_PRECONDITION", "Request to assign label to version 2 of "
                             "model geojax, which is not currently available for inference")
    other_platform = model_config(server["base"], [1], {}).replace('"tensorflow"', '"onnx"')
    assert reload(other_platform) == ("INVALID_ARGUMENT",
                                      "Model geojax requests unsupported platform onnx")
    assert httpx.get(f"{server['rest']}/v1/models/{MODEL}").json()["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]


def test_rest_status_and_metadata(server):
    rest = server["rest"]
    available = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    for path in ("", "/versions/1", "/labels/production"):
        response = httpx.get(f"{rest}/v1/models/{MODEL}{path}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == available

    metadata = httpx.get(f"{rest}/v1/models/{MODEL}/metadata").json()
    assert metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    pixels = signatures["predict_pixels"]
    assert pixels["method_name"] == "tensorflow/serving/predict"
    assert pixels["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["inputs"]["images"]["tensor_shape"]["dim"]] == [
        "-1", str(SIZE), str(SIZE), "3"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == {
        "probabilities", "classes", "class_names", "logits",
        "shape_found"}
    assert httpx.get(f"{rest}/v1/models/{MODEL}/versions/1/metadata").status_code == 200


def test_rest_predict_rows_columns_and_b64(server, reference):
    rest, want = server["rest"], reference["encoded"]
    b64 = [{"b64": base64.b64encode(png).decode()} for png in reference["pngs"]]

    rows = httpx.post(f"{rest}/v1/models/{MODEL}:predict", json={"instances": b64})
    assert rows.status_code == 200
    predictions = rows.json()["predictions"]
    assert len(predictions) == len(b64)
    assert set(predictions[0]) == {"probabilities", "classes", "class_names", "logits",
        "shape_found"}
    np.testing.assert_allclose([p["probabilities"] for p in predictions], want["probabilities"],
                               atol=1e-6)
    assert [p["class_names"] for p in predictions] == [n.decode() for n in want["class_names"]]
    assert [p["classes"] for p in predictions] == want["classes"].tolist()

    columns = httpx.post(f"{rest}/v1/models/{MODEL}/labels/production:predict",
                         json={"inputs": {"images": b64}}).json()["outputs"]
    np.testing.assert_allclose(columns["probabilities"], want["probabilities"], atol=1e-6)
    assert columns["class_names"] == [n.decode() for n in want["class_names"]]

    pixels = httpx.post(f"{rest}/v1/models/{MODEL}/versions/1:predict", json={
        "signature_name": "predict_pixels", "inputs": reference["pixels"].tolist()})
    np.testing.assert_allclose(pixels.json()["outputs"]["probabilities"],
                               reference["pixels_out"]["probabilities"], atol=1e-6)


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("/v1/models/geojax/versions/7:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(geojax, 7)"),
    ("/v1/models/geojax/labels/nope:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: nope"),
    ("/v1/models/geojax:predict", b"{not json", 400, "JSON Parse error: "),
    ("/v1/models/geojax:predict", {"instances": [{"pixels": {"b64": "AA=="}}]}, 400,
     "JSON object: does not have named input: pixels"),
    ("/v1/models/geojax:predict", {"inputs": {"pixels": []}}, 400,
     "Missing named input: images in 'inputs' object."),
    ("/v1/models/geojax:predict", {"signature_name": "predict_pixels", "instances": ["x"]}, 400,
     'JSON Value: "x" Type: String is not of expected type: float'),
    ("/v1/models/geojax:predict", {"instances": [1.0]}, 400,
     "JSON Value: 1.0 Type: Number is not of expected type: string"),
    ("/v1/models/geojax:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
])
def test_rest_errors_are_tf_serving_json(server, path, body, status, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{server['rest']}{path}", **kwargs)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


MAX_REQUEST, MAX_TENSOR = 2_000_000, 20_000_000


def test_rest_limits_body_size_json_depth_and_echo(server):
    url = f"{server['rest']}/v1/models/{MODEL}:predict"
    big = b"[" + b"0," * 1_100_000 + b"0]"
    response = httpx.post(url, content=big)  # declared by Content-Length
    assert response.status_code == 413 and "--max_request_bytes" in response.json()["error"]

    def chunks():
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    response = httpx.post(url, content=chunks())  # sent without a length
    assert response.status_code == 413
    response = httpx.post(url, content=b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    bad = "x" * 500_000
    response = httpx.post(url, json={"signature_name": "predict_pixels", "instances": [bad]})
    assert response.status_code == 400 and len(response.text) < 2000
    assert httpx.post(url, json={"signature_name": "predict_pixels", "instances": [[[[0.0] * 3]
                      * TINY_SIZE] * TINY_SIZE]}).status_code == 200  # still serving


def test_grpc_declared_shape_is_checked_before_allocating(stubs):
    import tensorflow as tf

    prediction, _ = stubs
    request = predict_request({}, signature="predict_pixels")
    tensor = tf.make_tensor_proto([0.5], dtype=tf.float32)  # one value...
    tensor.tensor_shape.Clear()
    for size in (20_000, 40, 40, 3):  # ...declaring 384 MB, filled from it by TensorFlow
        tensor.tensor_shape.dim.add(size=size)
    request.inputs["images"].CopyFrom(tensor)
    code, message = grpc_error(prediction.Predict, request)
    assert code == "INVALID_ARGUMENT" and "over this server's limit" in message
    assert "[20000, 40, 40, 3]" in message


def test_rest_unknown_model_and_version_status_are_404(server):
    rest = server["rest"]
    assert httpx.get(f"{rest}/v1/models/nope").json() == {
        "error": "Could not find any versions of model nope"}
    response = httpx.get(f"{rest}/v1/models/{MODEL}/versions/7")
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find version 7 of model geojax"}


def tf_serving_metrics(rest):
    """The server's Prometheus page, parsed: {(family, sample suffix): [(labels, value)]}. The
    parser reads a TF Serving counter `NAME{...} v` as the sample NAME_total."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{rest}{METRICS_PATH}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    found: dict[tuple[str, str], list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            suffix = sample.name[len(family.name):]
            found.setdefault((family.name, suffix), []).append((sample.labels, sample.value))
    return found


def request_counts(metrics):
    return {labels["status"]: value
            for labels, value in metrics.get((":tensorflow:serving:request_count", "_total"), [])
            if labels["model_name"] == MODEL}


def test_prometheus_endpoint_counts_predicts_by_status_with_tf_serving_names(server, stubs,
                                                                             reference):
    rest, (prediction, _) = server["rest"], stubs
    before = request_counts(tf_serving_metrics(rest))
    prediction.Predict(predict_request({"images": reference["pngs"][:1]}))
    grpc_error(prediction.Predict, predict_request({"images": reference["pngs"][:1]}, version=7))
    b64 = {"instances": [{"b64": base64.b64encode(reference["pngs"][0]).decode()}]}
    assert httpx.post(f"{rest}/v1/models/{MODEL}:predict", json=b64).status_code == 200
    httpx.get(f"{rest}/v1/models/{MODEL}")  # status and metadata are not counted, as in TF Serving
    metrics = tf_serving_metrics(rest)
    after = request_counts(metrics)
    assert after["OK"] - before.get("OK", 0) == 2
    assert after["NOT_FOUND"] - before.get("NOT_FOUND", 0) == 1

    latency = ":tensorflow:serving:request_latency"
    counts = {(labels["API"], labels["entrypoint"]): value
              for labels, value in metrics[(latency, "_count")] if labels["model_name"] == MODEL}
    assert counts[("Predict", "GRPC")] >= 1 and counts[("predict", "REST")] >= 1
    grpc_buckets = [(labels["le"], value) for labels, value in metrics[(latency, "_bucket")]
                    if labels["entrypoint"] == "GRPC"]
    assert [le for le, _ in grpc_buckets][:3] == ["10", "18", "32.4"]  # microseconds, x1.8
    assert grpc_buckets[-1] == ("+Inf", counts[("Predict", "GRPC")]) and len(grpc_buckets) == 34
    assert (latency, "_sum") in metrics
    runtime = {labels["runtime"] for labels, _ in
               metrics[(":tensorflow:serving:runtime_latency", "_count")]}
    assert runtime == {"TF1"}

    version_dir = str(server["base"] / "1")
    loads = metrics[(":tensorflow:cc:saved_model:load_attempt_count", "_total")]
    assert ({"model_path": version_dir, "status": "success"}, 1) in loads
    warmups = metrics[(":tensorflow:serving:model_warmup_latency", "_count")]
    assert ({"model_path": version_dir, "status": "OK"}, 1) in warmups


def test_prometheus_path_is_served_only_as_configured():
    """TF Serving serves the metrics only with prometheus_config.enable, at its path (default
    /monitoring/prometheus/metrics); every other path outside /v1/ is 404 (RestApi in-process,
    over an empty server core)."""
    import asyncio

    from google.protobuf import text_format

    from geojax.tfserving.api import ModelServerApi
    from geojax.tfserving.core import ServerCore, ServerOptions
    from geojax.tfserving.metrics import (
        PROMETHEUS_PATH,
        monitoring_config_message,
        prometheus_path,
    )
    from geojax.tfserving.rest_server import RestApi

    def path_of(text):
        return prometheus_path(text_format.Parse(text, monitoring_config_message()()))

    assert path_of("prometheus_config { enable: true }") == PROMETHEUS_PATH
    assert path_of('prometheus_config { enable: false path: "/m" }') is None
    assert path_of("") is None

    async def statuses(app, paths):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tf-serving") as client:
            return [(await client.get(path)).status_code for path in paths]

    core = ServerCore(ServerOptions())
    try:
        api = ModelServerApi(core)
        paths = [PROMETHEUS_PATH, "/metrics", "/monitoring/custom"]
        assert asyncio.run(statuses(RestApi(api), paths)) == [404, 404, 404]
        assert asyncio.run(statuses(RestApi(api, metrics_path="/monitoring/custom"), paths)) == [
            404, 404, 200]
    finally:
        core.stop()


@pytest.mark.parametrize("text, reason", [
    ("prometheus_config { enabled: true }", 'has no field named "enabled"'),
    (None, "No such file or directory"),
])
def test_a_bad_monitoring_config_fails_startup_naming_the_file(tmp_path, text, reason):
    config = tmp_path / "monitoring.config"
    if text is not None:
        config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "geojax.model_server", "--port", str(free_port()),
         "--rest_api_port", str(free_port()), "--model_base_path", str(tmp_path / "none"),
         "--monitoring_config_file", str(config)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "geojax.model_server: failed to start: INVALID_ARGUMENT:" in result.stderr
    assert f"Invalid protobuf file: '{config}'" in result.stderr
    assert reason in result.stderr


def test_config_polling_loads_relabels_refuses_and_unloads(server, stubs):
    """A registry's promotion, step by step, served without restart (poll: 1 s). It changes
    the server's state, so it stays the module's last test."""
    rest, config, base = server["rest"], server["config"], server["base"]
    prediction, _ = stubs
    request = {"instances": [{"b64": base64.b64encode(b"not read").decode()}]}

    def states():
        status = httpx.get(f"{rest}/v1/models/{MODEL}").json()["model_version_status"]
        return {int(s["version"]): s["state"] for s in status}

    def labelled_version(label):
        response = prediction.Predict(predict_request(
            {"images": np.zeros((1, SIZE, SIZE, 3), np.float32)}, "predict_pixels", label=label))
        return response.model_spec.version.value

    write_config(config, model_config(base, [1, 2], {"production": 1}))
    wait_for(lambda: states().get(2) == "AVAILABLE", "version 2 to load")
    assert states()[1] == "AVAILABLE"

    write_config(config, model_config(base, [1, 2], {"production": 2, "staging": 1}))
    wait_for(lambda: labelled_version("production") == 2, "production to move to 2")
    assert labelled_version("staging") == 1

    # As in TF Serving: a label may not move to a version that is not available; the change is
    # refused and the old labels keep serving.
    write_config(config, model_config(base, [1, 2], {"production": 3, "staging": 1}))
    wait_for(lambda: "Request to assign label to version 3 of model geojax, which is not "
             "currently available for inference" in server["log"].read_text(),
             "the refused label to be logged")
    assert labelled_version("production") == 2

    write_config(config, model_config(base, [2], {"production": 2}))
    wait_for(lambda: states() == {2: "AVAILABLE", 1: "END"}, "version 1 to unload")
    response = httpx.post(f"{rest}/v1/models/{MODEL}/versions/1:predict", json=request)
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Specific(geojax, 1)"}
