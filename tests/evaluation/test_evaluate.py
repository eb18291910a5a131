"""Evaluation metrics on hand-computed cases, the report files, and the command line."""

import json
import sys

import cv2
import numpy as np
import pytest

from geojax import CLASSES, NO_SHAPE, SHAPE_THRESHOLD
from geojax.core import metrics
from geojax.evaluation.report import breakdown, evaluate_folder
from geojax.training.checkpoints import CheckpointError
from geojax.training.loop import train_and_evaluate
from geojax.training.workdir import CALIBRATION_FILENAME


def test_confusion_matrix_counts_true_by_predicted():
    cm = metrics.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_precision_recall_f1_by_hand():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    scores = metrics.precision_recall_f1(cm)
    # class 0: tp 1, predicted 2, true 2; class 1: tp 1, predicted 2, true 1; class 2: 2, 2, 3
    np.testing.assert_allclose(scores["precision"], [1 / 2, 1 / 2, 2 / 2])
    np.testing.assert_allclose(scores["recall"], [1 / 2, 1 / 1, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [0.5, 2 * 0.5 / 1.5, 2 * (2 / 3) / (5 / 3)])
    np.testing.assert_array_equal(scores["support"], [2, 1, 3])


def test_precision_of_a_never_predicted_class_is_zero_not_nan():
    scores = metrics.precision_recall_f1(np.array([[2, 0], [1, 0]]))
    np.testing.assert_array_equal(scores["precision"], [2 / 3, 0.0])
    np.testing.assert_array_equal(scores["f1"][1], 0.0)


def test_expected_calibration_error_by_hand():
    # Confidences 0.9, 0.9 (bin 14: one right, one wrong -> |0.5 - 0.9| * 2/4) and
    # 0.6, 0.6 (bin 8: both right -> |1 - 0.6| * 2/4).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.2 + 0.2)


def test_a_perfectly_calibrated_confident_model_has_zero_ece():
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert metrics.expected_calibration_error(probs, np.array([0, 1, 2, 1])) == 0.0


def test_roc_curve_and_auc_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    positives = np.array([True, False, True, False])
    fpr, tpr = metrics.roc_curve(scores, positives)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert metrics.area_under_curve(fpr, tpr) == pytest.approx(0.75)


def test_roc_tied_scores_move_together():
    fpr, tpr = metrics.roc_curve(np.array([0.5, 0.5]), np.array([True, False]))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    assert metrics.area_under_curve(fpr, tpr) == pytest.approx(0.5)


def test_classification_report_is_json_and_consistent():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % len(CLASSES)
    probs = metrics.softmax(rng.normal(size=(40, len(CLASSES))) + 3 * np.eye(len(CLASSES))[labels])
    report = metrics.classification_report(probs, labels, CLASSES)
    json.dumps(report)
    assert report["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert sum(c["support"] for c in report["per_class"].values()) == 40
    assert np.trace(report["confusion_matrix"]) == round(report["accuracy"] * 40)


def test_softmax_rows_sum_to_one_for_large_logits():
    probs = metrics.softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs[1], [0.5, 0.5])


def test_write_report_writes_json_and_pngs(tmp_path):
    labels = np.array([0, 1, 2, 0])
    probs = np.eye(3)[[0, 1, 1, 0]] * 0.8 + 0.2 / 3
    history = [{"step": 1, "split": "train", "train_loss": 1.0, "train_accuracy": 0.5},
               {"step": 1, "split": "val", "val_loss": 1.2, "val_accuracy": 0.4}]
    report = metrics.write_report(probs, labels, str(tmp_path), class_names=("a", "b", "c"),
                                   history=history, extra={"step": 1})
    assert report["accuracy"] == 0.75
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 1
    for png in ("confusion_matrix.png", "roc_curves.png", "training_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    from tests.train_setup import TINY, load_config

    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(load_config("quick", {**TINY, "total_steps": 2}), str(workdir))
    return workdir


def _write_user_images(root, split=None):
    """Images as users bring them: other sizes, grayscale 16-bit, RGBA, JPEG; some classes."""
    import cv2

    base = root / split if split else root
    rng = np.random.default_rng(0)
    for name, shape, suffix in [("circle", (40, 60), ".png"), ("square", (100, 100, 4), ".png"),
                                ("star", (77, 50, 3), ".jpg")]:
        (base / name).mkdir(parents=True)
        for i in range(2):
            if len(shape) == 2:
                image = rng.integers(0, 65535, shape, dtype=np.uint16)
            else:
                image = rng.integers(0, 255, shape, dtype=np.uint8)
            cv2.imwrite(str(base / name / f"{i}{suffix}"), image)
    return 6


@pytest.mark.parametrize("layout", ["CLASS", "SPLIT/CLASS"])
def test_evaluate_command_reports_on_a_folder_of_any_images(trained_workdir, tmp_path, layout):
    from tests.train_setup import run

    data = tmp_path / "data"
    count = _write_user_images(data, "test" if layout == "SPLIT/CLASS" else None)
    output = tmp_path / "report" / "report.json"
    output.parent.mkdir()
    result = run([sys.executable, "-m", "geojax.evaluate", f"--workdir={trained_workdir}",
                  f"--data_dir={data}", f"--output={output}"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["num_examples"] == count
    assert report["checkpoint_step"] in (1, 2)
    assert (output.parent / "confusion_matrix.png").exists()
    assert "accuracy" in result.stdout


def test_evaluate_command_exits_2_naming_a_folder_that_is_no_workdir(tmp_path):
    from tests.train_setup import run

    result = run([sys.executable, "-m", "geojax.evaluate", f"--workdir={tmp_path / 'none'}",
                  f"--data_dir={tmp_path}", f"--output={tmp_path / 'r.json'}"])
    assert result.returncode == 2
    assert f"geojax.evaluate: {tmp_path / 'none' / 'config.json'} not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_without_checkpoints_says_to_train_first(trained_workdir, tmp_path):
    (tmp_path / "config.json").write_text((trained_workdir / "config.json").read_text())
    _write_user_images(tmp_path / "data")
    with pytest.raises(CheckpointError, match="train first"):
        evaluate_folder(str(tmp_path), str(tmp_path / "data"), str(tmp_path / "r.json"))


def test_temperature_scaling_recovers_the_temperature_that_made_the_probabilities():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 10)) * 2
    labels = np.array([rng.choice(10, p=p) for p in metrics.softmax(true_logits)])
    # An overconfident model: the right logits, three times too sharp.
    overconfident = 3.0 * true_logits
    temperature = metrics.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = metrics.expected_calibration_error(metrics.softmax(overconfident), labels)
    after = metrics.expected_calibration_error(metrics.softmax(overconfident / temperature),
                                                labels)
    assert after < before / 3
    # The NLL at the fitted temperature is no worse than at its neighbours.
    nll = metrics.negative_log_likelihood
    assert nll(overconfident, labels, temperature) <= nll(overconfident, labels, 0.9 * temperature)
    assert nll(overconfident, labels, temperature) <= nll(overconfident, labels, 1.1 * temperature)


def test_breakdown_by_size_band_and_style():
    manifest = {"a.png": {"extent": "0.25", "style": "solid", "kind": "filled"},
                "b.png": {"extent": "0.45", "style": "dashed", "kind": "outline"},
                "c.png": {"extent": "0.28", "style": "solid", "kind": "filled"}}
    out = breakdown(manifest, ["a.png", "b.png", "c.png"],
                    np.array([True, False, False]))
    assert out["by_size"] == {"0-30%": {"accuracy": 0.5, "n": 2},
                              "30-50%": {"accuracy": 0.0, "n": 1}}
    assert out["by_style"]["solid"] == {"accuracy": 0.5, "n": 2}
    assert out["by_kind"]["outline"] == {"accuracy": 0.0, "n": 1}
    assert "by_background" not in out


def test_evaluate_reports_calibration_size_bands_and_shape_free_images(trained_workdir, tmp_path):
    import csv

    data = tmp_path / "data"
    _write_user_images(data)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
    with open(data / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "kind", "style", "extent"])
        for i, name in enumerate(files):
            writer.writerow([name, "filled", "solid" if i % 2 else "dashed", 0.2 + 0.1 * i])
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((30, 30, 3), 40 * i, np.uint8))
    report = evaluate_folder(str(trained_workdir), str(data), str(tmp_path / "r.json"),
                             no_shape_dir=str(blank))
    calibration = json.loads((trained_workdir / CALIBRATION_FILENAME).read_text())
    assert report["temperature"] == calibration[str(report["checkpoint_step"])]["temperature"]
    assert sum(band["n"] for band in report["by_size"].values()) == len(files)
    assert set(report["by_style"]) == {"solid", "dashed"}
    assert report["no_shape"]["n"] == 3
    assert 0 <= report["no_shape"]["named_a_shape"] <= 3


def test_shape_free_images_keep_the_temperature_from_sharpening_without_bound():
    """Every shape right (as with the 8-view average on an easy validation split): the NLL of
    shapes alone falls as T -> 0, so the fit ran to its bound (0.05) and a shape-free image's
    weak preference became a confident shape. Shape-free rows (NO_SHAPE, target uniform) hold
    T where "no shape" stays unconfident."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    shapes = rng.normal(0, 1, (500, 10))
    shapes[np.arange(500), labels] += 8.0  # all right
    blanks = rng.normal(0, 0.5, (100, 10))  # trained toward uniform: no class stands out
    alone = metrics.fit_temperature(shapes, labels)
    both = metrics.fit_temperature(np.concatenate([shapes, blanks]),
                                   np.concatenate([labels, np.full(100, NO_SHAPE)]))
    assert alone < 0.1  # the degenerate fit
    assert both > 0.5
    assert metrics.softmax(blanks / both).max() < SHAPE_THRESHOLD
    assert metrics.softmax(blanks / alone).max() > SHAPE_THRESHOLD
    # The uniform target's loss is the mean of -log p over the classes.
    uniform = np.zeros((1, 10))
    assert metrics.negative_log_likelihood(uniform, np.array([NO_SHAPE])) == pytest.approx(
        np.log(10))


def test_no_shape_split_is_fixed_shape_free_and_sized_from_eval_size():
    from geojax.data import default_data_config
    from geojax.data.pipeline import no_shape_split

    config = default_data_config()
    config.update(img_size=32, eval_size=50, no_shape_fraction=0.15)
    first, again = no_shape_split(config), no_shape_split(config)
    assert first["image"].shape == (10, 32, 32, 3) and first["image"].dtype == np.uint8
    assert (first["label"] == NO_SHAPE).all()
    np.testing.assert_array_equal(first["image"], again["image"])
    config.no_shape_fraction = 0.0
    assert len(no_shape_split(config)["image"]) == 0
