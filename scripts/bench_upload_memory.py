"""The proxy's peak memory per upload: a real model server and proxy, one request at a time.

    python -m scripts.bench_upload_memory --model_config runs/demo/models.config

Starts `geojax.model_server` on the model config (what `make demo` leaves in runs/demo) and
`geojax.proxy` in front of it, warms both with a small image, then for each case resets the
proxy process's peak resident set (Linux: `clear_refs` 5) and reads it again after the request
(`VmHWM` in /proc/PID/status). The figure is peak minus the resident set just before: what one
upload costs the proxy. `--checkout DIR` runs the servers from another checkout (a git worktree
of an older commit) to compare before and after on the same machine.

Cases: a 16-megapixel (4000x4000) PNG to /predict and /detect, four of them to /predict/batch,
a 20000x100 strip to /predict and /detect; with `--bad_inputs` also the bad uploads of
docs/reliability.md (empty, garbage, truncated, a 30000x30000 header, a 1,000,000x40 strip, a
2,000,000x1 BMP, an over-limit body sent in chunks), each with its status and reply.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from geojax.core.images import encode_png
from scripts.demo import free_port

REPO = Path(__file__).resolve().parent.parent



def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def servers(python: str, model_config: Path, env: dict[str, str], cwd: Path
            ) -> Iterator[tuple[int, str]]:
    grpc, rest, http = free_port(), free_port(), free_port()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115
    base = {**os.environ, **env}
    server = subprocess.Popen(
        [python, "-m", "geojax.model_server", f"--port={grpc}", f"--rest_api_port={rest}",
         f"--model_config_file={model_config}", "--host=127.0.0.1",
         "--allow_version_labels_for_unavailable_models=true"],
        stdout=log, stderr=subprocess.STDOUT, env=base, cwd=cwd)
    proxy = subprocess.Popen(
        [python, "-m", "geojax.proxy", "--host=127.0.0.1", f"--port={http}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
        env={**base, "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc}", "GEOJAX_TIMEOUT_S": "120"})
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            if proxy.poll() is not None or server.poll() is not None:
                raise RuntimeError(f"a server exited; see {log.name}")
            time.sleep(1)
        else:
            raise RuntimeError(f"the proxy never became ready; see {log.name}")
        yield proxy.pid, url
    finally:
        for process in (proxy, server):
            process.terminate()
            process.wait(timeout=30)
        log.close()


def scene(height: int, width: int, seed: int = 0) -> bytes:
    """A gradient background with a few filled shapes: a photo-sized image in a small PNG
    (the issue's case was a 6000x6000 solid PNG of 131 KB), under the default body limit."""
    import cv2

    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 140, width, dtype=np.float32)
    image = np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2).astype(np.uint8)
    side = min(height, width)
    for _ in range(5):
        centre = (int(rng.integers(side // 8, width - side // 8)),
                  int(rng.integers(side // 8, height - side // 8)))
        cv2.circle(image, centre, side // 10, tuple(int(c) for c in rng.integers(150, 256, 3)),
                   -1)
    return encode_png(image)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixel data (a decompression bomb's
    header: the guard must refuse it from the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def bad_inputs() -> list[tuple[str, str, dict]]:
    import cv2

    garbage = b"this is not an image"
    truncated = encode_png(np.zeros((64, 64, 3), np.uint8))[:80]
    long_strip = encode_png(np.zeros((40, 1_000_000, 3), np.uint8))
    bmp = cv2.imencode(".bmp", np.zeros((1, 2_000_000, 3), np.uint8))[1].tobytes()
    big = os.urandom(11 * 1024 * 1024)

    def chunks(payload: bytes) -> Iterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start:start + 65536]

    as_json = json.dumps({"image": big.hex()}).encode()
    return [
        ("/predict", "empty file", {"files": {"file": ("e.png", b"")}}),
        ("/predict", "20 bytes of text", {"files": {"file": ("g.png", garbage)}}),
        ("/predict", "truncated PNG", {"files": {"file": ("t.png", truncated)}}),
        ("/predict", "30000x30000 PNG header", {"files": {"file": ("b.png",
                                                                    png_header(30000, 30000))}}),
        ("/predict", f"1,000,000x40 PNG ({len(long_strip) // 1000} KB)",
         {"files": {"file": ("l.png", long_strip)}}),
        ("/detect", f"1,000,000x40 PNG ({len(long_strip) // 1000} KB)",
         {"files": {"file": ("l.png", long_strip)}}),
        ("/predict", "2,000,000x1 BMP", {"files": {"file": ("w.bmp", bmp)}}),
        ("/predict", "22 MB JSON in chunks, no length",
         {"content": chunks(as_json), "headers": {"content-type": "application/json"}}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_config", type=Path, default=REPO / "runs/demo/models.config")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the model server and the proxy")
    parser.add_argument("--checkout", type=Path, default=REPO,
                        help="run the servers' geojax from this checkout (a git worktree of "
                             "another commit); default this one")
    parser.add_argument("--bad_inputs", action="store_true",
                        help="also send the bad uploads (status, reply excerpt, peak memory)")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.checkout.resolve())}
    photo = scene(4000, 4000)
    strip = scene(100, 20_000, seed=1)
    cases = [
        ("/predict", "16 Mpx PNG", {"files": {"file": ("p.png", photo)}}),
        ("/detect", "16 Mpx PNG", {"files": {"file": ("p.png", photo)}}),
        ("/predict/batch", "4 x 16 Mpx PNG",
         {"files": [("files", (f"p{i}.png", photo)) for i in range(4)]}),
        ("/predict", "20000x100 PNG", {"files": {"file": ("s.png", strip)}}),
        ("/detect", "20000x100 PNG", {"files": {"file": ("s.png", strip)}}),
    ]
    if args.bad_inputs:
        cases += bad_inputs()
    print(f"upload sizes: 16 Mpx PNG {len(photo) / 1e3:.0f} KB, strip {len(strip) / 1e3:.0f} KB")
    print("| endpoint | upload | status | seconds | proxy peak over its resident set | reply |")
    print("|---|---|---:|---:|---:|---|")
    with servers(args.python, args.model_config.resolve(), env, args.checkout) as (pid, url):
        small = {"files": {"file": ("w.png", scene(64, 64))}}
        httpx.post(url + "/predict", timeout=120, **small)
        httpx.post(url + "/detect", timeout=120, **small)
        for endpoint, what, payload in cases:
            before = status_kib(pid, "VmRSS")
            reset_peak(pid)
            start = time.perf_counter()
            response = httpx.post(url + endpoint, timeout=600, **payload)
            seconds = time.perf_counter() - start
            peak = status_kib(pid, "VmHWM")
            reply = response.text if response.status_code != 200 else ""
            reply = reply.replace("|", "/")[:90]
            print(f"| {endpoint} | {what} | {response.status_code} | {seconds:.2f} | "
                  f"{(peak - before) / 1024:,.0f} MiB | {reply} |", flush=True)


if __name__ == "__main__":
    main()
