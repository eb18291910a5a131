"""From a trained workdir to registered versions: `python -m geojax.export`."""

import json
import shutil

import numpy as np
import pytest
from tensorflow_serving.config import model_server_config_pb2

from geojax.export import main
from geojax.release.export import PARITY_TOLERANCE, export_workdir
from geojax.training.loop import train_and_evaluate
from geojax.training.workdir import write_calibration
from scripts.demo import exported_version
from tests.train_setup import load_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained")
    train_and_evaluate(load_config("quick"), str(path))
    return path


def test_exports_count_up_with_metadata_and_config(workdir, tmp_path, capsys):
    from google.protobuf import text_format

    base, config_file = tmp_path / "geojax", tmp_path / "models.config"
    assert export_workdir(str(workdir), str(base), str(config_file)) == 1
    capsys.readouterr()
    assert main(["--workdir", str(workdir), "--base_path", str(base),
                 "--config_file", str(config_file)]) == 0
    # `make demo` promotes the version the command reports.
    assert exported_version(capsys.readouterr().out) == "2"
    assert sorted(p.name for p in base.iterdir() if p.name.isdigit()) == ["1", "2"]
    meta = json.loads((base / "2" / "metadata.json").read_text())
    assert 0 <= meta["parity"] <= PARITY_TOLERANCE
    assert meta["input_size"] == 16 and meta["workdir"] == str(workdir)
    report = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert meta["metrics"]["accuracy"] == report["accuracy"]
    assert meta["config"]["model"]["name"] == "light"
    profile = meta["reference_profile"]
    assert profile["count"] == 20 and np.isclose(sum(profile["class_distribution"]), 1)
    assert "saved_model.pb" in " ".join(meta["sha256"])
    config = text_format.Parse(config_file.read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert dict(model.version_labels) == {"development": 2}
    assert list(model.model_version_policy.specific.versions) == [2]


def test_missing_or_corrupt_checkpoint_fails_clearly(workdir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(empty), "--base_path", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert "geojax.export:" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    for f in (broken / "checkpoints").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 16)
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(broken), "--base_path", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("geojax.export:") and "Traceback" not in err
    assert not (tmp_path / "b").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "b").iterdir())


def test_the_export_serves_the_calibrated_model_and_says_when_no_shape_was_found(workdir,
                                                                                 tmp_path):
    import jax

    from geojax import SHAPE_THRESHOLD
    from geojax.inference.workdir import serving_model
    from geojax.release.saved_model import saved_model_probabilities

    calibrated = tmp_path / "calibrated"
    shutil.copytree(workdir, calibrated)
    raw = serving_model(str(workdir))
    write_calibration(str(calibrated), raw.step, 4.0, {})
    served = serving_model(str(calibrated))
    assert served.temperature == 4.0
    pixels = np.random.default_rng(0).random((5, 16, 16, 3), dtype=np.float32)
    raw_logits = np.asarray(jax.jit(raw.apply_fn)(raw.variables, pixels))
    # The training fitted its own temperature; the served logits are the network's over 4.
    network_logits = raw_logits * raw.temperature
    np.testing.assert_allclose(np.asarray(served.apply_fn(served.variables, pixels)),
                               network_logits / 4.0, rtol=1e-5, atol=1e-6)
    base = tmp_path / "geojax"
    version = export_workdir(str(calibrated), str(base), str(tmp_path / "models.config"))
    assert json.loads((base / str(version) / "metadata.json").read_text())["temperature"] == 4.0
    probabilities = saved_model_probabilities(base / str(version), pixels)
    expected = np.exp(network_logits / 4.0 - (network_logits / 4.0).max(-1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(-1, keepdims=True),
                               atol=1e-5)

    import tensorflow as tf

    loaded = tf.saved_model.load(str(base / str(version)))
    found = loaded.signatures["predict_pixels"](images=tf.constant(pixels))["shape_found"].numpy()
    np.testing.assert_array_equal(found, probabilities.max(-1) >= SHAPE_THRESHOLD)
