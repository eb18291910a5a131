"""Command line for the data step.

    python -m geojax.data generate --out data/synthetic --per_class 1000 --img_size 224 --seed 0
    python -m geojax.data scenes --out data/scenes --count 100 --width 640 --height 480
"""

from __future__ import annotations

import argparse
import sys

from geojax.core.errors import user_errors
from geojax.data.dataset import split_counts, write_dataset, write_scenes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write train/val/test (70/15/15) as SPLIT/CLASS/NNNN.png "
                         "plus metadata.json")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--per_class", type=int, default=1000, help="images per class (all splits)")
    gen.add_argument("--img_size", type=int, default=224, help="side of the square images in px")
    gen.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    gen.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    scenes = sub.add_parser("scenes", help="write detection scenes: images/NNNN.png plus a "
                            "COCO-style annotations.json")
    scenes.add_argument("--out", required=True, help="output folder")
    scenes.add_argument("--count", type=int, default=100, help="number of scenes")
    scenes.add_argument("--width", type=int, default=640, help="scene width in px")
    scenes.add_argument("--height", type=int, default=480, help="scene height in px")
    scenes.add_argument("--max_shapes", type=int, default=6, help="at most this many shapes each")
    scenes.add_argument("--overlap", action="store_true", help="let shapes overlap")
    scenes.add_argument("--seed", type=int, default=0, help="random seed")
    scenes.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with user_errors("geojax.data", ValueError, OSError):
        if args.command == "generate":
            meta = write_dataset(args.out, args.per_class, args.img_size, args.seed, args.workers)
            counts = split_counts(args.per_class)
            print(f"wrote {len(meta['samples'])} images to {args.out} "
                  f"(per class: {counts['train']} train, {counts['val']} val, {counts['test']} test)")
        else:
            coco = write_scenes(args.out, args.count, args.width, args.height, args.max_shapes,
                                args.overlap, args.seed, args.workers)
            print(f"wrote {len(coco['images'])} scenes with {len(coco['annotations'])} shapes "
                  f"to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
