"""Generalisation of trained models on held-out images none of them was trained on.

    python -m scripts.generalisation runs/demo/quick [more workdirs] [--sets /tmp/geojax-heldout]

For each training workdir: its own test accuracy (eval/metrics.json), then, with the calibrated
best checkpoint, accuracy and ECE on two sets drawn by renderers written apart from
`geojax.data` (`scripts/seed_style_shapes.py`, the seed generator's style, and
`scripts/heldout_shapes.py`, PIL styles of its own), how many shape-free images
(`python -m scripts.seed_style_shapes blank`) are named a shape, detection mAP@0.5 on seed-style scenes
(contours), and accuracy by size band and by style. The sets are written once under `--sets`
with fixed seeds and reused. Prints markdown tables for BENCHMARKS.md ("Generalisation").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
from pathlib import Path

from geojax.evaluation.report import evaluate_folder
from scripts import bench_detection, heldout_shapes, seed_style_shapes

SETS = {  # name: (writer, kwargs) with fixed seeds
    "seed": (seed_style_shapes.write_shapes, {"per_class": 60, "seed": 0}),
    "pil": (heldout_shapes.write_heldout, {"per_class": 60, "img_size": 64, "seed": 0}),
    "blank": (seed_style_shapes.write_blank, {"count": 48, "seed": 0}),
    "scenes": (seed_style_shapes.write_scenes, {"count": 60, "seed": 0}),
}


def ensure_sets(root: Path) -> dict[str, Path]:
    """Writes each held-out set under ROOT once (a finished set has a .done marker)."""
    paths = {}
    for name, (write, kwargs) in SETS.items():
        path = root / name
        if not (path / ".done").exists():
            path.mkdir(parents=True, exist_ok=True)
            with contextlib.redirect_stdout(io.StringIO()):
                write(path, **kwargs)
            (path / ".done").touch()
        paths[name] = path
    return paths


def evaluate_workdir(workdir: str, sets: dict[str, Path]) -> dict:
    from geojax.inference.predictor import ShapePredictor

    own = json.loads((Path(workdir) / "eval" / "metrics.json").read_text())
    row = {"workdir": workdir, "own test": own["accuracy"]}
    with tempfile.TemporaryDirectory() as out:
        for name in ("seed", "pil"):
            report = evaluate_folder(workdir, str(sets[name]), f"{out}/{name}.json",
                                     no_shape_dir=str(sets["blank"]))
            row[name] = report
    predictor = ShapePredictor(workdir)
    scenes = bench_detection.load_scenes(sets["scenes"])
    row["scenes"] = bench_detection.detection_row("contours", scenes, predictor, 0.5, 0.3)
    return row


def print_tables(rows: list[dict]) -> None:
    print("| workdir | own test | seed-style | ECE raw -> calibrated | PIL set "
          "| ECE raw -> calibrated | no-shape named a shape | max conf. on no-shape "
          "| seed scenes mAP@0.5 | temperature |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        seed, pil = r["seed"], r["pil"]
        blank = seed["no_shape"]
        print(f"| {r['workdir']} | {r['own test']:.1%} | {seed['accuracy']:.1%} "
              f"| {seed['ece_uncalibrated']:.1%} -> {seed['expected_calibration_error']:.1%} "
              f"| {pil['accuracy']:.1%} "
              f"| {pil['ece_uncalibrated']:.1%} -> {pil['expected_calibration_error']:.1%} "
              f"| {blank['named_a_shape']} of {blank['n']} | {blank['max_confidence']:.2f} "
              f"| {r['scenes']['mAP@0.5']:.3f} | {seed['temperature']:.2f} |")
    for key, title in (("by_size", "size band"), ("by_style", "style")):
        print(f"\nAccuracy by {title} (seed-style set, then PIL set):\n")
        for r in rows:
            cells = [f"seed {k} {v['accuracy']:.0%}" for k, v in r["seed"].get(key, {}).items()]
            cells += [f"PIL {k} {v['accuracy']:.0%}" for k, v in r["pil"].get(key, {}).items()]
            print(f"- {r['workdir']}: " + ", ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="training workdirs")
    parser.add_argument("--sets", type=Path, default=Path(tempfile.gettempdir()) / "geojax-heldout",
                        help="where the held-out sets are written (once) and read")
    args = parser.parse_args()
    sets = ensure_sets(args.sets)
    rows = [evaluate_workdir(w, sets) for w in args.workdirs]
    print(f"$ python -m {shlex.join(['scripts.generalisation', *sys.argv[1:]])}\n")
    print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
