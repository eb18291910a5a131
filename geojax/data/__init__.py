"""Synthetic shape data: render, compose scenes, write and read datasets, stream batches.

    geometry     geojax.data.shapes    what each class is (outlines from parameters)
    drawing      geojax.data.render    render_shape, render_no_shape, draw_shape (OpenCV)
    scenes       geojax.data.scenes    compose_scene (ground truth for detection)
    files        geojax.data.dataset   write_dataset, write_scenes, list_folder, load_folder
    images       geojax.core.images    decode_image, load_image (any mode, size-guarded)
    augmentation geojax.data.augment   albumentations, label-preserving
    batches      geojax.data.pipeline  train_batches, eval_split
    CLI          python -m geojax.data generate | scenes

Reading images (decode, load, resize) is `geojax.core.images`, shared with the serving side.
"""

from geojax.data.dataset import list_folder, load_folder, write_dataset, write_scenes
from geojax.data.pipeline import default_data_config, eval_split, train_batches
from geojax.data.render import RenderedShape, render_no_shape, render_shape
from geojax.data.scenes import Scene, compose_scene
from geojax.data.shapes import ShapeParams, sample_shape, shape_outline

__all__ = [
    "RenderedShape",
    "Scene",
    "ShapeParams",
    "compose_scene",
    "default_data_config",
    "eval_split",
    "list_folder",
    "load_folder",
    "render_no_shape",
    "render_shape",
    "sample_shape",
    "shape_outline",
    "train_batches",
    "write_dataset",
    "write_scenes",
]
