"""Training batches and evaluation sets: deterministic, resumable, sliced per process."""

import numpy as np
import pytest

from geojax.data import default_data_config, eval_split, train_batches, write_dataset
from geojax.data.augment import augment, train_augmentation
from geojax.data.render import render_shape


def config(**overrides):
    cfg = default_data_config()
    cfg.img_size = 32
    cfg.workers = 0
    cfg.eval_size = 20
    cfg.update(overrides)
    return cfg


def take(stream, n):
    with stream:
        return [next(stream) for _ in range(n)]


def test_batches_are_the_same_with_or_without_workers_and_resume_from_a_step():
    serial = take(train_batches(config(), 8, seed=3), 3)
    parallel = take(train_batches(config(workers=2), 8, seed=3), 3)
    resumed = take(train_batches(config(), 8, seed=3, start_step=2), 1)
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert np.array_equal(serial[2]["image"], resumed[0]["image"])
    assert serial[0]["image"].shape == (8, 32, 32, 3) and serial[0]["image"].dtype == np.uint8
    assert serial[0]["label"].dtype == np.int32
    assert not np.array_equal(serial[0]["image"], serial[1]["image"])


def test_processes_get_disjoint_slices_of_the_global_batch():
    whole = take(train_batches(config(), 8, seed=1), 1)[0]
    parts = [take(train_batches(config(), 8, seed=1, process_index=p, process_count=2), 1)[0]
             for p in range(2)]
    assert np.array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        train_batches(config(), 8, seed=1, process_count=3)


def test_stream_position_counts_steps():
    stream = train_batches(config(), 4, seed=0, start_step=5)
    next(stream)
    next(stream)
    assert stream.position == 7
    stream.close()


def test_eval_split_is_fixed_balanced_and_unlike_training():
    val = eval_split(config(), "val")
    assert np.array_equal(val["image"], eval_split(config(), "val")["image"])
    assert np.bincount(val["label"]).tolist() == [2] * 10
    test = eval_split(config(), "test")
    assert not np.array_equal(val["image"], test["image"])
    with pytest.raises(ValueError, match="'val' or 'test'"):
        eval_split(config(), "train")


def test_folder_source_reads_the_dataset(tmp_path):
    write_dataset(tmp_path, per_class=4, img_size=32, workers=1, progress=False)
    cfg = config(source="folder", dir=str(tmp_path), augment=False)
    first = take(train_batches(cfg, 14, seed=0), 2)
    labels = np.concatenate([b["label"] for b in first])
    assert sorted(np.bincount(labels[:28], minlength=10)) == sorted(
        np.bincount(labels, minlength=10))
    assert np.bincount(first[0]["label"], minlength=10).sum() == 14
    assert eval_split(cfg, "test")["image"].shape == (10, 32, 32, 3)


def test_bad_data_config_fails_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="data.source='tape' is not one of stream, folder"):
        train_batches(config(source="tape"), 4, seed=0)
    with pytest.raises(FileNotFoundError, match="data.dir="):
        train_batches(config(source="folder", dir=str(tmp_path / "nope")), 4, seed=0)
    with pytest.raises(ValueError, match="data.no_shape_fraction must be in"):
        train_batches(config(no_shape_fraction=1.0), 4, seed=0)
    with pytest.raises(ValueError, match="data.size_range must satisfy"):
        train_batches(config(size_range=(0.5, 0.2)), 4, seed=0)


def test_the_stream_holds_shape_free_images_at_the_configured_rate():
    from geojax import NO_SHAPE

    with train_batches(config(no_shape_fraction=0.25, img_size=24), 200, seed=3) as stream:
        labels = next(stream)["label"]
    assert 30 <= (labels == NO_SHAPE).sum() <= 70
    with train_batches(config(no_shape_fraction=0.0, img_size=24), 50, seed=3) as stream:
        assert (next(stream)["label"] != NO_SHAPE).all()


def test_augmentation_keeps_shapes_whole_in_frame_and_isotropic():
    import cv2

    pipeline = train_augmentation()
    for seed in range(40):
        shape = render_shape(np.random.default_rng(seed), 64, "square", size_range=(0.4, 0.9))
        image, mask = augment(pipeline, shape.image, seed, shape.mask)
        assert image.shape == shape.image.shape and image.dtype == np.uint8
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]]).sum()
        border_before = np.concatenate([shape.mask[0], shape.mask[-1], shape.mask[:, 0],
                                        shape.mask[:, -1]]).sum()
        assert border <= border_before  # nothing pushed out of the frame
        (_, _), (w, h), _ = cv2.minAreaRect(np.argwhere(mask).astype(np.float32))
        assert max(w, h) / min(w, h) < 1.15  # still a square, not a rectangle


def test_augmentation_is_seeded():
    pipeline = train_augmentation()
    image = render_shape(np.random.default_rng(0), 32).image
    a, _ = augment(pipeline, image, 5)
    b, _ = augment(pipeline, image, 5)
    assert np.array_equal(a, b)
