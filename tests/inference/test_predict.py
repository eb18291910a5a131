"""geojax.inference.predictor and the geojax.predict command on an exported SavedModel, and their
error messages."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.images import encode_png, load_image, resize_to
from geojax.data import compose_scene, render_shape
from geojax.inference.predictor import (
    ModelError,
    MultiShapeDetector,
    ShapePredictor,
    find_saved_model,
)
from geojax.predict import main

from conftest import TINY_SIZE

SIZE = TINY_SIZE


@pytest.fixture(scope="module")
def base_path(tiny_saved_model, tmp_path_factory):
    """A model base path holding version 1: the shared tiny exported model."""
    base = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_saved_model, base / "1")
    return base


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    shape = folder / "shape.png"
    shape.write_bytes(encode_png(render_shape(np.random.default_rng(0), 48).image))
    scene = folder / "scene.png"
    scene.write_bytes(encode_png(compose_scene(np.random.default_rng(1), 320, 240).image))
    broken = folder / "broken.png"
    broken.write_bytes(b"not an image at all")
    return {"shape": shape, "scene": scene, "broken": broken}


def run_cli(capsys, *argv):
    """The command's exit status (returned, or exited with), stdout and stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_find_saved_model_takes_the_highest_version(tmp_path):
    for version in ("1", "10", "9", "latest", "\u00b2", "\u0663"):  # '²' and Arabic-Indic 3
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "11").mkdir()  # unfinished: no saved_model.pb
    assert find_saved_model(tmp_path) == tmp_path / "10"
    # Only ASCII digits name a version, as TF Serving reads them; the registry and the local
    # model server list versions through the same function.
    from geojax.core.artefact import versions_on_disk
    from geojax.release.registry import Registry

    assert sorted(versions_on_disk(tmp_path)) == [1, 9, 10, 11]
    registry = Registry(tmp_path, config_file=tmp_path / "models.config")
    assert registry._versions_on_disk() == [1, 9, 10, 11]
    assert find_saved_model(tmp_path / "9") == tmp_path / "9"
    assert find_saved_model(tmp_path / "11") is None  # maybe a training workdir
    with pytest.raises(ModelError, match="no such file"):
        find_saved_model(tmp_path / "missing")


def test_predictor_matches_the_saved_model_and_resize_to(base_path, images):
    from geojax.release.saved_model import saved_model_probabilities

    predictor = ShapePredictor(base_path, batch_size=4)
    assert predictor.input_size == SIZE and predictor.class_names == CLASSES
    image = load_image(images["shape"])
    pixels = resize_to(image, SIZE)[None].astype(np.float32) / 255
    expected = saved_model_probabilities(base_path / "1", pixels)[0]
    got = predictor.predict(images["shape"])
    assert got["class"] == CLASSES[int(expected.argmax())]
    assert got["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)
    probabilities = np.array([got["probabilities"][name] for name in CLASSES])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    crops = np.random.default_rng(0).random((7, SIZE, SIZE, 3), dtype=np.float32)  # 4 + 3
    np.testing.assert_allclose(predictor.classify(crops),
                               saved_model_probabilities(base_path / "1", crops), atol=1e-5)
    result = MultiShapeDetector(predictor).detect(images["scene"], confidence=0.0)
    assert result.num_proposals > 0 and len(result.detections) > 0


def test_cli_classifies_and_prints_json(base_path, images, capsys):
    code, out, _ = run_cli(capsys, "--model", base_path, images["shape"])
    assert code == 0
    first = out.splitlines()[0]
    code, out, _ = run_cli(capsys, "--model", base_path / "1", images["shape"], images["scene"],
                           "--json")
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["image"] for r in results] == [str(images["shape"]), str(images["scene"])]
    for r in results:
        assert r["class"] in CLASSES
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["shape_found"] == (r["confidence"] >= SHAPE_THRESHOLD)
    # The text names the class, or says there is no shape below the threshold.
    shape = results[0]
    assert first.startswith(f"{images['shape']}: ")
    if shape["shape_found"]:
        assert first.split()[1] == shape["class"]
    else:
        assert f"no shape (nearest: {shape['class']}" in first


def test_cli_detects_and_annotates(base_path, images, capsys, tmp_path):
    annotated = tmp_path / "out.png"
    code, out, _ = run_cli(capsys, "--model", base_path, images["scene"], "--detect",
                           "--confidence", "0", "--annotate", annotated, "--json")
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert result["method"] == "contours" and result["num_proposals"] > 0
    for d in result["detections"]:
        assert d["class"] in CLASSES and len(d["bbox"]) == 4
        assert CLASSES[d["label"]] == d["class"]
    assert load_image(annotated).shape == load_image(images["scene"]).shape
    # The proxy's detection options: classes, max_detections, box_format, COCO results.
    first = result["detections"][0]
    code, out, _ = run_cli(capsys, "--model", base_path, images["scene"], "--detect",
                           "--confidence", "0", "--classes", first["class"],
                           "--max_detections", "1", "--box_format", "xywh", "--json")
    (picked,) = json.loads(out)["results"][0]["detections"]
    x0, y0, x1, y1 = first["bbox"]
    assert picked["class"] == first["class"] and picked["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    code, out, _ = run_cli(capsys, "--model", base_path, images["scene"], images["scene"],
                           "--detect", "--confidence", "0", "--coco")
    entries = json.loads(out)
    assert {e["image_id"] for e in entries} == {0, 1}
    assert entries[0] == {"image_id": 0, "category_id": first["label"] + 1,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "score": first["confidence"]}


@pytest.mark.parametrize("case, message", [
    ("missing_model", "no such file or directory"),
    ("not_a_model", "training workdir"),
    ("broken_image", "broken.png: not a readable image"),
    ("missing_image", "missing.png: cannot read file"),
])
def test_cli_errors_exit_2_naming_the_problem(case, message, images, capsys, tmp_path):
    # Images are read before the model is loaded: a placeholder SavedModel serves those cases.
    model, image = tmp_path / "base", images["shape"]
    (model / "1").mkdir(parents=True)
    (model / "1" / "saved_model.pb").write_bytes(b"")
    if case == "missing_model":
        model = tmp_path / "nowhere"
    elif case == "not_a_model":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "broken_image":
        image = images["broken"]
    else:
        image = tmp_path / "missing.png"
    code, out, err = run_cli(capsys, "--model", model, image)
    assert code == 2 and out == ""
    assert err.startswith("geojax.predict: ") and message in err
    assert "Traceback" not in err


def test_cli_damaged_saved_model_exits_2(images, capsys, tmp_path):
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "--model", tmp_path, images["shape"])
    assert code == 2 and "cannot load the SavedModel" in err and str(tmp_path / "3") in err


def test_cli_usage_errors(images, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "m", str(images["shape"]), "--annotate", "out.png"])
    assert exit_info.value.code == 2
    assert "add --detect" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "m", str(images["shape"]), "--detect", "--classes", "blob"])
    assert "'blob'" in capsys.readouterr().err


def test_importing_predict_does_not_import_tensorflow_or_jax():
    # TensorFlow comes only with a SavedModel, JAX only with a training workdir.
    code = ("import sys, geojax.predict, geojax.inference.predictor, geojax.detection.detect; "
            "sys.exit('tensorflow' in sys.modules or 'jax' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
