"""Canary rollouts through the proxy, as real processes: a traffic split measured over a few
hundred requests, sticky clients, and shadow mode (answers from production, the canary only
compared, its failures only counted)."""

import os
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from geojax.release.registry import Registry

from conftest import free_port, tiny_samples
from test_proxy import png_file, register, start, start_model_server, wait_until


def metric(client, name, **labels):
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def servers(tiny_saved_model, tmp_path_factory):
    """Version 1 in production, version 2 in canary, on one model server; yields a function
    starting a proxy with the given environment (stopped at the end)."""
    root = tmp_path_factory.mktemp("rollout")
    base, config_file = root / "models" / "geojax", root / "models.config"
    registry = Registry(base, config_file=config_file, server=None)
    registry.promote(register(registry, tiny_saved_model, 0.5), "staging")
    registry.promote(1, "production")
    registry.promote(register(registry, tiny_saved_model, 0.5), "staging")
    registry.promote(2, "canary")
    grpc_port, rest_port = free_port(), free_port()
    log = open(root / "servers.log", "w")  # noqa: SIM115 - closed at teardown
    server = start_model_server(config_file, grpc_port, rest_port, log)
    started = []

    def proxy(env):
        port = free_port()
        process = start(["geojax.proxy", "--host=127.0.0.1", f"--port={port}"], log=log, env={
            "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc_port}", **env})
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        started.append((process, client))
        wait_until(lambda: client.get("/ready").status_code == 200, "the proxy to be ready")
        return client

    try:
        yield proxy
    finally:
        for process, client in started:
            client.close()
            process.terminate()
            process.wait(timeout=20)
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_split_sends_its_share_to_the_canary_and_keeps_clients_sticky(servers):
    client = servers({"GEOJAX_ROLLOUT": "split:30"})
    image = png_file(tiny_samples(1)[0])
    models = [client.post("/predict", files=image).json()["model"] for _ in range(300)]
    labels = [m["label"] for m in models]
    share = labels.count("canary") / len(labels)
    assert 0.22 <= share <= 0.38, share  # 30% +- 3 sigma of a binomial over 300
    assert {(m["label"], m["version"]) for m in models} == {("canary", 2), ("production", 1)}
    for who in ("alice", "bob", "carol", "dave"):
        seen = {client.post("/predict", files=image, headers={"X-Client-Id": who}).json()[
            "model"]["label"] for _ in range(8)}
        assert len(seen) == 1, (who, seen)
    assert metric(client, "geojax_label_requests_total", label="canary",
                  endpoint="/predict", status="200") >= labels.count("canary")


def test_shadow_answers_from_production_and_records_agreement(servers):
    client = servers({"GEOJAX_ROLLOUT": "shadow"})
    image = png_file(tiny_samples(1)[0])
    for _ in range(10):
        answer = client.post("/predict", files=image).json()
        assert answer["model"] == {"name": "geojax", "version": 1, "label": "production"}
    detected = client.post("/detect", files=image, params={"confidence": 0.0})
    assert detected.json()["model"]["label"] == "production"
    wait_until(lambda: metric(client, "geojax_shadow_compared_total", kind="classes") >= 10,
               "the shadow comparisons", timeout=30)
    wait_until(lambda: metric(client, "geojax_shadow_compared_total", kind="detections") >= 1,
               "the shadow detection comparison", timeout=30)
    # The canary serves the same SavedModel here: its answers agree.
    assert metric(client, "geojax_shadow_agreement", kind="classes") == 1.0
    assert metric(client, "geojax_shadow_agreement", kind="detections") == 1.0
    assert metric(client, "geojax_label_requests_total", label="canary", endpoint="/predict",
                  status="200") >= 10


def test_a_failing_canary_raises_its_metrics_and_never_changes_production(servers):
    # The canary label names a label the model server does not have: every canary call fails.
    client = servers({"GEOJAX_ROLLOUT": "shadow", "GEOJAX_CANARY_LABEL": "nonexistent"})
    image = png_file(tiny_samples(1)[0])
    reference = client.post("/predict", files=image).json()
    for _ in range(5):
        answer = client.post("/predict", files=image).json()
        assert answer["model"]["label"] == "production"
        assert answer["probabilities"] == reference["probabilities"]
    wait_until(lambda: metric(client, "geojax_label_requests_total", label="nonexistent",
                              endpoint="/predict", status="503") >= 6,
               "the canary's failures to be counted", timeout=30)
    assert metric(client, "geojax_label_requests_total", label="production",
                  endpoint="/predict", status="200") >= 6


def test_a_bad_rollout_setting_stops_the_proxy_naming_it():
    result = subprocess.run([sys.executable, "-m", "geojax.proxy"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "GEOJAX_ROLLOUT": "split:150"})
    assert result.returncode != 0 and "GEOJAX_ROLLOUT='split:150'" in result.stderr
