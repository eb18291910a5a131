"""The local stand-in for TensorFlow Serving (`geojax.tfserving`): the command.

    python -m geojax.model_server --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --model_config_file_poll_wait_seconds=10 \\
        --allow_version_labels_for_unavailable_models=true [--host=127.0.0.1]
    python -m geojax.model_server --model_name=geojax --model_base_path=export/geojax

It takes TF Serving's flags (`geojax.tfserving.config`) and serves until stopped
(`geojax.tfserving.server`). A server that cannot start for a reason TF Serving reports (a bad
config file, no model path, a model that does not load) logs TF Serving's "Failed to start
server. Error: ..." and exits 1; a gRPC port that cannot be bound exits 2 with
`geojax.model_server: ...` on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from geojax.core.errors import user_errors
from geojax.tfserving.config import build_parser
from geojax.tfserving.server import serve
from geojax.tfserving.status import ServingError, code_name

PROG = "geojax.model_server"

log = logging.getLogger(PROG)


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
        except ServingError as err:  # TF Serving's own startup failure: its log line, exit 1
            cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
            log.error("Failed to start server. Error: %s: %s%s", code_name(err.code),
                      err.message, cause)
            return 1


if __name__ == "__main__":
    sys.exit(main())
