"""Datasets on disk: write the seed's layout, and read it (or a user's real images) back.

Layout written by `write_dataset` (and read by `list_folder` / `load_folder`):

    OUT/metadata.json
    OUT/{train,val,test}/CLASS/NNNN.png      70 / 15 / 15 % of each class

`write_scenes` writes detection scenes: OUT/images/NNNN.png and OUT/annotations.json (COCO:
`bbox` is [x, y, width, height] in pixels, `category_id` is the class label + 1).

Generation is deterministic for a seed whatever the number of worker processes: sample i of
class c is drawn from its own random stream (seed, c, i).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from geojax import CLASSES
from geojax.core.images import load_image, resize_to
from geojax.data.render import render_shape
from geojax.data.scenes import compose_scene

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FORMAT = "geojax-shapes/1"


def split_counts(per_class: int) -> dict[str, int]:
    """How many of a class's `per_class` samples go to each split: 70/15/15, rounded, with at
    least one image in val and test once there are three or more."""
    train = round(per_class * SPLIT_FRACTIONS[0])
    val = round(per_class * SPLIT_FRACTIONS[1])
    if per_class >= 3:
        val = max(val, 1)
        train = min(train, per_class - val - 1)
    return {"train": train, "val": val, "test": per_class - train - val}


def _split_of(index: int, counts: dict[str, int]) -> tuple[str, int]:
    for split in SPLITS:
        if index < counts[split]:
            return split, index
        index -= counts[split]
    raise AssertionError("index beyond the class's samples")


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write {path}")


def _write_sample(task: tuple[str, int, int, int, int, str, int]) -> dict:
    out, seed, label, index, img_size, split, split_index = task
    sample = render_shape(np.random.default_rng([seed, label, index]), img_size, label)
    rel = f"{split}/{CLASSES[label]}/{split_index:04d}.png"
    _write_png(Path(out) / rel, sample.image)
    return {"file": rel, "label": label, "bbox": list(sample.bbox)}


def _run_parallel(fn: Callable, tasks: list, workers: int, desc: str, progress: bool) -> list:
    """Map `fn` over `tasks` in worker processes (in order), with a progress bar."""
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress)
    results = []
    if workers <= 1:
        for task in tasks:
            results.append(fn(task))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            chunk = max(1, min(64, len(tasks) // (workers * 8)))
            for result in pool.map(fn, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    return results


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def write_dataset(
    out: str | os.PathLike,
    per_class: int,
    img_size: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Render `per_class` images of every class into `out` (see module docstring); returns the
    metadata it writes to `out/metadata.json`."""
    _check_positive(per_class=per_class, img_size=img_size)
    if img_size < 8:
        raise ValueError(f"img_size must be at least 8 px, got {img_size}")
    counts = split_counts(per_class)
    root = Path(out)
    for split in SPLITS:
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
    tasks = []
    for label in range(len(CLASSES)):
        for index in range(per_class):
            split, split_index = _split_of(index, counts)
            tasks.append((str(root), seed, label, index, img_size, split, split_index))
    workers = workers if workers is not None else (os.cpu_count() or 1)
    samples = _run_parallel(_write_sample, tasks, workers, "rendering", progress)
    metadata = {
        "format": FORMAT,
        "classes": list(CLASSES),
        "img_size": img_size,
        "per_class": per_class,
        "seed": seed,
        "splits": {s: {"per_class": counts[s], "total": counts[s] * len(CLASSES)} for s in SPLITS},
        "bbox_format": "x0, y0, x1, y1 in pixels, ends exclusive",
        "samples": samples,
    }
    (root / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return metadata


def _write_scene(task: tuple[str, int, int, int, int, int, bool]) -> dict:
    out, seed, index, width, height, max_shapes, overlap = task
    scene = compose_scene(np.random.default_rng([seed, index]), width, height,
                          num_shapes=(0, max_shapes), overlap=overlap)
    rel = f"images/{index:04d}.png"
    _write_png(Path(out) / rel, scene.image)
    return {"file": rel, "boxes": scene.boxes.tolist(), "labels": scene.labels.tolist()}


def write_scenes(
    out: str | os.PathLike,
    count: int,
    width: int = 640,
    height: int = 480,
    max_shapes: int = 6,
    overlap: bool = False,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write `count` detection scenes and their COCO annotations; returns the COCO dict."""
    _check_positive(count=count, width=width, height=height)
    if max_shapes < 0:
        raise ValueError(f"max_shapes must be >= 0, got {max_shapes}")
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    tasks = [(str(root), seed, i, width, height, max_shapes, overlap) for i in range(count)]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    scenes = _run_parallel(_write_scene, tasks, workers, "composing", progress)
    coco: dict = {
        "info": {"description": "geojax synthetic shape scenes", "seed": seed},
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                       for i, n in enumerate(CLASSES)],
    }
    for image_id, scene in enumerate(scenes, start=1):
        coco["images"].append({"id": image_id, "file_name": scene["file"],
                               "width": width, "height": height})
        for (x0, y0, x1, y1), label in zip(scene["boxes"], scene["labels"], strict=True):
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id,
                "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
    (root / "annotations.json").write_text(json.dumps(coco, indent=1))
    return coco


def list_folder(root: str | os.PathLike, split: str | None = None) -> list[tuple[Path, int]]:
    """(path, label) of every image under ROOT[/SPLIT]/CLASS/, sorted.

    Class folders must be class names (a subset is fine: real data may lack some classes);
    anything else fails naming the folder and the valid names.
    """
    base = Path(root)
    if split is not None:
        base = base / split
    if not base.is_dir():
        raise FileNotFoundError(f"no such data folder: {base}")
    items: list[tuple[Path, int]] = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if folder.name not in CLASSES:
            raise ValueError(
                f"{folder}: not a class folder; class folders are named {', '.join(CLASSES)}"
            )
        label = CLASSES.index(folder.name)
        items.extend((f, label) for f in sorted(folder.iterdir())
                     if f.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise ValueError(f"{base}: no images found in class folders ({', '.join(CLASSES)})")
    return items


def read_sample(path: Path, img_size: int) -> np.ndarray:
    """One image file prepared for a model: RGB uint8, padded square, `img_size` px."""
    return resize_to(load_image(path), img_size)


def load_folder(
    root: str | os.PathLike, img_size: int, split: str | None = None
) -> dict[str, np.ndarray]:
    """All images of a folder as {'image': uint8 [N, S, S, 3], 'label': int32 [N],
    'path': [N]}; an unreadable file fails naming it."""
    items = list_folder(root, split)
    return stack_samples(((read_sample(p, img_size), label) for p, label in items),
                         paths=[str(p) for p, _ in items])


def stack_samples(
    samples: Iterable[tuple[np.ndarray, int]], paths: list[str] | None = None
) -> dict[str, np.ndarray]:
    images, labels = zip(*samples, strict=True)
    batch = {"image": np.stack(images), "label": np.asarray(labels, np.int32)}
    if paths is not None:
        batch["path"] = np.asarray(paths)
    return batch

