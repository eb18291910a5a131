"""What the GPU compiler makes of the device data, without a GPU: kernels, bytes, estimated time.

    V=$(python -c 'import jax; print(jax.__version__)')    # the plugin must match jax
    pip install --target /tmp/cuda_plugin --no-deps jax-cuda12-plugin==$V jax-cuda12-pjrt==$V
    PYTHONPATH=/tmp/cuda_plugin python -m scripts.gpu_aot_report [--config custom]
        [--batch_size 256] [--dtype bfloat16] [--top 12] [--step_ms 21.8] [--no-train]

Deviceless ahead-of-time compilation (jax.experimental.topologies with the CUDA PJRT plugin: no
driver, no GPU) for the GPU described by --target (an H100 by default), of (1) render + augment
alone (`geojax.data.device.batches.batch_fn`) and, unless --no-train, (2) the bare train step
and (3) the device-data train step (`geojax.training.steps.make_parallel_steps`; gemm_wgrad
models as the GPU runs them, with lax.conv). From each optimized HLO module: its kernels
(top-level fusions, custom calls and copies; a while loop's body counted as many times as it
runs), the bytes each reads and writes (its operands' and results' sizes: an upper bound for
slicing kernels), its element-ops (result elements times the fused computation's arithmetic
ops), and for the data program an estimate per kernel, max(bytes / bandwidth, element-ops / op
rate) + launch, summed. The estimate is a roofline: it ignores caches and occupancy. CALIBRATION
scales it to the one GPU measurement there is (see its comment); the predicted (b)/(a) uses
--step_ms, the bare step's measured time.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
         "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
# Ops that move or name data without arithmetic: not counted as element-ops.
FREE_OPS = {"parameter", "constant", "bitcast", "broadcast", "get-tuple-element", "tuple",
            "slice", "reshape", "iota", "transpose", "copy", "concatenate", "pad"}
NOT_KERNELS = {"parameter", "constant", "bitcast", "get-tuple-element", "tuple",
               "optimization-barrier"}
H100 = {"bandwidth": 3.35e12, "op_rate": 3.0e13, "launch": 2e-6}
# The roofline estimate of the renderer as it was measured on the lent H100 (commit a60a283:
# render + augment alone 67,645 images/s at batch 256, 3.78 ms; this estimate: 2.30 ms).
CALIBRATION = 3.78 / 2.30
INSTRUCTION = re.compile(
    r"^\s+(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w-]+)\((.*?)\)(.*)$")


def arrays(shape: str) -> list[tuple[str, int]]:
    """(dtype, element count) of each array in an HLO shape string (tuples flattened)."""
    found = []
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        found.append((dtype, count))
    return found


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string, tuples summed ('(f32[2,3]{1,0}, u8[4])' -> 28)."""
    return sum(count * BYTES.get(dtype, 0) for dtype, count in arrays(shape))


def shape_elements(shape: str) -> int:
    """Elements of the largest array in an HLO shape string."""
    return max((count for _, count in arrays(shape)), default=0)


@dataclass
class Kernel:
    name: str
    op: str  # fusion, custom-call, copy, ...
    bytes: int  # read and written
    element_ops: int
    times: int  # runs per call of the program (while-loop trip counts)
    source: str  # the geojax lines most of its ops come from, else its jax op's name


def computations(hlo: str) -> dict[str, list[str]]:
    """Each computation of an HLO module's text: name -> its instruction lines."""
    found: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(1)
            found[current] = []
        elif current and line.startswith("  "):
            found[current].append(line)
    return found


def source_lines(hlo: str) -> dict[int, list[str]]:
    """Stack frame id -> its 'file.py:line' frames inside geojax, innermost first, from the
    module's location tables (empty where the text has none)."""
    def table(name: str) -> list[str]:
        found = re.search(rf"^{name}\n(.*?)(?:\n\n|\Z)", hlo, re.M | re.S)
        return found.group(1).splitlines() if found else []

    files = dict(re.findall(r'^(\d+) "(.*)"$', "\n".join(table("FileNames")), re.M))
    locations = {loc: (files.get(f, ""), line) for loc, f, line in re.findall(
        r"^(\d+) \{file_name_id=(\d+) function_name_id=\d+ line=(\d+)",
        "\n".join(table("FileLocations")), re.M)}
    parents = {frame: (loc, parent) for frame, loc, parent in re.findall(
        r"^(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)",
        "\n".join(table("StackFrames")), re.M)}
    lines: dict[int, list[str]] = {}
    for frame in parents:
        trace, seen, at = [], set(), frame
        while at in parents and at not in seen:
            seen.add(at)
            loc, at = parents[at]
            path, line = locations.get(loc, ("", ""))
            if "geojax/" in path:
                trace.append(f"{path.rsplit('geojax/', 1)[1]}:{line}")
        lines[int(frame)] = trace
    return lines


def kernels(hlo: str) -> list[Kernel]:
    """The kernels an optimized HLO module launches per call (see the module docstring)."""
    comps = computations(hlo)
    frames = source_lines(hlo)
    entry = re.search(r"^ENTRY %([\w.\-]+)", hlo, re.M)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")

    def origin(name: str) -> str:
        """The geojax lines most of a fused computation's instructions come from."""
        counts: collections.Counter[str] = collections.Counter()
        for line in comps.get(name, []):
            frame = re.search(r"stack_frame_id=(\d+)", line)
            if frame and frames.get(int(frame.group(1))):
                counts[frames[int(frame.group(1))][0]] += 1
        return ", ".join(where for where, _ in counts.most_common(2))

    def arithmetic(name: str) -> int:
        count = 0
        for line in comps.get(name, []):
            instr = INSTRUCTION.match(line)
            if instr and instr.group(3) not in FREE_OPS:
                count += 1
            for called in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", line):
                count += arithmetic(called)
        return count

    def walk(name: str, times: int) -> list[Kernel]:
        found, shapes = [], {}
        for line in comps[name]:
            instr = INSTRUCTION.match(line)
            if not instr:
                continue
            result, shape, op, operands, rest = instr.groups()
            shapes[result] = shape
            if op in NOT_KERNELS:
                continue
            if op == "while":
                body = re.search(r"body=%([\w.\-]+)", rest)
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
                if body:
                    found += walk(body.group(1), times * (int(trip.group(1)) if trip else 1))
                continue
            read = sum(shape_bytes(shapes.get(o.strip().lstrip("%"), ""))
                       for o in operands.split(",") if o.strip().startswith("%"))
            called = re.search(r"calls=%([\w.\-]+)", rest)
            ops = arithmetic(called.group(1)) if called else int(op not in FREE_OPS)
            op_name = re.search(r'op_name="([^"]+)"', rest)
            source = (origin(called.group(1)) if called else "") or (
                re.sub(r"\[.*", "", op_name.group(1)).split("/")[-1] if op_name else "")
            found.append(Kernel(result, op, read + shape_bytes(shape),
                                shape_elements(shape) * ops, times, source))
        return found

    return walk(entry.group(1), 1)


def estimate_s(found: list[Kernel], device: dict[str, float] = H100) -> float:
    """Roofline seconds of one call: per kernel max(memory, arithmetic) + launch."""
    return sum(k.times * (max(k.bytes / device["bandwidth"], k.element_ops / device["op_rate"])
                          + device["launch"]) for k in found)


def summary(found: list[Kernel]) -> str:
    launches = sum(k.times for k in found)
    moved = sum(k.times * k.bytes for k in found)
    ops = sum(k.times * k.element_ops for k in found)
    return f"{launches} kernel launches, {moved / 1e9:.2f} GB moved, {ops:.3g} element-ops"


def say(*args: object) -> None:
    print(*args, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="custom", help="experiments/NAME.py")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--img_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--dtype", default="bfloat16", help="model compute dtype")
    parser.add_argument("--target", default=str(SCRIPTS / "h100_target_config.textproto"),
                        help="XLA GpuTargetConfig text proto of the GPU to compile for")
    parser.add_argument("--step_ms", type=float, default=21.8,
                        help="the bare train step's measured ms on that GPU (default: the "
                             "H100's, custom, batch 256, bf16)")
    parser.add_argument("--top", type=int, default=12, help="kernels listed, dearest first")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="only the data program")
    parser.add_argument("--save_hlo", default="", help="write each optimized HLO to DIR")
    args = parser.parse_args()

    # Before jax starts: the CUDA plugin without a CUDA runtime, a driver or a GPU.
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu,cuda")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from geojax.data import pipeline
    from geojax.data.device import batches as device_batches
    from geojax.training.config import DATA_AXIS, create_model
    from geojax.training.state import create_learning_rate_fn, create_optimizer, create_train_state
    from geojax.training.steps import device_batch_maker, make_parallel_steps
    from scripts.bench_train import load_experiment

    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=Path(args.target).read_text(), topology="1x1x1")
    except Exception as e:  # the plugin is missing or of another jax version
        sys.exit(f"cannot compile for a GPU here ({type(e).__name__}: {e}); install the CUDA "
                 f"plugin of jax {jax.__version__} as the docstring says")
    mesh = Mesh(topology.devices[:1], (DATA_AXIS,))
    config = load_experiment(args.config)
    config.batch_size = args.batch_size
    config.model.dtype = args.dtype
    if config.model.get("conv") == "gemm_wgrad":
        # On a GPU gemm_wgrad is plain lax.conv, chosen by jax.default_backend() when traced:
        # here that is the CPU, so ask for the GPU's form by name.
        config.model.conv = "flax"
    if args.img_size:
        config.data.img_size = args.img_size
    config.data.source = "device"
    pipeline.check_data_config(config.data)
    replicated = NamedSharding(mesh, P())
    say(f"{topology.devices[0].device_kind} (deviceless AOT), jax {jax.__version__}; config "
        f"{args.config}, batch {config.batch_size}, {config.data.img_size} px, "
        f"{config.data.device_ops if config.data.augment else 'no augmentation'}")

    def compiled(name: str, lowered) -> list[Kernel]:
        start = time.perf_counter()
        hlo = lowered.compile().as_text()
        if args.save_hlo:
            Path(args.save_hlo).mkdir(parents=True, exist_ok=True)
            Path(args.save_hlo, f"{name}.hlo.txt").write_text(hlo)
        found = kernels(hlo)
        say(f"{name}: {summary(found)} (compiled in {time.perf_counter() - start:.0f} s)")
        return found

    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    make = device_batches.batch_fn(config.data, mesh, config.batch_size, config.seed)
    data = compiled("render + augment", make.lower(step))
    data_ms = estimate_s(data) * 1e3
    say(f"  estimate {data_ms:.2f} ms per batch; calibrated (x{CALIBRATION:.2f}) "
        f"{data_ms * CALIBRATION:.2f} ms: predicted (b)/(a) = "
        f"{args.step_ms / (args.step_ms + data_ms * CALIBRATION):.3f} at a {args.step_ms} ms "
        f"bare step")
    say("\n| kernel | from (geojax/) | MB moved | element-ops | est. us |\n|---|---|---|---|---|")
    for k in sorted(data, key=lambda k: -estimate_s([k]))[:args.top]:
        est = estimate_s([k]) * 1e6
        say(f"| {k.name} | {k.source} | {k.bytes * k.times / 1e6:,.0f} | "
            f"{k.element_ops * k.times:.3g} | {est:,.0f} |")

    if not args.train:
        return
    model = create_model(config)
    tx = create_optimizer(config, create_learning_rate_fn(config), model)
    shapes = jax.eval_shape(
        lambda: create_train_state(jax.random.PRNGKey(0), config, model, tx))
    state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
    split = NamedSharding(mesh, P(DATA_AXIS))
    size = int(config.data.img_size)
    batch = {"image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.uint8,
                                           sharding=split),
             "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=split)}
    bare_step, _ = make_parallel_steps(mesh, model, tx, config.label_smoothing)
    bare = compiled("(a) bare train step", bare_step.lower(state, batch))
    device_step, _ = make_parallel_steps(mesh, model, tx, config.label_smoothing,
                                         make_batch=device_batch_maker(config))
    fed = compiled("(b) device data + train step", device_step.lower(state))
    added = collections.Counter(k.op for k in fed)
    added.subtract(collections.Counter(k.op for k in bare))
    say(f"(b) - (a): {sum(k.times for k in fed) - sum(k.times for k in bare)} launches, "
        f"{dict((op, n) for op, n in added.items() if n)}")


if __name__ == "__main__":
    main()
