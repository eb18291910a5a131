"""Batches for training and evaluation, from the on-the-fly renderer or an image folder.

`train_batches` is an endless, seeded stream: the batch of step s depends only on (seed, s), so
any number of worker processes gives the same batches and resuming needs only the step. Each
process of a multi-host run gets its own slice of the global batch. Batches hold uint8 images
(cheap to move between processes); models take float32 in [0, 1], so the train step divides.

`eval_split` gives a fixed evaluation set: the folder's val/test split, or for the stream a set
rendered from its own seeds (never drawn in training).

Sources (`config.source`): 'stream' renders every sample; 'folder' reads `config.dir` in the
layout of `geojax.data.dataset` (our generated data or real images); 'device' renders and
augments on the accelerators inside the train step (`geojax.data.device`, augmented by the ops
of `config.device_ops`); its evaluation splits are the stream's, so all sources are scored alike.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import ml_collections
import numpy as np

from geojax.data.augment import augment, train_augmentation
from geojax.data.dataset import SPLITS, list_folder, load_folder, read_sample, stack_samples
from geojax.data.render import render_no_shape, render_shape

SOURCES = ("stream", "folder", "device")
# source='device': the counterpart of augment.train_augmentation in the ops of
# geojax.data.device.augment (text here: this module must not load JAX).
DEFAULT_DEVICE_OPS = ("flip_lr|rot90"
                      "|brightness_contrast(0.25, 0.3, p=0.5)|hsv(25, 40, 20, p=0.4)"
                      "|gray(p=0.1)|invert(p=0.1)|blur((0.3, 1.5), p=0.2)"
                      "|noise((0.02, 0.08), p=0.2)")
_EVAL_STREAM_ID = {"val": 1001, "test": 1002, "no_shape": 1003}  # apart from the dataset writer's (seed, label, i)
Batch = dict[str, np.ndarray]


def default_data_config() -> ml_collections.ConfigDict:
    """Every field the data pipeline reads, with defaults."""
    return ml_collections.ConfigDict({
        "source": "stream",  # 'stream' | 'folder' | 'device'
        "dir": "",  # the dataset folder for source='folder'
        "img_size": 64,
        "augment": True,
        "effects": True,  # renderer blur / noise / JPEG
        "size_range": (0.2, 0.95),  # shape extent as a fraction of the frame
        # Training images with no whole shape (label geojax.NO_SHAPE, uniform target): bare
        # backgrounds, fragments cut by the border and stripes, so "no shape" gets no
        # confident class.
        "no_shape_fraction": 0.15,
        "workers": 2,  # loader processes; 0 renders in the calling process
        "prefetch": 4,  # batches in flight
        "eval_size": 500,  # images per rendered val/test split (source='stream' or 'device')
        # source='device': augmentation ops, '|'-separated (geojax.data.device.augment)
        "device_ops": DEFAULT_DEVICE_OPS,
    })


def check_data_config(config: ml_collections.ConfigDict) -> None:
    """Fail early, naming the field, on a config the pipeline cannot use."""
    if config.source not in SOURCES:
        raise ValueError(f"data.source={config.source!r} is not one of {', '.join(SOURCES)}")
    if config.source == "folder" and not Path(config.dir).is_dir():
        raise FileNotFoundError(f"data.dir={config.dir!r} is not a folder (data.source='folder')")
    if int(config.img_size) < 8:
        raise ValueError(f"data.img_size must be >= 8, got {config.img_size}")
    if int(config.workers) < 0 or int(config.prefetch) < 1:
        raise ValueError("data.workers must be >= 0 and data.prefetch >= 1")
    no_shape = float(config.get("no_shape_fraction", 0.0))  # absent in older workdirs' configs
    if not 0.0 <= no_shape < 1.0:
        raise ValueError(f"data.no_shape_fraction must be in [0, 1), got {no_shape}")
    low, high = (float(v) for v in config.size_range)
    if not 0 < low <= high <= 1:
        raise ValueError(f"data.size_range must satisfy 0 < low <= high <= 1, got {config.size_range}")
    if config.source == "device":
        # Imported here: loader worker processes import this module and must not load JAX.
        from geojax.data.device.augment import compose

        compose(config.device_ops)  # fails naming a bad op


class _BatchMaker:
    """Builds the batch of one step; lives in each worker process (holds the augmenter)."""

    def __init__(self, config: dict, batch_size: int, seed: int, offset: int, local: int):
        self.config = ml_collections.ConfigDict(config)
        self.global_batch = batch_size
        self.seed = seed
        self.offset = offset
        self.local = local
        self.pipeline = train_augmentation() if self.config.augment else None
        self.files = (list_folder(self.config.dir, "train")
                      if self.config.source == "folder" else None)

    @functools.lru_cache(maxsize=2)  # noqa: B019 - one maker per process, lives as long
    def _epoch_order(self, epoch: int) -> np.ndarray:
        assert self.files is not None  # only a folder source has an order
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.files))

    def sample(self, index: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, index])
        if self.files is None:
            if rng.random() < float(self.config.get("no_shape_fraction", 0.0)):
                shape = render_no_shape(rng, int(self.config.img_size),
                                        effects=bool(self.config.effects))
            else:
                shape = render_shape(rng, int(self.config.img_size),
                                     size_range=tuple(self.config.size_range),
                                     effects=bool(self.config.effects))
            image, label = shape.image, shape.label
        else:
            epoch, position = divmod(index, len(self.files))
            path, label = self.files[self._epoch_order(epoch)[position]]
            image = read_sample(path, int(self.config.img_size))
        if self.pipeline is not None:
            image, _ = augment(self.pipeline, image, int(rng.integers(2**31)))
        return image, label

    def batch(self, step: int) -> Batch:
        first = step * self.global_batch + self.offset
        return stack_samples(self.sample(first + j) for j in range(self.local))


_worker_maker: _BatchMaker | None = None


def _init_worker(*args) -> None:
    global _worker_maker
    _worker_maker = _BatchMaker(*args)


def _worker_batch(step: int) -> Batch:
    assert _worker_maker is not None
    return _worker_maker.batch(step)


class BatchStream(Iterator[Batch]):
    """Endless iterator of training batches; `position` is the step of the next batch.

    With workers > 0 the next `prefetch` batches are built in parallel processes. Close it (or
    use it as a context manager) to stop the workers.
    """

    def __init__(self, config: ml_collections.ConfigDict, batch_size: int, seed: int,
                 start_step: int, process_index: int, process_count: int):
        self._pool: ProcessPoolExecutor | None = None
        check_data_config(config)
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by the "
                             f"{process_count} processes")
        local = batch_size // process_count
        args = (config.to_dict(), batch_size, seed, process_index * local, local)
        self.position = start_step
        self._submitted = start_step
        self._pending: collections.deque[Future] = collections.deque()
        self._prefetch = int(config.prefetch)
        self._maker: _BatchMaker | None = None
        if int(config.workers) > 0:
            self._pool = ProcessPoolExecutor(
                int(config.workers), mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=args)
        else:
            self._maker = _BatchMaker(*args)

    def __next__(self) -> Batch:
        if self._pool is None:
            assert self._maker is not None
            batch = self._maker.batch(self.position)
        else:
            while len(self._pending) < self._prefetch:
                self._pending.append(self._pool.submit(_worker_batch, self._submitted))
                self._submitted += 1
            batch = self._pending.popleft().result()
        self.position += 1
        return batch

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def train_batches(
    config: ml_collections.ConfigDict,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> BatchStream:
    """Training batches {'image': uint8 [B/P, S, S, 3], 'label': int32 [B/P]} from `start_step`
    on, for process `process_index` of `process_count` (B = global `batch_size`)."""
    if config.source == "device":
        raise ValueError("data.source='device' batches are made on the accelerators: use "
                         "geojax.data.device.batches.batch_fn (the trainer does), not "
                         "train_batches")
    return BatchStream(config, batch_size, seed, start_step, process_index, process_count)


def eval_split(config: ml_collections.ConfigDict, split: str, seed: int = 0) -> Batch:
    """A fixed evaluation set {'image': uint8 [N, S, S, 3], 'label': int32 [N]} for 'val' or
    'test': the folder's split, or `eval_size` balanced, un-augmented rendered images."""
    check_data_config(config)
    if split not in SPLITS[1:]:
        raise ValueError(f"evaluation split must be 'val' or 'test', got {split!r}")
    size = int(config.img_size)
    if config.source == "folder":
        return load_folder(config.dir, size, split)
    samples = []
    for i in range(int(config.eval_size)):
        rng = np.random.default_rng([seed, _EVAL_STREAM_ID[split], i])
        shape = render_shape(rng, size, i % 10, size_range=tuple(config.size_range),
                             effects=bool(config.effects))
        samples.append((shape.image, shape.label))
    return stack_samples(samples)


def no_shape_split(config: ml_collections.ConfigDict, seed: int = 0) -> Batch:
    """A fixed set of shape-free images {'image', 'label' = NO_SHAPE} (one fifth of `eval_size`,
    drawn as training draws them) for the temperature fit: with them, calibration has to keep
    "no shape" unconfident as well as the shapes right. Empty when the config trains on no
    shape-free images (`no_shape_fraction` 0)."""
    check_data_config(config)
    size = int(config.img_size)
    count = int(config.eval_size) // 5 if float(config.get("no_shape_fraction", 0.0)) > 0 else 0
    samples = []
    for i in range(count):
        rng = np.random.default_rng([seed, _EVAL_STREAM_ID["no_shape"], i])
        blank = render_no_shape(rng, size, effects=bool(config.effects))
        samples.append((blank.image, blank.label))
    if not samples:
        return {"image": np.zeros((0, size, size, 3), np.uint8), "label": np.zeros(0, np.int32)}
    return stack_samples(samples)
