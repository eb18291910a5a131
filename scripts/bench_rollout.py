"""Rollout and batch costs at the proxy: shadow mode against plain serving, /detect/batch against
one /detect per image. Real processes on loopback, both proxies in front of one model server.

    python -m scripts.bench_rollout [--model runs/demo/models/geojax/1] [--requests 200]

MODEL (a SavedModel version directory) is registered twice in a throwaway registry: version 1
in production, version 2 in canary (the same network, so the canary's work equals
production's). Two `geojax.proxy` processes: plain, and GEOJAX_ROLLOUT=shadow (every request
replayed to the canary after the answer). Requests alternate between the two, one at a time,
in blocks of 20 (a pause after each lets the shadow's replays finish), so both see the same
machine; within a shadow block each replay competes with the next request, as under load. Then, on the plain proxy: 8 generated 640x480 scenes as one
/detect/batch against 8 /detect calls, alternating, `--repeats` times. Medians; ratios are to
the plain proxy / the 8 calls, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from geojax.core.images import encode_png
from geojax.data import compose_scene
from geojax.release.registry import Registry
from scripts.demo import free_port

ROOT = Path(__file__).resolve().parent.parent



def wait_ready(url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} never became ready; see {log}")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs/demo/models/geojax/1")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_rollout-"))
    base, config_file = scratch / "models" / "geojax", scratch / "models.config"
    registry = Registry(base, config_file=config_file, server=None)
    for stage in ("production", "canary"):
        incoming = registry.incoming_dir()
        shutil.rmtree(incoming)
        shutil.copytree(args.model, incoming)
        version = registry.register(incoming, {"metrics": {}})
        registry.promote(version, "staging")
        registry.promote(version, stage)
    grpc, rest = free_port(), free_port()
    log_path = scratch / "servers.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    processes = [subprocess.Popen(
        [sys.executable, "-m", "geojax.model_server", f"--port={grpc}", f"--rest_api_port={rest}",
         f"--model_config_file={config_file}", "--host=127.0.0.1",
         "--allow_version_labels_for_unavailable_models=true"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)]
    urls = {}
    for name, rollout in (("plain", ""), ("shadow", "shadow")):
        port = free_port()
        env = {**os.environ, "GEOJAX_MODEL_SERVER": f"127.0.0.1:{grpc}",
               "GEOJAX_ROLLOUT": rollout, "GEOJAX_TIMEOUT_S": "30"}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "geojax.proxy", "--host=127.0.0.1", f"--port={port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for url in urls.values():
            wait_ready(url, log_path)
        scenes = [encode_png(compose_scene(np.random.default_rng(900 + i)).image)
                  for i in range(8)]
        shape = encode_png(compose_scene(np.random.default_rng(5), 256, 256,
                                         num_shapes=(1, 1)).image)
        with httpx.Client(timeout=60) as client:
            for url in urls.values():  # warm both, every batch shape the runs below use
                for body in (shape, scenes[0]):
                    client.post(url + "/predict", files={"file": ("a.png", body)})
                    client.post(url + "/detect", files={"file": ("a.png", body)})
            lat: dict[tuple[str, str], list[float]] = {}
            block = 20
            for first in range(0, args.requests, block):
                for name, url in urls.items():
                    for endpoint, body in (("/predict", shape), ("/detect", None)):
                        for i in range(first, min(first + block, args.requests)):
                            start = time.perf_counter()
                            response = client.post(url + endpoint, files={
                                "file": ("a.png", body or scenes[i % 8])})
                            response.raise_for_status()
                            lat.setdefault((name, endpoint), []).append(
                                (time.perf_counter() - start) * 1000)
                    time.sleep(1.0)  # the shadow's last replays finish before the next block
            plain = urls["plain"]
            files = [("files", (f"s{i}.png", s)) for i, s in enumerate(scenes)]
            client.post(plain + "/detect/batch", files=files).raise_for_status()
            batch_ms, single_ms = [], []
            for _ in range(args.repeats):
                batch_ms.append(median_ms(lambda: client.post(
                    plain + "/detect/batch", files=files).raise_for_status(), 1))
                single_ms.append(median_ms(lambda: [client.post(
                    plain + "/detect", files={"file": ("s.png", s)}).raise_for_status()
                    for s in scenes], 1))
            compared = httpx.get(urls["shadow"] + "/metrics").text
        print(f"model {args.model}, {args.requests} requests per cell, one at a time\n")
        print("| endpoint | plain p50 ms | shadow p50 ms | shadow / plain | plain p95 | shadow p95 |")
        print("|---|---:|---:|---:|---:|---:|")
        for endpoint in ("/predict", "/detect"):
            a, b = lat[("plain", endpoint)], lat[("shadow", endpoint)]
            pa, pb = statistics.median(a), statistics.median(b)
            print(f"| {endpoint} | {pa:.1f} | {pb:.1f} | {pb / pa:.2f} | "
                  f"{np.percentile(a, 95):.1f} | {np.percentile(b, 95):.1f} |")
        agreement = [line for line in compared.splitlines()
                     if line.startswith("geojax_shadow_agreement{")]
        print(f"\nshadow agreement after the run: {'; '.join(agreement)}\n")
        b, s = statistics.median(batch_ms), statistics.median(single_ms)
        print("| 8 scenes (640x480, contours) | median ms | vs 8 x /detect |")
        print("|---|---:|---:|")
        print(f"| 8 x /detect | {s:.1f} | 1.00 |")
        print(f"| 1 x /detect/batch | {b:.1f} | {b / s:.2f} |")
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
