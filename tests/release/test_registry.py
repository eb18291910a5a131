"""The model registry: version numbering, models.config contents, promotion rules, rollback,
archiving, locking, interrupted exports, the two-phase label move, and the CLI.

The "SavedModels" here are tiny directories: the registry only hashes and moves their files.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from geojax import registry as registry_lib
from geojax.release.errors import RegistryError
from geojax.release.registry import Registry
from geojax.release.serving_config import config_phases
from geojax.release.stages import metric_regressions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(
        tmp_path / "export" / "geojax",
        tmp_path / "serving" / "models.config",
        serving_base_path="/models/geojax",
    )


def export(registry: Registry, accuracy: float | None = 0.9, **metrics: float) -> int:
    """What the exporter does: write a SavedModel into incoming_dir(), then register it."""
    incoming = registry.incoming_dir()
    (incoming / "saved_model.pb").write_bytes(b"graph")
    (incoming / "variables").mkdir()
    (incoming / "variables" / "variables.index").write_bytes(b"index")
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    return registry.register(incoming, {"metrics": metrics, "parity": 1e-6, "workdir": "runs/x"})


def served(registry: Registry) -> tuple[list[int], dict[str, int]]:
    """(versions, labels) of the model in the config file, checking the rest of its entry."""
    config = text_format.Parse(
        registry.config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "geojax",
        "/models/geojax",
        "tensorflow",
    )
    return list(entry.model_version_policy.specific.versions), dict(entry.version_labels)


def cli(registry: Registry, *args: str) -> list[str]:
    """The command line that runs `python -m geojax.registry ARGS` on `registry`."""
    paths = ["--base_path", str(registry.base_path), "--config_file", str(registry.config_file)]
    return [sys.executable, "-m", "geojax.registry", *paths, "--serving_base_path",
            "/models/geojax", *args]  # fmt: skip


def run_cli(registry: Registry, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(registry, *args), cwd=REPO, capture_output=True, text=True)


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------


def test_register_renames_the_export_into_the_next_version_with_metadata(registry):
    assert export(registry) == 1 and export(registry) == 2
    version_dir = registry.base_path / "2"
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["version"] == 2 and metadata["workdir"] == "runs/x"
    assert set(metadata["sha256"]) == {"saved_model.pb", "variables/variables.index"}
    assert metadata["sha256"]["saved_model.pb"] == hashlib.sha256(b"graph").hexdigest()
    assert metadata["created"].endswith("+00:00")
    assert not list(registry.base_path.glob(".incoming-*"))
    assert registry.labels() == {"development": 2}


def test_register_refuses_a_directory_without_a_saved_model(registry):
    incoming = registry.incoming_dir()
    with pytest.raises(RegistryError, match="no saved_model.pb"):
        registry.register(incoming, {})


def test_versions_count_up_and_are_never_reused_after_archive(registry):
    assert [export(registry) for _ in range(3)] == [1, 2, 3]
    registry.archive(1)
    registry.promote(2, "development")  # frees 3, the highest number, for archiving
    registry.archive(3)
    assert export(registry) == 4
    assert sorted(p.name for p in (registry.base_path / "archive").iterdir()) == ["1", "3"]
    rows = {row.version: row for row in registry.versions()}
    assert [v for v, row in rows.items() if row.archived] == [1, 3]
    assert rows[4].stages == ("development",) and rows[4].accuracy == 0.9
    assert json.loads((registry.base_path / "registry.json").read_text())["archived"] == [1, 3]
    assert served(registry) == ([4], {"development": 4})


# ---------------------------------------------------------------------------------------------
# models.config
# ---------------------------------------------------------------------------------------------


def test_config_says_what_it_should_after_each_step(registry):
    export(registry)
    assert served(registry) == ([1], {"development": 1})
    registry.promote(1, "staging")
    assert served(registry) == ([1], {"development": 1, "staging": 1})
    registry.promote(1, "production")
    export(registry, 0.91)
    assert served(registry) == ([1, 2], {"development": 2, "staging": 1, "production": 1})
    registry.promote(2, "staging")
    registry.promote(2, "production")
    # The previous production version stays listed: it is the rollback target.
    assert served(registry) == ([1, 2], {"development": 2, "staging": 2, "production": 2})
    export(registry, 0.95)
    assert served(registry) == ([1, 2, 3], {"development": 3, "staging": 2, "production": 2})


def test_config_text_for_development_3_staging_2_production_1(registry):
    for accuracy in (0.90, 0.92, 0.95):
        export(registry, accuracy)
    registry.promote(1, "staging")
    registry.promote(1, "production")
    registry.promote(2, "staging")
    assert registry.config_file.read_text() == (
        "# Written by geojax.registry from registry.json; change it with\n"
        "# `python -m geojax.registry`, not by hand.\n"
        "model_config_list {\n"
        "  config {\n"
        '    name: "geojax"\n'
        '    base_path: "/models/geojax"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        "      specific {\n"
        "        versions: 1\n"
        "        versions: 2\n"
        "        versions: 3\n"
        "      }\n"
        "    }\n"
        "    version_labels {\n"
        '      key: "development"\n'
        "      value: 3\n"
        "    }\n"
        "    version_labels {\n"
        '      key: "production"\n'
        "      value: 1\n"
        "    }\n"
        "    version_labels {\n"
        '      key: "staging"\n'
        "      value: 2\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def test_other_models_in_the_config_file_are_kept(registry):
    registry.config_file.parent.mkdir(parents=True)
    registry.config_file.write_text(
        'model_config_list { config { name: "other" base_path: "/models/other" '
        'model_platform: "tensorflow" } }\n'
    )
    export(registry)
    config = text_format.Parse(
        registry.config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert [c.name for c in config.model_config_list.config] == ["other", "geojax"]
    assert config.model_config_list.config[0].base_path == "/models/other"


def test_the_serving_base_path_is_kept_unless_given(registry):
    export(registry)
    Registry(registry.base_path, registry.config_file).promote(1, "staging")
    assert served(registry) == ([1], {"development": 1, "staging": 1})  # still /models/geojax
    fresh = Registry(registry.base_path, registry.config_file.with_name("other.config"))
    fresh.promote(1, "production")
    config = text_format.Parse(
        fresh.config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert config.model_config_list.config[0].base_path == str(registry.base_path)


def test_a_label_moves_to_an_unlisted_version_only_after_it_is_listed():
    # Already listed (loaded): one write.
    assert config_phases([1, 2], {"production": 1}, [2], {"production": 2}) == [
        ([2], {"production": 2})
    ]
    # Not listed: list it beside the old one with the labels unchanged, then move the label.
    assert config_phases([1], {"production": 1, "staging": 1}, [1, 3], {"production": 3}) == [
        ([1, 3], {"production": 1, "staging": 1}),
        ([1, 3], {"production": 3}),
    ]
    # First version ever: listed without labels first.
    assert config_phases([], {}, [1], {"development": 1}) == [([1], {}), ([1], {"development": 1})]


# ---------------------------------------------------------------------------------------------
# Promotion rules, rollback, archive
# ---------------------------------------------------------------------------------------------


def test_production_requires_staging(registry):
    export(registry)
    with pytest.raises(RegistryError, match="version 1 is not in staging.*promote it to staging"):
        registry.promote(1, "production")
    # --force overrides the metrics gate, never the staging step.
    with pytest.raises(RegistryError, match="not in staging"):
        registry.promote(1, "production", force=True, reason="hotfix")
    registry.promote(1, "staging")
    registry.promote(1, "production")
    assert registry.labels()["production"] == 1


def test_worse_metrics_need_force_and_the_reason_is_recorded(registry):
    export(registry, 0.90, macro_f1=0.90)
    registry.promote(1, "staging")
    registry.promote(1, "production")
    export(registry, 0.85, macro_f1=0.95)
    registry.promote(2, "staging")
    with pytest.raises(RegistryError, match=r"accuracy 0\.8500 < production's 0\.9000.*--force"):
        registry.promote(2, "production")
    with pytest.raises(RegistryError, match="--force needs a --reason"):
        registry.promote(2, "production", force=True)
    assert registry.labels()["production"] == 1
    registry.promote(2, "production", force=True, reason="fixes the star/pentagon mix-up")
    assert registry.labels()["production"] == 2
    event = registry.history()[-1]
    assert event["reason"] == "fixes the star/pentagon mix-up"
    assert event["overridden"] == ["accuracy 0.8500 < production's 0.9000"]


def test_metrics_gate():
    assert metric_regressions({"accuracy": 0.9}, {"accuracy": 0.9}) == []
    assert metric_regressions({"accuracy": 0.9, "macro_f1": 0.7}, {"accuracy": 0.8}) == []
    assert metric_regressions({"accuracy": 0.95, "macro_f1": 0.7}, {"macro_f1": 0.8}) == [
        "macro_f1 0.7000 < production's 0.8000"
    ]
    assert metric_regressions({}, {"accuracy": 0.8}) == [
        "it has no numeric metrics.accuracy in its metadata"
    ]


def test_rollback_restores_the_previous_label(registry):
    for accuracy in (0.90, 0.91, 0.92):
        version = export(registry, accuracy)
        registry.promote(version, "staging")
        registry.promote(version, "production")
    assert served(registry) == ([2, 3], {"development": 3, "staging": 3, "production": 3})
    assert registry.rollback("production") == 2
    assert served(registry) == ([1, 2, 3], {"development": 3, "staging": 3, "production": 2})
    assert (
        run_cli(registry, "rollback", "--stage", "production").stdout == "production -> version 1\n"
    )
    assert served(registry)[1]["production"] == 1
    with pytest.raises(RegistryError, match="no earlier production version to roll back to"):
        registry.rollback("production")
    assert [e["action"] for e in registry.history()[-2:]] == ["rollback", "rollback"]


def test_archive_refuses_labelled_versions_and_the_rollback_target(registry):
    for _ in range(2):
        version = export(registry)
        registry.promote(version, "staging")
        registry.promote(version, "production")
    export(registry)
    with pytest.raises(RegistryError, match="version 2 is staging, production; point that"):
        registry.archive(2)
    with pytest.raises(RegistryError, match="version 1 is the production rollback target"):
        registry.archive(1)
    registry.promote(3, "staging")
    registry.promote(3, "production")
    registry.archive(1)
    with pytest.raises(RegistryError, match="version 1 is archived"):
        registry.promote(1, "staging")
    with pytest.raises(RegistryError, match="version 1 is archived"):
        registry.archive(1)


def test_unknown_version_stage_and_base_path_messages(registry, tmp_path):
    export(registry)
    export(registry)
    with pytest.raises(RegistryError, match=r"unknown version 7; versions: 1, 2 \(see `list`\)"):
        registry.promote(7, "staging")
    valid = "valid stages: development, staging, canary, production"
    with pytest.raises(RegistryError, match=f"unknown stage 'prod'; {valid}"):
        registry.promote(1, "prod")
    with pytest.raises(RegistryError, match=f"unknown stage 'qa'; {valid}"):
        registry.rollback("qa")
    with pytest.raises(RegistryError, match="base path .*nowhere does not exist"):
        Registry(tmp_path / "nowhere", registry.config_file).versions()


# ---------------------------------------------------------------------------------------------
# Concurrency and crashes
# ---------------------------------------------------------------------------------------------


def check_consistent(registry: Registry, promotions: int) -> None:
    state = json.loads((registry.base_path / "registry.json").read_text())
    events = [e for e in state["history"] if e.get("stage") == "staging"]
    assert len(events) == promotions
    # Each promotion saw the one before it: a chain, nothing lost.
    assert [e.get("previous") for e in events[1:]] == [e["version"] for e in events[:-1]]
    assert state["labels"]["staging"] == events[-1]["version"]
    assert served(registry)[1]["staging"] == events[-1]["version"]


def test_concurrent_promotions_from_processes_do_not_corrupt_anything(registry):
    versions = [export(registry) for _ in range(4)]
    procs = [
        subprocess.Popen(
            cli(registry, "promote", str(v), "--to", "staging"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for v in versions
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    check_consistent(registry, 4)


def test_concurrent_promotions_from_threads_with_separate_registries(registry):
    versions = [export(registry) for _ in range(6)]

    def promote(version: int) -> None:
        Registry(
            registry.base_path, registry.config_file, serving_base_path="/models/geojax"
        ).promote(version, "staging")

    with futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(promote, versions))
    check_consistent(registry, 6)


KILLED_EXPORT = """
import os, signal, sys
from geojax.release.registry import Registry
incoming = Registry(sys.argv[1], sys.argv[2]).incoming_dir()
(incoming / "saved_model.pb").write_bytes(b"half a gra")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_interrupted_export_never_becomes_a_version(registry):
    export(registry)
    config_before = registry.config_file.read_text()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, str(registry.base_path), str(registry.config_file)],
        cwd=REPO,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = registry.base_path.glob(".incoming-*")
    assert [row.version for row in registry.versions()] == [1]
    assert registry.config_file.read_text() == config_before
    # Fresh leftovers are kept (an export may still be writing); stale ones go at the next
    # register, and the leftover never took a version number.
    assert export(registry) == 2 and leftover.exists()
    an_hour_ago = time.time() - 3601
    for path in (leftover, leftover / "saved_model.pb"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert export(registry) == 3 and not leftover.exists()
    assert served(registry) == ([3], {"development": 3})


def test_gc_removes_incoming_dirs_older_than_the_limit(registry):
    export(registry)
    left = registry.incoming_dir()
    # An export killed while writing its assets leaves their folder beside the incoming one.
    assets = left.parent / f"{left.name}-assets"
    assets.mkdir()
    (assets / "labels.txt").write_text("circle\n")
    assert registry.gc() == []
    assert registry.gc(max_age_seconds=0) == sorted([left, assets])
    assert not left.exists() and not assets.exists()


# ---------------------------------------------------------------------------------------------
# Waiting for TF Serving (a stand-in ModelService: the real server cannot run here)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def model_service(registry):
    """A gRPC ModelService answering GetModelStatus from the config file, as a server that
    loads instantly would; `mode` 'never' keeps versions LOADING, 'broken' fails the load."""
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    seen: list[tuple[int, list[int], dict[str, int]]] = []
    mode = {"value": "loads"}
    state = get_model_status_pb2.ModelVersionStatus

    class Service(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            version = request.model_spec.version.value
            versions, labels = served(registry)
            seen.append((version, versions, labels))
            if version not in versions:
                context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} not found")
            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add(version=version)
            if mode["value"] == "loads":
                status.state = state.AVAILABLE
            elif mode["value"] == "never":
                status.state = state.LOADING
            else:
                status.state = state.END
                status.status.error_code = 3
                status.status.error_message = "Op type not registered 'XlaCallModule'"
            return response

    server = grpc.server(futures.ThreadPoolExecutor(2))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    registry.server = f"127.0.0.1:{port}"
    registry.load_timeout_seconds = 0.5
    yield seen, mode
    server.stop(None)


def test_label_moves_wait_until_the_server_has_loaded_the_version(registry, model_service):
    seen, mode = model_service
    export(registry)
    registry.promote(1, "staging")
    registry.promote(1, "production")
    export(registry)
    # While the server was asked about version 2, it was listed and no label pointed at it yet.
    assert seen[-1] == (2, [1, 2], {"development": 1, "staging": 1, "production": 1})
    assert served(registry) == ([1, 2], {"development": 2, "staging": 1, "production": 1})

    for failing, message in (("never", "did not make geojax version.*AVAILABLE within 0.5 s"),
                             ("broken", r"failed to load geojax version \d+: Op type")):  # fmt: skip
        mode["value"] = failing
        config_before, labels_before = registry.config_file.read_text(), registry.labels()
        with pytest.raises(RegistryError, match=f"registered but not labelled.*{message}"):
            export(registry)
        assert registry.config_file.read_text() == config_before
        assert registry.labels() == labels_before
        # The number was spent; the unlabelled version can be labelled once it loads.
        mode["value"] = "loads"
        registry.promote(max(row.version for row in registry.versions()), "development")
    assert registry.labels()["development"] == 4


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_list(registry, capsys):
    export(registry, 0.93)
    export(registry, None)
    registry.promote(1, "staging")
    args = ["--base_path", str(registry.base_path), "--config_file", str(registry.config_file)]
    assert registry_lib.main([*args, "list"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "version", "stages", "created", "accuracy", "parity", "size", "workdir"
    ]  # fmt: skip
    assert first.split()[:2] == ["1", "staging"] and "0.9300" in first and "1.0e-06" in first
    assert second.split()[:2] == ["2", "development"] and "runs/x" in second


def test_cli_errors_exit_2_with_a_message_and_no_traceback(registry, tmp_path, capsys):
    export(registry)
    args = ["--base_path", str(registry.base_path), "--config_file", str(registry.config_file)]
    with pytest.raises(SystemExit) as exit_info:
        registry_lib.main([*args, "promote", "9", "--to", "staging"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "geojax.registry: unknown version 9; versions: 1 (see `list`)\n"
    with pytest.raises(SystemExit) as exit_info:
        registry_lib.main([*args, "promote", "1", "--to", "live"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("geojax.registry: unknown stage 'live'")
    with pytest.raises(SystemExit) as exit_info:
        registry_lib.main([*args, "promote", "1"])
    assert exit_info.value.code == 2
    missing = Registry(tmp_path / "missing", registry.config_file)
    result = run_cli(missing, "list")
    assert result.returncode == 2
    assert result.stderr.startswith("geojax.registry: base path") and "Traceback" not in result.stderr


def test_lock_is_exclusive_across_registry_objects(registry):
    export(registry)
    other = Registry(registry.base_path, registry.config_file)
    inside = threading.Event()
    with registry._locked():
        thread = threading.Thread(target=lambda: (other.gc(), inside.set()))
        thread.start()
        assert not inside.wait(0.3)
    thread.join(5)
    assert inside.is_set()


def test_canary_takes_a_staging_version_feeds_production_and_can_be_removed(registry):
    for _ in range(2):
        export(registry)
    registry.promote(1, "staging")
    registry.promote(1, "production")
    with pytest.raises(RegistryError, match="version 2 is not in staging"):
        registry.promote(2, "canary")
    registry.promote(2, "staging")
    registry.promote(2, "canary")
    assert served(registry)[1] == {"development": 2, "staging": 2, "canary": 2,
                                   "production": 1}
    assert registry.remove_label("canary") == 2
    assert "canary" not in registry.labels()
    with pytest.raises(RegistryError, match="only canary can be removed"):
        registry.remove_label("production")
    assert registry.rollback("canary") == 2  # the trial resumes
    registry.promote(2, "production")  # from canary, through the metrics gate as any promotion
    assert registry.labels()["production"] == 2
    actions = [(h["action"], h.get("stage")) for h in registry.history()]
    assert ("remove", "canary") in actions and ("rollback", "canary") in actions
