"""The detection proxy as a real process in front of the local model server (gRPC).

Versions come through the registry exactly as users make them (register, promote), so these
tests also show a promotion reaching the proxy without a restart.
"""

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.images import encode_png, resize_to
from geojax.data import compose_scene
from geojax.detection.scoring import precision_recall
from geojax.release.registry import Registry
from geojax.release.saved_model import saved_model_probabilities
from geojax.serving.drift import image_statistics, profile

from conftest import TINY_SIZE, free_port, tiny_samples

MAX_UPLOAD = 3_000_000
MAX_PIXELS = 4_000_000


def wait_until(condition, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start(args, env=None, log=None):
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **(env or {})},
                            stdout=log, stderr=subprocess.STDOUT)


def start_model_server(config_file, grpc_port, rest_port, log):
    return start(["geojax.model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                  f"--model_config_file={config_file}", "--host=127.0.0.1",
                  "--model_config_file_poll_wait_seconds=1",
                  "--allow_version_labels_for_unavailable_models=true"], log=log)


def register(registry, saved_model, accuracy):
    incoming = registry.incoming_dir()
    shutil.rmtree(incoming)
    shutil.copytree(saved_model, incoming)
    samples = tiny_samples(20)
    probs = saved_model_probabilities(saved_model, np.stack(samples).astype(np.float32) / 255)
    return registry.register(incoming, {
        "metrics": {"accuracy": accuracy, "macro_f1": accuracy},
        "reference_profile": profile(probs, [image_statistics(s) for s in samples]),
    })


@contextlib.contextmanager
def serving(root, base, config_file, env=None):
    """A model server (gRPC + REST) for `config_file` and a proxy in front of it over gRPC,
    both real processes on free ports, logging to ROOT/servers.log; yields (HTTP client of
    the proxy, gRPC port) once the proxy is ready."""
    grpc_port, rest_port, http_port = free_port(), free_port(), free_port()
    log = open(root / "servers.log", "w")  # noqa: SIM115 - closed at teardown
    server = start_model_server(config_file, grpc_port, rest_port, log)
    proxy = start(["geojax.proxy", "--host=127.0.0.1", f"--port={http_port}"], log=log, env={
        "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc_port}",
        "GEOJAX_MODEL_BASE_PATH": str(base), **(env or {})})
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        wait_until(lambda: client.get("/ready").status_code == 200, "the proxy to be ready")
        yield client, grpc_port
    finally:
        client.close()
        for process in (proxy, server):
            process.terminate()
            process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def stack(tiny_saved_model, tmp_path_factory):
    """Model server + proxy processes over a registry holding version 1 in production."""
    root = tmp_path_factory.mktemp("stack")
    base, config_file = root / "models" / "geojax", root / "models.config"
    registry = Registry(base, config_file=config_file)
    version = register(registry, tiny_saved_model, 0.5)
    registry.promote(version, "staging")
    registry.promote(version, "production")
    with serving(root, base, config_file, {
        "GEOJAX_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "GEOJAX_MAX_PIXELS": str(MAX_PIXELS),
        "GEOJAX_MAX_BATCH": "4",
        "GEOJAX_TIMEOUT_S": "3",
        "GEOJAX_DRIFT_WINDOW": "10",
    }) as (client, grpc_port):
        yield {"client": client, "registry": registry, "saved_model": tiny_saved_model,
               "grpc": grpc_port, "root": root}


def detect_scenes(client, scenes, **params):
    """POST every scene to /detect; ([boxes, scores, labels] per scene, [timing_ms, ...])."""
    predictions, timings = [], []
    for scene in scenes:
        response = client.post("/detect", files=png_file(scene.image), params=params)
        assert response.status_code == 200, response.text
        answer = response.json()
        found = answer["detections"]
        predictions.append((np.array([d["bbox"] for d in found], np.float64).reshape(-1, 4),
                            np.array([d["confidence"] for d in found]),
                            np.array([CLASSES.index(d["class"]) for d in found], np.int64)))
        timings.append(answer["timing_ms"])
    return predictions, timings


def png_file(image, name="shape.png"):
    return {"file": (name, encode_png(image), "image/png")}


def test_status_endpoints(stack):
    client = stack["client"]
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready").json()
    assert ready == {"status": "ready", "model": {"name": "geojax", "version": 1,
                                                  "label": "production"},
                     "checks": {"label": "version 1", "available": "ok",
                                "warm_inference": "ok"}}
    # The Open Inference Protocol's health routes.
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert client.get("/v2/models/geojax/ready").json()["ready"] is True
    assert client.get("/v2/models/other/ready").status_code == 404
    assert client.get("/classes").json() == {"classes": list(CLASSES)}
    info = client.get("/model/info").json()
    assert info["input_size"] == TINY_SIZE and info["classes"] == list(CLASSES)
    assert info["label"] == "production" and info["metrics"]["accuracy"] == 0.5
    assert "/detect" in client.get("/openapi.json").json()["paths"]


def test_predict_matches_the_saved_model(stack):
    client = stack["client"]
    image = tiny_samples(1, size=50)[0]
    expected = saved_model_probabilities(
        stack["saved_model"], resize_to(image, TINY_SIZE)[None].astype(np.float32) / 255)[0]
    by_file = client.post("/predict", files=png_file(image)).json()
    by_json = client.post("/predict", json={"image": base64.b64encode(encode_png(image))
                                            .decode()}).json()
    for answer in (by_file, by_json):
        probs = np.array([answer["probabilities"][c] for c in CLASSES])
        assert np.abs(probs - expected).max() < 1e-5
        assert answer["class"] == CLASSES[int(expected.argmax())]
        assert answer["confidence"] == pytest.approx(expected.max(), abs=1e-5)
        assert answer["shape_found"] == bool(expected.max() >= SHAPE_THRESHOLD)
        assert answer["model"]["version"] == 1


def test_batch_is_limited_and_answers_in_order(stack):
    client = stack["client"]
    images = tiny_samples(3)
    files = [("files", (f"{i}.png", encode_png(im), "image/png")) for i, im in enumerate(images)]
    batch = client.post("/predict/batch", files=files).json()["predictions"]
    single = [client.post("/predict", files=png_file(im)).json() for im in images]
    assert [b["class"] for b in batch] == [s["class"] for s in single]
    too_many = {"images": [base64.b64encode(encode_png(images[0])).decode()] * 5}
    response = client.post("/predict/batch", json=too_many)
    assert response.status_code == 413 and "batch limit of 4" in response.json()["detail"]
    assert client.post("/predict/batch", json={"images": []}).status_code == 400
    bad = client.post("/predict/batch", json={"images": ["%%%"]})
    assert bad.status_code == 400 and "images[0]: not valid base64" in bad.json()["detail"]


def test_detect_contract_and_annotation(stack):
    client = stack["client"]
    scene = compose_scene(np.random.default_rng(3), 320, 240, num_shapes=(3, 4))
    answer = client.post("/detect", files=png_file(scene.image),
                         params={"confidence": 0.0, "iou": 0.3}).json()
    assert (answer["width"], answer["height"]) == (320, 240)
    assert answer["model"] == {"name": "geojax", "version": 1, "label": "production"}
    assert {"decode", "proposal", "crop", "classify", "nms", "total"} <= set(answer["timing_ms"])
    assert answer["detections"], "confidence 0 keeps every surviving proposal"
    for d in answer["detections"]:
        assert d["class"] in CLASSES and 0 <= d["confidence"] <= 1
        x0, y0, x1, y1 = d["bbox"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    png = client.post("/detect", files=png_file(scene.image), params={"annotate": "true"})
    assert png.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR).shape == (
        240, 320, 3)
    wrong = client.post("/detect", files=png_file(scene.image), params={"method": "magic"})
    assert wrong.status_code == 422


def model_calls(client, endpoint):
    """How many model server calls the proxy has made for `endpoint` (its latency count)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if (sample.name == "geojax_model_server_latency_seconds_count"
                    and sample.labels.get("endpoint") == endpoint):
                return sample.value
    return 0.0


def test_detect_options_formats_and_batch(stack):
    client = stack["client"]
    scenes = [compose_scene(np.random.default_rng(40 + i), 320, 240, num_shapes=(3, 4))
              for i in range(3)]
    every = {"confidence": 0.0}
    full = client.post("/detect", files=png_file(scenes[0].image), params=every).json()
    names = [d["class"] for d in full["detections"]]
    assert full["box_format"] == "xyxy" and len(names) >= 2

    one_class = client.post("/detect", files=png_file(scenes[0].image),
                            params={**every, "classes": names[0]}).json()["detections"]
    assert one_class and {d["class"] for d in one_class} == {names[0]}
    top = client.post("/detect", files=png_file(scenes[0].image),
                      params={**every, "max_detections": 1}).json()["detections"]
    assert top == full["detections"][:1]
    xywh = client.post("/detect", files=png_file(scenes[0].image),
                       params={**every, "box_format": "xywh"}).json()["detections"]
    norm = client.post("/detect", files=png_file(scenes[0].image),
                       params={**every, "box_format": "normalized"}).json()["detections"]
    for d, w, n in zip(full["detections"], xywh, norm, strict=True):
        x0, y0, x1, y1 = d["bbox"]
        assert w["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        np.testing.assert_allclose(n["bbox"], [x0 / 320, y0 / 240, x1 / 320, y1 / 240])
    coco = client.post("/detect", files=png_file(scenes[0].image),
                       params={**every, "format": "coco", "image_id": 7}).json()
    assert [(e["image_id"], e["category_id"], e["score"]) for e in coco] == [
        (7, d["label"] + 1, d["confidence"]) for d in full["detections"]]
    assert all(e["bbox"] == w["bbox"] for e, w in zip(coco, xywh, strict=True))
    for bad, named in (({"classes": "circle,blob"}, "'blob'"), ({"box_format": "yolo"}, ""),
                       ({"max_detections": 0}, "")):
        response = client.post("/detect", files=png_file(scenes[0].image), params=bad)
        assert response.status_code == 422 and named in response.text

    # /detect/batch: every image's answer as /detect gives it, from one model call.
    calls = model_calls(client, "/detect/batch")
    files = [("files", (f"s{i}.png", encode_png(s.image))) for i, s in enumerate(scenes)]
    batch = client.post("/detect/batch", files=files, params=every).json()
    assert model_calls(client, "/detect/batch") == calls + 1
    singles = [client.post("/detect", files=png_file(s.image), params=every).json()
               for s in scenes]
    assert len(batch["results"]) == 3
    for got, want in zip(batch["results"], singles, strict=True):
        assert [d["bbox"] for d in got["detections"]] == [d["bbox"] for d in want["detections"]]
        assert [d["class"] for d in got["detections"]] == [d["class"] for d in want["detections"]]
    as_json = client.post("/detect/batch", params={**every, "format": "coco", "image_id": 5},
                          json={"images": [base64.b64encode(encode_png(s.image)).decode()
                                           for s in scenes]}).json()
    assert sorted({e["image_id"] for e in as_json}) == [5, 6, 7]


def test_detect_puts_a_box_on_every_shape_of_generated_scenes(stack):
    # Where /detect puts boxes is up to the proposals; which class it names is up to the model,
    # and this one is untrained: so boxes are checked whatever their class. (With a trained
    # model, classes too: tests/serving/test_detection_quality.py, marked slow.) Default contour
    # proposals on the scene generator's defaults: textures, gradients, blur, noise, JPEG.
    scenes = [compose_scene(np.random.default_rng(21_000 + i)) for i in range(40)]
    predictions, timings = detect_scenes(stack["client"], scenes, confidence=0.0)
    anyclass = [(b, s, np.zeros_like(c)) for b, s, c in predictions]
    truth = [(scene.boxes, np.zeros_like(scene.labels)) for scene in scenes]
    precision, recall = precision_recall(anyclass, truth, iou=0.5)
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)
    assert all(0 < t["model_server"] <= t["classify"] <= t["total"] for t in timings
               if t["classify"] > 0)


@pytest.mark.parametrize(("payload", "status", "message"), [
    (b"not an image", 400, "not a readable image"),
    (b"", 400, "empty file"),
    (encode_png(np.zeros((64, 64, 3), np.uint8))[:80], 400, "shape.png"),
])
def test_bad_uploads_get_4xx_naming_the_problem(stack, payload, status, message):
    response = stack["client"].post("/predict", files={"file": ("shape.png", payload)})
    assert response.status_code == status and message in response.json()["detail"]


def test_size_guards(stack):
    client = stack["client"]
    bomb = encode_png(np.zeros((2100, 2000, 3), np.uint8))  # small file, 4.2 Mpx
    response = client.post("/detect", files={"file": ("bomb.png", bomb)})
    assert response.status_code == 413 and "over the limit of 4,000,000" in response.text
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100, 3), np.uint8)
    big = encode_png(noise)
    assert len(big) > MAX_UPLOAD
    response = client.post("/predict", files={"file": ("big.png", big)})
    assert response.status_code == 413 and "request body over the limit" in response.text
    # Sent in chunks without a Content-Length, JSON and multipart alike: 413, and counted.
    def chunked(payload: bytes):
        for start in range(0, len(payload), 65536):
            yield payload[start:start + 65536]

    as_json = json.dumps({"image": base64.b64encode(big).decode()}).encode()
    response = client.post("/predict", content=chunked(as_json),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "request body over the limit" in response.text
    boundary = "geojaxboundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + big + (
                     f"\r\n--{boundary}--\r\n").encode()
    response = client.post("/predict", content=chunked(multipart), headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    assert 'endpoint="/predict",status="413"' in client.get("/metrics").text
    # Extreme aspect ratios: a side over the limit is refused from the header; a long strip
    # under it is shrunk before it is padded (a 1,000,000 x 40 strip once tried to pad to a
    # 3 TB square) and detection works on a bounded copy.
    too_long = encode_png(np.zeros((1, 20_001, 3), np.uint8))
    response = client.post("/predict", files={"file": ("long.png", too_long)})
    assert response.status_code == 413 and "side of 20,001 pixels" in response.text
    strip = encode_png(np.full((3, 19_000, 3), 200, np.uint8))
    assert client.post("/predict", files={"file": ("strip.png", strip)}).status_code == 200
    response = client.post("/detect", files={"file": ("strip.png", strip)})
    assert response.status_code == 200 and response.json()["detections"] == []
    assert client.post("/predict", json={"picture": "x"}).status_code == 422
    assert client.post("/predict", content=b"raw", headers={"content-type": "text/plain"}
                       ).status_code == 400


def test_metrics_and_drift(stack):
    client = stack["client"]
    for image in tiny_samples(12):
        client.post("/predict", files=png_file(image))
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    requests = families["geojax_requests"]
    assert any(s.labels == {"endpoint": "/predict", "status": "200"} and s.value >= 12
               for s in requests.samples)
    version = families["geojax_served_model_version"].samples[0]
    assert version.value == 1 and version.labels["label"] == "production"
    for name in ("geojax_request_latency_seconds", "geojax_model_server_latency_seconds",
                 "geojax_predicted_class", "geojax_prediction_confidence", "geojax_input_pixels",
                 "geojax_crops_per_request", "geojax_model_server_up"):
        assert name in families, name
    drift = client.get("/drift").json()
    assert drift["reference"] is True and drift["window"]["size"] == 10
    assert drift["psi"]["class_distribution"] is not None
    assert set(drift["psi"]) == {"class_distribution", "confidence", "brightness", "contrast",
                                 "log2_pixels"}


def test_promotion_switches_the_served_version_live(stack):
    registry, client = stack["registry"], stack["client"]
    registry.server = f"127.0.0.1:{stack['grpc']}"
    version = register(registry, stack["saved_model"], 0.6)
    registry.promote(version, "staging")
    registry.promote(version, "production")
    wait_until(lambda: client.get("/model/info").json()["version"] == version,
               "the proxy to serve the promoted version", timeout=60)
    answer = client.post("/predict", files=png_file(tiny_samples(1)[0])).json()
    assert answer["model"]["version"] == version
    assert client.get("/model/info").json()["metrics"]["accuracy"] == 0.6


def test_model_server_down_gives_503_then_recovers(stack, tiny_saved_model):
    grpc_port, rest_port, http_port = free_port(), free_port(), free_port()
    proxy = start(["geojax.proxy", "--host=127.0.0.1", f"--port={http_port}"], env={
        "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc_port}", "GEOJAX_TIMEOUT_S": "1"},
        log=subprocess.DEVNULL)
    server = None
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        wait_until(lambda: client.get("/health").status_code == 200, "the proxy to start")
        started = time.monotonic()
        response = client.post("/predict", files=png_file(tiny_samples(1)[0]))
        assert response.status_code == 503 and "model server" in response.json()["detail"]
        assert str(grpc_port) not in response.text  # the server's address is not the client's
        assert time.monotonic() - started < 10
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503 and not_ready.json()["failed"] == "label"
        assert client.get("/v2/health/ready").json()["ready"] is False
        server = start_model_server(stack["root"] / "models.config", grpc_port, rest_port,
                                    subprocess.DEVNULL)
        # Not ready while the server loads the version; ready once a warm call went through.
        wait_until(lambda: client.get("/ready").status_code == 200, "recovery")
        assert client.get("/ready").json()["checks"]["warm_inference"] == "ok"
        assert client.post("/predict", files=png_file(tiny_samples(1)[0])).status_code == 200
    finally:
        client.close()
        for process in (proxy, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=20)


def test_api_keys_guard_everything_but_probes_and_metrics(stack):
    from fastapi.testclient import TestClient

    from geojax.serving.app import create_app
    from geojax.serving.settings import ProxySettings

    settings = ProxySettings(model_server=f"127.0.0.1:{stack['grpc']}", api_keys=("s3cret",))
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
        denied = client.get("/classes")
        assert denied.status_code == 401 and "X-API-Key" in denied.json()["detail"]
        assert client.get("/classes", headers={"X-API-Key": "s3cret"}).status_code == 200
        image = io.BytesIO(encode_png(tiny_samples(1)[0]))
        assert client.post("/predict", files={"file": ("a.png", image)},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # The key is checked before the upload is read: a wrong key is refused with 401 even
        # when the body is not a valid upload at all, and the refusal is counted.
        refused = client.post("/predict", content=b"\0" * 1000,
                              headers={"X-API-Key": "s3cre", "content-type": "multipart/form-data"})
        assert refused.status_code == 401
        assert 'status="401"' in client.get("/metrics").text


def test_an_unhandled_error_is_a_500_and_counted(stack, monkeypatch):
    from fastapi.testclient import TestClient

    from geojax.serving.app import create_app
    from geojax.serving.settings import ProxySettings
    from geojax.serving.state import Proxy

    def broken(self, data, source):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Proxy, "decode", broken)
    settings = ProxySettings(model_server=f"127.0.0.1:{stack['grpc']}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/predict", files=png_file(tiny_samples(1)[0]))
        assert response.status_code == 500
        assert 'endpoint="/predict",status="500"' in client.get("/metrics").text


def test_key_comparison_and_key_files(tmp_path):
    from geojax.serving.middleware import key_matches
    from geojax.serving.settings import ProxySettings

    assert key_matches("b", ("a", "b")) and not key_matches("", ("a",))
    assert not key_matches("s3cre", ("s3cret",)) and not key_matches("s3crets", ("s3cret",))
    empty = tmp_path / "keys"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no keys"):
        ProxySettings.from_env({"GEOJAX_API_KEYS_FILE": str(empty)})
    with pytest.raises(ValueError, match="GEOJAX_API_KEYS_FILE"):
        ProxySettings.from_env({"GEOJAX_API_KEYS_FILE": str(tmp_path / "missing")})
    empty.write_text("k1\nk2\n")
    assert ProxySettings.from_env({"GEOJAX_API_KEYS_FILE": str(empty)}).api_keys == ("k1", "k2")


def test_settings_from_environment_name_bad_values():
    from geojax.serving.settings import ProxySettings

    settings = ProxySettings.from_env({"GEOJAX_MAX_BATCH": "7", "GEOJAX_API_KEYS": "a, b",
                                       "GEOJAX_CORS_ORIGINS": "http://x"})
    assert settings.max_batch == 7 and settings.api_keys == ("a", "b")
    assert settings.cors_origins == ("http://x",)
    with pytest.raises(ValueError, match="GEOJAX_TIMEOUT_S='soon'"):
        ProxySettings.from_env({"GEOJAX_TIMEOUT_S": "soon"})
    assert json.loads(json.dumps(settings.__dict__))  # plain values only


def test_full_size_images_and_model_calls_wait_for_a_slot_then_get_503():
    """At most GEOJAX_MAX_DECODED full-size images are held at once; a request that cannot get
    a slot within the timeout is told the proxy is busy (no model server needed)."""
    from fastapi import HTTPException

    from geojax.serving.settings import ProxySettings
    from geojax.serving.state import Proxy

    proxy = Proxy(ProxySettings(max_decoded=1, max_model_calls=1, timeout_s=0.2))
    png = encode_png(np.zeros((8, 8, 3), np.uint8))
    with proxy.full_size_image(png, "first") as image:
        assert image.shape == (8, 8, 3)
        with pytest.raises(HTTPException) as busy, proxy.full_size_image(png, "second"):
            pass
        assert busy.value.status_code == 503 and "busy" in busy.value.detail
    with proxy.full_size_image(png, "third"):  # the slot is free again
        pass
    with proxy._turn(proxy._model_calls, "model server call"), \
            pytest.raises(HTTPException, match="busy"):
        proxy._call(lambda: None)
    # One deadline per request: once it has passed, no wait and no model call starts.
    late = Proxy(ProxySettings(request_timeout_s=0.0))
    with late.request(), pytest.raises(HTTPException, match="busy"):
        late._call(lambda: None)
    assert late._call(lambda: "outside a request") == "outside a request"


def test_the_proxy_imports_no_training_stack():
    """The serving side is built on geojax.core: importing the proxy command and the serving
    package (and building its app on the REST protocol) loads none of the training libraries,
    nor TensorFlow."""
    code = (
        "import sys\n"
        "import geojax.proxy, geojax.serving\n"
        "from geojax.serving.app import create_app\n"
        "from geojax.serving.settings import ProxySettings\n"
        "create_app(ProxySettings(protocol='rest'))\n"
        "heavy = ('jax', 'flax', 'optax', 'orbax', 'albumentations', 'wandb', 'clu', "
        "'tensorflow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
