"""The detection proxy: a FastAPI service in front of TF Serving (or geojax.model_server).

    python -m geojax.proxy --port 8000        # settings from GEOJAX_* environment variables

Endpoints: POST /detect, /predict, /predict/batch; GET /health (alive), /ready (model server
reachable and the model loaded), /classes, /model/info, /drift, /metrics (Prometheus), /docs.

The application is `geojax.serving.app.create_app`; its settings, the GEOJAX_* variables, are
listed in `geojax.serving.settings`. A setting it cannot run with stops the command with
`geojax.proxy: message` and exit status 2.
"""

from __future__ import annotations

import argparse

import uvicorn

from geojax.core.errors import user_errors
from geojax.serving.app import create_app
from geojax.serving.settings import ProxySettings

PROG = "geojax.proxy"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m geojax.proxy",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="bind address")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    args = parser.parse_args(argv)
    # ValueError: settings checked where they are used (the drift window, the protocol).
    with user_errors(PROG, ValueError):
        app = create_app(ProxySettings.from_env())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
