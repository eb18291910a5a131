"""The model artefact's contract, in one place: what every exported version directory holds and
how versions are named. Writers (`geojax.release`: export, registry) and readers
(`geojax.predict`, `geojax.tfserving`, `geojax.serving.client`) share these names; nothing
here imports more than the standard library.

    BASE_PATH/<version>/saved_model.pb       the SavedModel (signatures below)
    BASE_PATH/<version>/assets.extra/...     TF Serving's warm-up requests
    BASE_PATH/<version>/metadata.json        what the registry records (see export/README.md)

A version is a directory named by ASCII digits, as TF Serving reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

SAVED_MODEL_FILE = "saved_model.pb"
SERVING_SIGNATURE = "serving_default"  # encoded images in
PIXELS_SIGNATURE = "predict_pixels"  # float32 pixels at the model's input size in
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def versions_on_disk(base_path: str | os.PathLike) -> dict[int, Path]:
    """The numbered version directories of a model base path, by version. Only ASCII digits
    name a version ('2', not '²' or '.tmp-2'); anything else there is ignored."""
    try:
        children = list(Path(base_path).iterdir())
    except OSError:
        return {}
    return {int(c.name): c for c in children
            if c.name.isascii() and c.name.isdigit() and c.is_dir()}
