"""What the 8-view average (`model.tta="d4"`) costs where it is served: the same trained
weights exported twice, with and without it, and each SavedModel's `predict_pixels` timed in
this process (TensorFlow, as TF Serving runs it) at batch 1 (one /predict) and batch 32 (a
/detect's crops).

    python -m scripts.bench_tta runs/demo/quick [--repeats 50]

The workdir is copied to a scratch folder for the second export, with `model.tta` set in the
copy's config.json; neither export touches a registry in use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from geojax.core.artefact import PIXELS_SIGNATURE
from geojax.core.console import quiet_start_up
from geojax.release.export import export_workdir


def _with_tta(workdir: Path, tta: str, scratch: Path) -> Path:
    copy = scratch / f"workdir-{tta}"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("wandb", "eval", "*.tfevents*"))
    config = json.loads((copy / "config.json").read_text())
    config["model"]["tta"] = tta
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def _median_ms(fn, images, repeats: int) -> float:
    fn(images=images)  # warm: the first call traces
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images=images)["probabilities"].numpy()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    quiet_start_up()
    import tensorflow as tf  # here: the command line parses before the long TF import
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for tta in ("none", "d4"):
            base = scratch / f"models-{tta}" / "geojax"
            version = export_workdir(str(_with_tta(args.workdir, tta, scratch)), str(base),
                                     str(base.parent / "models.config"))
            meta = json.loads((base / str(version) / "metadata.json").read_text())
            size = int(meta["input_size"])
            fn = tf.saved_model.load(str(base / str(version))).signatures[PIXELS_SIGNATURE]
            rng = np.random.default_rng(0)
            rows[tta] = [_median_ms(fn, tf.constant(rng.random((n, size, size, 3), np.float32)),
                                    args.repeats) for n in (1, 32)]
    print(f"$ python -m scripts.bench_tta {args.workdir} --repeats {args.repeats}\n")
    print("| SavedModel predict_pixels | batch 1 ms | batch 32 ms |")
    print("|---|---:|---:|")
    for tta, (one, many) in rows.items():
        print(f"| tta={tta} | {one:.2f} | {many:.2f} |")
    print(f"| d4 / none | {rows['d4'][0] / rows['none'][0]:.2f}x | "
          f"{rows['d4'][1] / rows['none'][1]:.2f}x |")


if __name__ == "__main__":
    main()
