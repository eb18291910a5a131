"""The proxy's guards before routing: the API key comparison and the request body limit."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

OPEN_PATHS = {"/health", "/ready", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
"""Paths answered without an API key: probes, metrics and the API's documentation."""


def key_matches(key: str, keys: tuple[str, ...]) -> bool:
    """Whether `key` is one of `keys`, in time that does not depend on where they differ (every
    key is compared in full, so timing reveals neither a key's prefix nor which key matched)."""
    given = key.encode()
    return any([hmac.compare_digest(given, k.encode()) for k in keys])


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, however they are sent. A body is read
    (at most `max_bytes` of it) before the app sees it, so a chunked upload without a
    Content-Length is refused here too, not half-parsed into a 400 or 500 by the app; each
    refusal is reported to `on_reject(path)` (the proxy counts it)."""

    def __init__(self, app: Any, max_bytes: int,
                 on_reject: Callable[[str], None] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send)
            return
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, send: Callable) -> None:
        if self.on_reject is not None:
            self.on_reject(scope.get("path", ""))
        body = json.dumps({"detail": f"request body over the limit of {self.max_bytes:,} "
                                     "bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
