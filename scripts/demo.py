"""The main job on the embedded default, end to end: what `make demo` runs.

Each stage is the command a user would type, run in order in a fresh `runs/demo` folder:
generate a small dataset, a detection scene set, and a contact sheet.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "demo"


def run(*args: str) -> None:
    print(f"\n$ {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    run("-m", "geojax.data", "generate", "--out", str(OUT / "data"), "--per_class", "50",
        "--img_size", "64", "--seed", "0")
    run("-m", "geojax.data", "scenes", "--out", str(OUT / "scenes"), "--count", "8")
    run("scripts/contact_sheet.py", "--out", str(OUT / "contact_sheet.png"))
    print(f"\nDone: outputs under {OUT}")


if __name__ == "__main__":
    main()
