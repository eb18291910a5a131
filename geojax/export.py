"""Export a trained workdir to TF Serving: a jax2tf SavedModel as the registry's next version.

    python -m geojax.export --workdir runs/quick [--base_path export/geojax]
                            [--config_file serving/models.config] [--checkpoint best]

The SavedModel's two signatures (`serving_default`: encoded images; `predict_pixels`: float32
pixels), its assets and warm-up requests: `geojax.release.saved_model`. The parity check against
JAX (a failing export is deleted, never registered) and the version's metadata:
`geojax.release.export`. A user error (no checkpoint, a failed parity check, a registry that
refuses) exits 2 with `geojax.export: ...` on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from geojax.core.console import quiet_start_up
from geojax.core.errors import user_errors

PROG = "geojax.export"
"""The name a user error's message starts with on stderr (`geojax.export: ...`)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geojax.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training workdir to export")
    parser.add_argument("--base_path", default="export/geojax",
                        help="TF Serving model base path (numbered versions)")
    parser.add_argument("--config_file", default="serving/models.config",
                        help="TF Serving model config file the registry rewrites")
    parser.add_argument("--model_name", default="geojax", help="model name in TF Serving")
    parser.add_argument("--checkpoint", default="best",
                        help="'best', 'latest' or a step number")
    parser.add_argument("--server", default="auto",
                        help="gRPC host:port of a running model server: wait for the new "
                             "version to load before labelling it; 'auto' (default): "
                             "$GEOJAX_MODEL_SERVER or localhost:8500 if a server listens there; "
                             "'none': never wait")
    args = parser.parse_args(argv)
    quiet_start_up()  # TensorFlow's and JAX's C++ start-up lines
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's read-only checkpoint notes
    logging.basicConfig(format="%(message)s")  # the registry's notes, as plain lines
    # Imported after quiet_start_up (deliberately deferred): it loads JAX and TensorFlow.
    from geojax.release.export import directory_size, export_workdir, format_bytes

    with user_errors(PROG, FileNotFoundError):
        version = export_workdir(args.workdir, args.base_path, args.config_file,
                                 args.model_name, args.checkpoint,
                                 None if args.server == "none" else args.server)
    version_dir = Path(args.base_path) / str(version)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    print(f"wrote {version_dir} ({format_bytes(directory_size(version_dir))}): a SavedModel "
          f"with signatures serving_default and predict_pixels")
    print(f"parity with JAX: max |delta p| {metadata['parity']:.2e} on "
          f"{metadata['parity_check']['batch']} validation images "
          f"(tolerance {metadata['parity_check']['tolerance']:g})")
    print(f"{args.model_name} version {version}, labelled development "
          f"(python -m geojax.registry --base_path {args.base_path} promote {version} "
          "--to staging)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
