"""The proxy's settings: GEOJAX_* environment variables, read once at start-up.

Settings (environment):
    GEOJAX_MODEL_SERVER        gRPC host:port of the model server       (localhost:8500)
    GEOJAX_MODEL_SERVER_REST   REST base URL of the model server        (http://localhost:8501)
    GEOJAX_PROTOCOL            grpc | rest                              (grpc)
    GEOJAX_MODEL_NAME          model name on the server                 (geojax)
    GEOJAX_MODEL_LABEL         version label to serve                   (production)
    GEOJAX_ROLLOUT             "" (none), "split:P" (P% of requests answered by the canary
                               label, per request, or sticky per X-Client-Id header) or
                               "shadow" (every request also sent to the canary in the
                               background and compared; answered from the served label)  ("")
    GEOJAX_CANARY_LABEL        the canary's version label               (canary)
    GEOJAX_MODEL_BASE_PATH     the registry's model base path: version metrics and the drift
                               reference are read from VERSION/metadata.json   (unset: none)
    GEOJAX_TIMEOUT_S           model server timeout per call            (5)
    GEOJAX_REQUEST_TIMEOUT_S   one deadline per request: no slot wait or model call starts
                               after it (a call under way ends within GEOJAX_TIMEOUT_S)  (30)
    GEOJAX_MAX_UPLOAD_BYTES    request body limit                       (10485760)
    GEOJAX_MAX_PIXELS          decoded image pixel limit                (40000000)
    GEOJAX_MAX_SIDE            decoded image side limit, px             (20000)
    GEOJAX_MAX_DECODED         full-size images held at once (decoded, not yet shrunk to the
                               model's input; each up to 3 bytes a pixel); others wait (2)
    GEOJAX_MAX_MODEL_CALLS     model server calls in flight at once; others wait (8)
    GEOJAX_MAX_BATCH           images per /predict/batch                (32)
    GEOJAX_MAX_REGIONS         crops classified per /detect             (64)
    GEOJAX_CROPS_PER_CALL      crops per model server call in /detect; 0: all in one (0)
    GEOJAX_API_KEYS            comma-separated keys; when set (or GEOJAX_API_KEYS_FILE, one
                               key per line) requests need X-API-Key   (unset: no auth)
    GEOJAX_CORS_ORIGINS        comma-separated origins allowed by CORS  (unset: CORS off)
    GEOJAX_DRIFT_WINDOW        images in the drift window               (500)
    GEOJAX_DRIFT_THRESHOLD     PSI above which a feature has drifted    (0.25)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geojax.core.errors import UserError
from geojax.serving.drift import PSI_DRIFT_THRESHOLD


class SettingsError(UserError, ValueError):
    """A GEOJAX_* variable the proxy cannot run with; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """Everything the proxy is configured by (see this module's docstring for the variables)."""

    model_server: str = "localhost:8500"
    model_server_rest: str = "http://localhost:8501"
    protocol: str = "grpc"
    model_name: str = "geojax"
    model_label: str = "production"
    rollout: str = ""
    canary_label: str = "canary"
    model_base_path: str | None = None
    timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    max_decoded: int = 2
    max_model_calls: int = 8
    max_batch: int = 32
    max_regions: int = 64
    crops_per_call: int = 0
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    drift_window: int = 500
    drift_threshold: float = PSI_DRIFT_THRESHOLD

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ProxySettings:
        """Settings from GEOJAX_* variables; a malformed value fails naming the variable."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"GEOJAX_{field.name.upper()}")
            if raw is None or field.name == "api_keys":
                continue
            try:
                if field.type in ("int", "float"):
                    values[field.name] = (int if field.type == "int" else float)(raw)
                elif field.type == "tuple[str, ...]":
                    values[field.name] = tuple(v.strip() for v in raw.split(",") if v.strip())
                else:
                    values[field.name] = raw
            except ValueError as err:
                raise SettingsError(f"GEOJAX_{field.name.upper()}={raw!r}: {err}") from err
        keys = [k.strip() for k in environ.get("GEOJAX_API_KEYS", "").split(",") if k.strip()]
        key_file = environ.get("GEOJAX_API_KEYS_FILE")
        if key_file:
            try:
                from_file = [k.strip() for k in Path(key_file).read_text().splitlines()
                             if k.strip()]
            except OSError as err:
                raise SettingsError(f"GEOJAX_API_KEYS_FILE={key_file!r}: {err.strerror}") from err
            if not from_file:
                # An empty file would silently turn authentication off.
                raise SettingsError(f"GEOJAX_API_KEYS_FILE={key_file!r} holds no keys (one per "
                                 "line); unset it to run without authentication")
            keys += from_file
        values["api_keys"] = tuple(keys)
        return cls(**values)
