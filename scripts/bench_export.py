"""Export figures per trained workdir: parity with JAX, export time, SavedModel size.

    python -m scripts.bench_export runs/demo/quick runs/custom-2steps

Each workdir is exported into a throwaway model base path (the real registry is not touched).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from geojax.release.export import export_workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    args = parser.parse_args()
    print("| workdir | model | input px | max abs delta p | export s | SavedModel MB |")
    print("|---|---|---|---|---|---|")
    for workdir in args.workdirs:
        with tempfile.TemporaryDirectory() as scratch:
            base = Path(scratch) / "geojax"
            version = export_workdir(workdir, str(base), str(Path(scratch) / "models.config"))
            meta = json.loads((base / str(version) / "metadata.json").read_text())
            print(f"| {workdir} | {meta['config']['model']['name']} | {meta['input_size']} "
                  f"| {meta['parity']:.1e} | {meta['export_seconds']} "
                  f"| {meta['saved_model_bytes'] / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
