"""Dataset and scene writers, the CLI, and reading folders back."""

import json

import cv2
import numpy as np
import pytest

from geojax import CLASSES
from geojax.core.images import ImageError
from geojax.data import list_folder, load_folder
from geojax.data.__main__ import main as data_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert data_cli(["generate", "--out", str(out), "--per_class", "20", "--img_size", "64",
                     "--workers", "2"]) == 0
    return out


def test_generate_writes_the_layout_with_correct_counts(dataset):
    expected = {"train": 14, "val": 3, "test": 3}
    for split, n in expected.items():
        for name in CLASSES:
            files = sorted((dataset / split / name).iterdir())
            assert [f.name for f in files] == [f"{i:04d}.png" for i in range(n)]
    meta = json.loads((dataset / "metadata.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["img_size"] == 64
    assert meta["per_class"] == 20 and meta["seed"] == 0
    assert {s: meta["splits"][s]["total"] for s in expected} == {"train": 140, "val": 30,
                                                                   "test": 30}
    assert len(meta["samples"]) == 200
    for sample in meta["samples"][:20]:
        image = cv2.imread(str(dataset / sample["file"]))
        assert image.shape == (64, 64, 3)
        assert sample["file"].split("/")[1] == CLASSES[sample["label"]]
        x0, y0, x1, y1 = sample["bbox"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_generation_is_deterministic_whatever_the_worker_count(dataset, tmp_path):
    assert data_cli(["generate", "--out", str(tmp_path), "--per_class", "20", "--img_size", "64",
                     "--workers", "1"]) == 0
    for rel in ["train/star/0003.png", "val/circle/0000.png", "test/rhombus/0002.png"]:
        assert (tmp_path / rel).read_bytes() == (dataset / rel).read_bytes()


def test_readers_read_what_the_writer_wrote(dataset):
    train = load_folder(dataset, 64, "train")
    assert train["image"].shape == (140, 64, 64, 3) and train["image"].dtype == np.uint8
    assert np.bincount(train["label"]).tolist() == [14] * 10
    first = cv2.imread(str(dataset / "train/circle/0000.png"))[..., ::-1]
    assert np.array_equal(train["image"][0], first)
    assert len(list_folder(dataset, "test")) == 30


def test_user_folder_subset_of_classes_any_size(tmp_path):
    (tmp_path / "star").mkdir()
    (tmp_path / "circle").mkdir()
    cv2.imwrite(str(tmp_path / "star/photo.jpg"), np.full((300, 200, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "circle/scan.png"), np.full((50, 80), 10, np.uint8))
    data = load_folder(tmp_path, 32)
    assert data["image"].shape == (2, 32, 32, 3)
    assert data["label"].tolist() == [CLASSES.index("circle"), CLASSES.index("star")]


def test_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "trapezoid").mkdir()
    with pytest.raises(ValueError, match="trapezoid: not a class folder"):
        list_folder(tmp_path)
    (tmp_path / "trapezoid").rmdir()
    (tmp_path / "square").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        list_folder(tmp_path)
    (tmp_path / "square/broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="broken.png"):
        load_folder(tmp_path, 32)
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        list_folder(tmp_path / "nope")


def test_scenes_cli_writes_coco(tmp_path, capsys):
    assert data_cli(["scenes", "--out", str(tmp_path), "--count", "3", "--width", "160",
                     "--height", "120", "--max_shapes", "4", "--workers", "1"]) == 0
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    assert len(coco["images"]) == 3
    for image in coco["images"]:
        assert cv2.imread(str(tmp_path / image["file_name"])).shape == (120, 160, 3)
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x + w <= 160 and y + h <= 120
        assert 1 <= ann["category_id"] <= 10
    assert "wrote 3 scenes" in capsys.readouterr().out


def test_cli_rejects_bad_values(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        data_cli(["generate", "--out", str(tmp_path), "--per_class", "-1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("geojax.data: per_class must be a positive integer")
    with pytest.raises(SystemExit):
        data_cli(["generate", "--out", str(tmp_path), "--img_size", "big"])
