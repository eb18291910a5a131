"""Evaluate a training workdir's best checkpoint (calibrated: its logits divided by the
temperature fitted after training) on a folder of images, with the metrics and report of
`geojax.core.metrics`:

    python -m geojax.evaluate --workdir runs/quick --data_dir data/shapes --output report.json
                              [--no_shape_dir DIR]

where the folder holds `CLASS/*.png` or `SPLIT/CLASS/*` (any size or mode; images are
prepared the way the model was trained). When it holds a `manifest.csv` (file, and any of
kind, style, background, extent; `scripts/heldout_shapes.py` and `scripts/seed_style_shapes.py`
write one), the report adds accuracy by size band (extent: the shape's longest side over the
frame's) and by style, so weak spots show. `--no_shape_dir` is a folder of shape-free images:
the report says how many of them were named a shape (top probability >= SHAPE_THRESHOLD).
The evaluation itself is `geojax.evaluation.report.evaluate_folder`; a user error (no
checkpoint, an unreadable image, a missing folder) prints `geojax.evaluate: message` and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from geojax.core.errors import user_errors
from geojax.evaluation.report import evaluate_folder


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `evaluate_folder` from the flags; a user error exits with its message."""
    flag_values = _parser().parse_args(argv)
    with user_errors("geojax.evaluate", FileNotFoundError, ValueError):
        report = evaluate_folder(
            flag_values.workdir, flag_values.data_dir, flag_values.output,
            split=flag_values.split, checkpoint=flag_values.checkpoint,
            batch_size=flag_values.batch_size, no_shape_dir=flag_values.no_shape_dir,
        )
    print(f"accuracy {report['accuracy']:.4f} on {report['num_examples']} images, ECE "
          f"{report['expected_calibration_error']:.4f} (uncalibrated "
          f"{report['ece_uncalibrated']:.4f}, temperature {report['temperature']:.3f}), "
          f"checkpoint step {report['checkpoint_step']}; report: {flag_values.output}")
    for key in ("by_size", "by_kind", "by_style"):
        if key in report:
            print(f"  {key[3:]:<6} " + ", ".join(f"{name} {v['accuracy']:.3f} ({v['n']})"
                                                for name, v in report[key].items()))
    if "no_shape" in report:
        blank = report["no_shape"]
        print(f"  no-shape images named a shape: {blank['named_a_shape']} of {blank['n']} "
              f"(max confidence {blank['max_confidence']:.3f})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True,
                        help="Training workdir (holds config.json, checkpoints/).")
    parser.add_argument("--data_dir", required=True,
                        help="Folder of CLASS/* or SPLIT/CLASS/* images.")
    parser.add_argument("--output", required=True,
                        help="Report JSON path; the PNGs are written beside it.")
    parser.add_argument("--split", default="test",
                        help="Split folder to use when DATA_DIR holds splits (default: test).")
    parser.add_argument("--checkpoint", default="best",
                        help="'best', 'latest' or a step number (default: best).")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="Images per forward pass (default: 64).")
    parser.add_argument("--no_shape_dir", help="Folder of shape-free images: how many are "
                        "named a shape (top probability >= SHAPE_THRESHOLD).")
    return parser


if __name__ == "__main__":
    sys.exit(main())
