"""The local stand-in for TensorFlow Serving (`geojax.tfserving`): the command.

    python -m geojax.model_server --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --model_config_file_poll_wait_seconds=10 \\
        --allow_version_labels_for_unavailable_models=true [--host=127.0.0.1]
    python -m geojax.model_server --model_name=geojax --model_base_path=export/geojax

It takes TF Serving's flags (`geojax.tfserving.config`) and serves until stopped
(`geojax.tfserving.server`). A server that cannot start (a bad config file, no model path, a
model that does not load, a port that cannot be bound) prints `geojax.model_server: failed to
start: CODE: reason` on stderr and exits 2, as every geojax command does with a user's mistake
(TF Serving's binary logs "Failed to start server" and exits 1).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from geojax.core.errors import exit_with, user_errors
from geojax.tfserving.config import build_parser
from geojax.tfserving.server import serve
from geojax.tfserving.status import ServingError, code_name

PROG = "geojax.model_server"



def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s model_server] %(message)s")
    if args.version:
        print("geojax.model_server (stand-in for tensorflow_model_server)")
        return 0
    with user_errors(PROG, OSError):
        try:
            return serve(args)
        except ServingError as err:  # what TF Serving reports as "Failed to start server"
            cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
            exit_with(PROG, f"failed to start: {code_name(err.code)}: {err.message}{cause}")


if __name__ == "__main__":
    sys.exit(main())
