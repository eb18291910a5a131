"""Serving benchmark on loopback: the local model server and the proxy as real processes.

    python -m scripts.bench_serving [--model runs/demo/models/geojax/1] [--requests 64]
                                    [--concurrency 1 4 8] [--quality_scenes 100]

MODEL is a SavedModel version directory or a model base path (its highest version; default: the
newest under runs/demo/models/geojax). It is copied into a throwaway registry and labelled
production; `geojax.model_server` serves it (gRPC + REST) and three `geojax.proxy` processes sit
in front of it over gRPC, started as `python -m scripts.demo` starts them: the default one,
which sends all crops of an image in ONE model call, one with GEOJAX_CROPS_PER_CALL=64 (calls of
at most 64 crops) and one with GEOJAX_CROPS_PER_CALL=1 (one model call per crop, the seed's
way). All classify up to 1024 regions per image (the proxy's default is 64), so sliding windows
cover the image as the seed's did. Every phase is bounded by `--requests` and `--max_seconds`.

Printed as markdown tables:
1. /detect (contours) and /predict latency p50/p95/p99 and requests/s at each concurrency, on
   generated 640x480 scenes (the scene generator's defaults);
2. the proxy's overhead: its end-to-end latency minus the model server time it reports in
   `timing_ms.model_server`, and /predict against calling the model server directly;
3. /detect with one batched model call (and calls of 64) against one call per crop, on scenes
   with 5+ shapes, per proposal method (whole request, and the classify stage alone);
4. detection quality per proposal method: `python -m scripts.bench_detection` on the same
   model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from scripts.demo import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = ROOT / "runs" / "demo" / "models" / "geojax"
CROPS_PER_CALL = {"one call": 0, "calls of 64": 64, "call per crop": 1}  # GEOJAX_CROPS_PER_CALL
MAX_REGIONS = 1024  # every sliding window is classified, as the seed did (the proxy's default: 64)



@contextlib.contextmanager
def servers(saved_model: Path, scratch: Path) -> Iterator[dict[str, Any]]:
    """A registry holding `saved_model` in production, the model server, and two proxies:
    one per entry of CROPS_PER_CALL. Yields their addresses."""
    from geojax.release.registry import Registry

    base, config_file = scratch / "models" / "geojax", scratch / "models.config"
    registry = Registry(base, config_file=config_file)
    incoming = registry.incoming_dir()
    shutil.rmtree(incoming)
    shutil.copytree(saved_model, incoming)
    version = registry.register(incoming, {"metrics": {}})
    registry.promote(version, "staging")
    registry.promote(version, "production")
    grpc_port, rest_port = free_port(), free_port()
    ports = {name: free_port() for name in CROPS_PER_CALL}
    log = open(scratch / "servers.log", "w")  # noqa: SIM115 - closed below
    processes = [subprocess.Popen(
        [sys.executable, "-m", "geojax.model_server", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_config_file={config_file}",
         "--host=127.0.0.1", "--model_config_file_poll_wait_seconds=2",
         "--allow_version_labels_for_unavailable_models=true"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)]
    for name, port in ports.items():
        env = {**os.environ, "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc_port}",
               "GEOJAX_MODEL_BASE_PATH": str(base), "GEOJAX_TIMEOUT_S": "30",
               "GEOJAX_MAX_REGIONS": str(MAX_REGIONS),
               "GEOJAX_CROPS_PER_CALL": str(CROPS_PER_CALL[name])}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "geojax.proxy", "--host=127.0.0.1", f"--port={port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name, url in urls.items():
            wait_for(f"{url}/ready", f"the {name} proxy (log: {scratch / 'servers.log'})",
                     timeout=180)
        yield {"urls": urls, "grpc": f"127.0.0.1:{grpc_port}", "version": version}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        log.close()


def percentiles(values: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(values, np.float64), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def load(url: str, path: str, bodies: list[bytes], concurrency: int, requests: int,
         max_seconds: float, params: dict[str, Any] | None = None
         ) -> tuple[list[float], list[dict[str, float]], float]:
    """`requests` POSTs of the bodies in turn (multipart 'file') from `concurrency` threads,
    stopping early after `max_seconds`: (latencies s, timing_ms of each answer, wall s)."""
    import httpx

    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                files = {"file": ("scene.png", bodies[i % len(bodies)], "image/png")}
                started = time.perf_counter()
                response = client.post(path, files=files, params=params)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text}")
                with lock:
                    latencies.append(elapsed)
                    timings.append(response.json()["timing_ms"])

    # One warm-up request per client connection pool is not counted.
    with httpx.Client(base_url=url, timeout=120) as client:
        client.post(path, files={"file": ("scene.png", bodies[0], "image/png")}, params=params)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return latencies, timings, time.perf_counter() - started


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(
        "---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_BASE),
                        help="SavedModel version directory or model base path")
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--max_seconds", type=float, default=60.0,
                        help="time limit per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--scenes", type=int, default=16, help="distinct scenes sent")
    parser.add_argument("--seed", type=int, default=30_000, help="first scene seed")
    parser.add_argument("--quality_scenes", type=int, default=100,
                        help="scenes for scripts/bench_detection.py (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from geojax.core.images import encode_png, resize_to
    from geojax.data import compose_scene
    from geojax.detection.proposals import METHODS, propose_regions
    from geojax.inference.predictor import ModelError, find_saved_model
    from geojax.serving.client import ModelServerClient

    try:
        saved_model = find_saved_model(args.model)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if saved_model is None:
        print(f"error: {args.model} holds no SavedModel (export one: make demo)", file=sys.stderr)
        return 2
    scenes = [compose_scene(np.random.default_rng(args.seed + i)) for i in range(args.scenes)]
    crowded = [s for s in (compose_scene(np.random.default_rng(args.seed + 1000 + i),
                                         num_shapes=(5, 6)) for i in range(4 * args.scenes))
               if len(s.boxes) >= 5][:args.scenes]
    bodies = [encode_png(s.image) for s in scenes]
    crowded_bodies = [encode_png(s.image) for s in crowded]
    command = "python -m " + shlex.join(["scripts.bench_serving", *sys.argv[1:]])
    print(f"$ {command}\n\nmodel: {saved_model}; {os.cpu_count()} CPU cores; "
          f"{len(scenes)} scenes 640x480 ({sum(len(s.boxes) for s in scenes)} shapes), "
          f"{len(crowded)} scenes with 5+ shapes\n", flush=True)

    with tempfile.TemporaryDirectory() as scratch, servers(saved_model, Path(scratch)) as env:
        url = env["urls"]["one call"]
        rows = []
        overhead: dict[str, list[float]] = {}
        for path, payload, params in (("/detect", bodies, {"method": "contours"}),
                                      ("/predict", bodies, None)):
            for concurrency in args.concurrency:
                latencies, timings, wall = load(url, path, payload, concurrency, args.requests,
                                                args.max_seconds, params)
                p50, p95, p99 = percentiles(latencies)
                rows.append([path, str(concurrency), str(len(latencies)), f"{p50 * 1000:.1f}",
                             f"{p95 * 1000:.1f}", f"{p99 * 1000:.1f}",
                             f"{len(latencies) / wall:.1f}"])
                if concurrency == 1:
                    overhead[path] = [lat * 1000 - t["model_server"]
                                      for lat, t in zip(latencies, timings, strict=True)]
                    overhead[path + " server"] = [t["model_server"] for t in timings]
                print(f"  measured {path} at concurrency {concurrency}", file=sys.stderr,
                      flush=True)
        print("### Latency and throughput (proxy, batched, gRPC to the model server)\n")
        print(table(["endpoint", "concurrency", "requests", "p50 ms", "p95 ms", "p99 ms",
                     "requests/s"], rows) + "\n")

        client = ModelServerClient(grpc_target=env["grpc"], timeout_s=30)
        size = client.served_signature()[1]
        one = resize_to(scenes[0].image, size)[None].astype(np.float32) / 255.0
        direct = timed(lambda: client.predict_pixels(one), min(args.requests, 64))
        client.close()
        print("### Proxy overhead (concurrency 1)\n")
        print(table(
            ["endpoint", "end-to-end p50 ms", "model server p50 ms",
             "overhead p50 ms (end-to-end - model server)"],
            [[path, f"{np.median(overhead[path]) + np.median(overhead[path + ' server']):.1f}",
              f"{np.median(overhead[path + ' server']):.1f}",
              f"{np.median(overhead[path]):.1f}"] for path in ("/detect", "/predict")]))
        print(f"\nDirect gRPC Predict of one {size} px image from this process (no proxy): "
              f"p50 {np.median(direct) * 1000:.1f} ms\n", flush=True)

        rows = []
        for method in METHODS:
            result = {}
            for name in CROPS_PER_CALL:
                latencies, timings, _ = load(env["urls"][name], "/detect", crowded_bodies, 1,
                                             min(args.requests, 3 * len(crowded_bodies)),
                                             args.max_seconds, {"method": method})
                result[name] = (float(np.median(latencies) * 1000),
                                float(np.median([t["classify"] for t in timings])))
                print(f"  measured {method}, {name}", file=sys.stderr, flush=True)
            slow_total, slow_classify = result["call per crop"]
            for name, (total, classify) in result.items():
                rows.append([method, name, f"{total:.1f}", f"{slow_total / total:.1f}x",
                             f"{classify:.1f}", f"{slow_classify / classify:.1f}x"])
        crops = {m: np.mean([len(propose_regions(s.image, m)[:MAX_REGIONS]) for s in crowded])
                 for m in METHODS}
        print("### /detect: the crops of an image in one model call, in calls of 64, or one "
              f"call per crop ({len(crowded)} scenes with 5+ shapes, concurrency 1, p50)\n")
        print("Regions classified per image: " + ", ".join(
            f"{m} {n:.0f}" for m, n in crops.items()) + "\n")
        print(table(["method", "model calls", "/detect ms", "speed-up over one per crop",
                     "classify stage ms", "classify speed-up"], rows) + "\n", flush=True)

    if args.quality_scenes:
        print("### Detection quality per proposal method (scripts/bench_detection.py)\n",
              flush=True)
        quality = [sys.executable, "-m", "scripts.bench_detection", "--model",
                   str(saved_model), "--scenes", str(args.quality_scenes)]
        subprocess.run(quality, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
