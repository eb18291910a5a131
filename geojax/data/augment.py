"""Training augmentation with albumentations; evaluation uses none.

Only transforms that keep the class true are used. Flips and 90-degree turns of a square image
keep every shape whole and in the frame; shear, anisotropic scaling and perspective are left out
because they turn squares into rhombi or rectangles and circles into ellipses. Size, rotation and
position come from the renderer (scaling down here would smear a shape that touches the border
into the filled margin).
The rest is photometric: brightness/contrast, colour, grey, inversion, blur, noise, resolution
loss and JPEG artifacts, which is how other people's images differ from ours.
"""

from __future__ import annotations

import os

# Without this, importing albumentations checks PyPI for updates; offline, that check only waits.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import numpy as np


def train_augmentation() -> A.Compose:
    """The training pipeline: label-preserving geometry, then photometric changes."""
    return A.Compose([
        A.SquareSymmetry(p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.3, p=0.5),
        A.HueSaturationValue(hue_shift_limit=25, sat_shift_limit=40, val_shift_limit=20, p=0.4),
        A.ToGray(p=0.1),
        A.InvertImg(p=0.1),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5)),
            A.MotionBlur(blur_limit=(3, 5)),
        ], p=0.2),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.2),
        A.Downscale(scale_range=(0.5, 0.9), p=0.1),
        A.ImageCompression(quality_range=(35, 95), p=0.2),
    ])


def augment(
    pipeline: A.Compose, image: np.ndarray, seed: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply `pipeline` with its randomness fixed by `seed`; the mask follows the geometry."""
    pipeline.set_random_seed(seed)
    if mask is None:
        return pipeline(image=image)["image"], None
    out = pipeline(image=image, mask=mask.astype(np.uint8))
    return out["image"], out["mask"].astype(bool)
