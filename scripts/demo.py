"""The main job on the embedded default, end to end: what `make demo` runs.

Each stage is the command a user would type, run in order under `runs/demo/`:

    1. data      python -m geojax.data generate / scenes      (a small dataset + scenes)
    2. train     python -m geojax.main --config experiments/quick.py
    3. export    python -m geojax.export                       (next version, after parity)
    4. promote   python -m geojax.registry promote V --to staging, then production
    5. serve     python -m geojax.model_server (TF Serving's protocols) + python -m geojax.proxy
    6. detect    POST /detect on a generated scene, printed, with the curl command to repeat it

Rerunning resumes training (finished: straight to evaluation) and exports a new version.
With a terminal attached the servers keep running until Ctrl-C; otherwise they stop at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "demo"
BASE = OUT / "models" / "geojax"
CONFIG_FILE = OUT / "models.config"


def exported_version(output: str) -> str:
    """The version number `geojax.export` reports ("geojax version 3, labelled development")."""
    match = re.search(r"\bversion (\d+)\b", output)
    if match is None:
        raise SystemExit(f"demo: geojax.export did not report a version:\n{output}")
    return match.group(1)


def run(*args: str) -> str:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, text=True,
                            stdout=subprocess.PIPE)
    print(result.stdout, end="")
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)
    return result.stdout


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a script starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_for(url: str, what: str = "", timeout: float = 120.0) -> None:
    """Polls `url` until it answers 200; exits naming `what` (default: the URL) on timeout."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{what or url} was not ready within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc_port", type=int, default=8500)
    parser.add_argument("--rest_port", type=int, default=8501)
    parser.add_argument("--proxy_port", type=int, default=8000)
    args = parser.parse_args()
    for port in (args.grpc_port, args.rest_port, args.proxy_port):
        if not port_is_free(port):
            raise SystemExit(f"port {port} is in use: stop what runs there or pass other ports "
                             "(--grpc_port, --rest_port, --proxy_port)")
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    run("-m", "geojax.data", "generate", "--out", str(OUT / "data"), "--per_class", "20",
        "--img_size", "64")
    run("-m", "geojax.data", "scenes", "--out", str(OUT / "scenes"), "--count", "4",
        "--max_shapes", "5")
    run("-m", "geojax.main", "--config", "experiments/quick.py", "--workdir", str(OUT / "quick"))
    metrics = json.loads((OUT / "quick" / "eval" / "metrics.json").read_text())
    print(f"  test accuracy {metrics['accuracy']:.4f}")
    registry = ["-m", "geojax.registry", "--base_path", str(BASE), "--config_file",
                str(CONFIG_FILE)]
    exported = run("-m", "geojax.export", "--workdir", str(OUT / "quick"), "--base_path",
                   str(BASE), "--config_file", str(CONFIG_FILE))
    version = exported_version(exported)
    run(*registry, "promote", version, "--to", "staging")
    run(*registry, "promote", version, "--to", "production")
    run(*registry, "list")

    logs = [open(OUT / name, "w") for name in ("model_server.log", "proxy.log")]  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "geojax.model_server", f"--port={args.grpc_port}",
         f"--rest_api_port={args.rest_port}", f"--model_config_file={CONFIG_FILE}",
         "--model_config_file_poll_wait_seconds=2",
         "--allow_version_labels_for_unavailable_models=true"],
        cwd=ROOT, stdout=logs[0], stderr=subprocess.STDOUT)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "geojax.proxy", f"--port={args.proxy_port}"], cwd=ROOT,
        stdout=logs[1], stderr=subprocess.STDOUT,
        env={**os.environ, "GEOJAX_MODEL_SERVER": f"127.0.0.1:{args.grpc_port}",
             "GEOJAX_MODEL_BASE_PATH": str(BASE)})
    try:
        url = f"http://127.0.0.1:{args.proxy_port}"
        print(f"\nmodel server: gRPC :{args.grpc_port}, REST :{args.rest_port}; "
              f"proxy: {url} (logs in {OUT})", flush=True)
        wait_for(f"{url}/ready", f"{url}/ready (see {OUT}/*.log)")
        import httpx

        scene = OUT / "scenes" / "images" / "0000.png"
        with open(scene, "rb") as f:
            answer = httpx.post(f"{url}/detect", files={"file": f}, timeout=60).json()
        truth = json.loads((OUT / "scenes" / "annotations.json").read_text())
        names = {c["id"]: c["name"] for c in truth["categories"]}
        expected = [names[a["category_id"]] for a in truth["annotations"] if a["image_id"] == 1]
        print(f"\n$ curl -F file=@{scene.relative_to(ROOT)} '{url}/detect?method=contours'")
        print(json.dumps(answer, indent=1))
        print(f"ground truth: {sorted(expected)}")
        print(f"\nTry: {url}/docs, curl {url}/model/info, "
              f"curl -F file=@{scene.relative_to(ROOT)} '{url}/detect?annotate=true' -o out.png")
        print(f"demo finished in {time.perf_counter() - started:.0f} s", flush=True)
        if sys.stdin.isatty():
            print("serving; Ctrl-C stops", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                proxy.wait()
    finally:
        for process in (proxy, server):
            process.terminate()
            process.wait(timeout=30)
        for log in logs:
            log.close()


if __name__ == "__main__":
    main()
