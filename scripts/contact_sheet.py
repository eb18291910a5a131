"""Write a PNG grid of rendered samples: one row per class, to eyeball variety and correctness.

    python -m scripts.contact_sheet --out docs/contact_sheet.png --per_class 12 --img_size 96
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from geojax import CLASSES
from geojax.data.render import render_shape


def contact_sheet(per_class: int, img_size: int, seed: int) -> np.ndarray:
    """An RGB uint8 grid: a labelled row of `per_class` samples for each class."""
    label_width = 110
    pad = 2
    cell = img_size + pad
    sheet = np.full((len(CLASSES) * cell + pad, label_width + per_class * cell + pad, 3), 255,
                    np.uint8)
    for row, name in enumerate(CLASSES):
        y = pad + row * cell
        cv2.putText(sheet, name, (6, y + img_size // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for col in range(per_class):
            rng = np.random.default_rng([seed, row, col])
            sample = render_shape(rng, img_size, name)
            x = label_width + pad + col * cell
            sheet[y:y + img_size, x:x + img_size] = sample.image
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/contact_sheet.png", help="PNG file to write")
    parser.add_argument("--per_class", type=int, default=12, help="samples per class (columns)")
    parser.add_argument("--img_size", type=int, default=96, help="side of each sample in px")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    sheet = contact_sheet(args.per_class, args.img_size, args.seed)
    if not cv2.imwrite(args.out, sheet[..., ::-1]):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
