"""Train-step throughput (images/s) per experiment config, beside PyTorch and the input pipeline.

    python -m scripts.bench_train [--configs custom light resnet50 ...] [--batch_size 32]
                                  [--steps 10] [--img_size N] [--dtype bfloat16]
                                  [--conv flax gemm_wgrad] [--torch_compile] [--no-torch]
                                  [--no-loader] [--loader_batches 10] [--workers N]

For each config, at its own input size (or --img_size):

* JAX: the jitted data-parallel train step alone (synthetic uint8 batches already on the
  devices, compilation excluded), over every local device, the way `geojax.training` runs it.
  `--conv` runs the se_resnet / light configs once per named convolution layer
  (`geojax.models.CONV_LAYERS`: 'flax' is `nn.Conv`, 'gemm_wgrad' the GEMM weight gradient),
  for the before/after of the XLA:CPU weight-gradient fix.
* PyTorch (se_resnet configs, when torch is importable): the same SE-ResNet
  (scripts/torch_se_resnet.py, parameter count and logits checked against the Flax model
  first), same batch, same device, eager and, on GPU or with --torch_compile, torch.compile;
  and the JAX / PyTorch ratio.
* Loader: `geojax.data.pipeline.train_batches` with the config's data settings (workers,
  prefetch; --workers overrides), images/s over --loader_batches batches after the pool has
  filled, and loader / step: below 1 the input pipeline cannot keep the step busy.
"""

import argparse
import importlib
import importlib.util
import json
import os
import time
from collections.abc import Callable

# PyTorch shares the accelerator with JAX in this process: JAX must not take 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import jax
import ml_collections
import numpy as np

from geojax import NUM_CLASSES, models
from geojax.data import pipeline
from geojax.training.config import create_model
from geojax.training.steps import create_training, global_batches

DEFAULT_CONFIGS = ("quick", "light", "custom", *models.TRANSFER_MODELS)
# The logits of the PyTorch twin must match the Flax model's to this (relative to max |logit|).
TWIN_TOLERANCE = 1e-4


def load_experiment(name: str) -> ml_collections.ConfigDict:
    """experiments/NAME.py's config (the experiments package sits beside scripts/, in the
    repository root that `python -m scripts.NAME` runs from)."""
    return importlib.import_module(f"experiments.{name}").get_config()


def experiment_config(name: str, batch_size: int, img_size: int | None, dtype: str | None,
                      conv: str | None) -> ml_collections.ConfigDict:
    config = load_experiment(name)
    config.batch_size = batch_size
    if img_size:
        config.data.img_size = img_size
    if dtype:
        config.model.dtype = dtype
    if conv:
        config.model.conv = conv
    return config


def prepare(config: ml_collections.ConfigDict, twin_check: bool = False
            ) -> tuple[Callable[[int], float], dict[str, float]]:
    """`config`'s compiled train step on a synthetic batch: a function timing `steps` steps
    (seconds per step), and facts about the run ('img_size', 'params'; with `twin_check`, the
    PyTorch twin's logits difference from the freshly initialised Flax model)."""
    batch_size = config.batch_size
    size = config.data.img_size
    config = config.copy_and_resolve_references()
    config.data.source = "stream"  # the step takes the fixed batch below
    mesh, model, _, _, state, train_step, _ = create_training(config)
    info: dict[str, float] = {"img_size": size,
                              "params": sum(x.size for x in jax.tree.leaves(state.params))}
    if twin_check:
        info.update(check_twin(model, state, size))
    rng = np.random.default_rng(0)
    batch = next(global_batches(iter([{
        "image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32),
    }]), mesh))
    state, metrics = train_step(state, batch)  # compile
    jax.block_until_ready(state)

    def run(steps: int) -> float:
        nonlocal state, metrics
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = train_step(state, batch)
        jax.block_until_ready((state, metrics))
        return (time.perf_counter() - start) / steps

    return run, info


def bench(config: ml_collections.ConfigDict, steps: int, twin_check: bool = False,
          repeats: int = 1) -> dict[str, float]:
    """Steady-state images/s and ms/step of `config`'s train step (best of `repeats`)."""
    run, info = prepare(config, twin_check)
    seconds = min(run(steps) for _ in range(max(1, repeats)))
    return {**info, "ms_per_step": 1000 * seconds, "images_per_s": config.batch_size / seconds}


def torch_twin():
    """scripts/torch_se_resnet.py as a module, or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    # Imported only when torch is there (an optional dependency the module needs at import).
    return importlib.import_module("scripts.torch_se_resnet")


def check_twin(model, state, size: int) -> dict[str, float]:
    """Parameter count and logits of the PyTorch SE-ResNet against the Flax one (eval mode,
    2 random images); raises if they differ."""
    twin = torch_twin()
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    flax_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    images = np.random.default_rng(1).random((2, size, size, 3), dtype=np.float32)
    error = twin.check_against_flax(model, variables, images)
    module_params = twin.count_params(twin.build_se_resnet(model.num_classes,
                                                           **twin_architecture(model)))
    if module_params != flax_params or error > TWIN_TOLERANCE:
        raise AssertionError(f"PyTorch twin differs from the Flax SE-ResNet: {module_params} vs"
                             f" {flax_params} parameters, logits differ by {error:.2e}")
    return {"twin_error": error, "twin_params": module_params}


def twin_architecture(model) -> dict:
    """`build_se_resnet` keywords for a Flax se_resnet Classifier ({} for the seed's)."""
    keywords = model.backbone.keywords
    architecture = {k: keywords[k] for k in ("width", "stem_width", "stage_widths",
                                             "stage_depths", "se_reduction", "block_dropout")}
    defaults = models.default_model_config("se_resnet")
    if all(tuple(v) == tuple(defaults[k]) if isinstance(v, tuple) else v == defaults[k]
           for k, v in architecture.items()):
        return {}
    return architecture


def bench_loader(config: ml_collections.ConfigDict, batches: int) -> float:
    """Images/s of the config's CPU input pipeline (`train_batches`), once its worker pool is
    up and `prefetch` batches are in flight."""
    warmup = int(config.data.prefetch) + 1
    with pipeline.train_batches(config.data, config.batch_size, seed=0) as stream:
        for _ in range(warmup):
            next(stream)
        start = time.perf_counter()
        for _ in range(batches):
            next(stream)
        seconds = time.perf_counter() - start
    return config.batch_size * batches / seconds


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed windows of --steps steps; the best counts (shared machines)")
    parser.add_argument("--img_size", type=int, default=0, help="0: each config's own")
    parser.add_argument("--dtype", default="", help="compute dtype override, e.g. bfloat16")
    parser.add_argument("--conv", nargs="+", default=[], choices=list(models.CONV_LAYERS),
                        help="convolution layers to compare (se_resnet and light configs); "
                             "default: each config's own")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                        help="PyTorch SE-ResNet beside the se_resnet configs (if importable)")
    parser.add_argument("--torch_compile", action="store_true",
                        help="also torch.compile on CPU (always on GPU)")
    parser.add_argument("--loader", action=argparse.BooleanOptionalAction, default=True,
                        help="time the CPU input pipeline for each config")
    parser.add_argument("--loader_batches", type=int, default=10)
    parser.add_argument("--workers", type=int, default=-1,
                        help="loader processes (-1: each config's data.workers)")
    args = parser.parse_args()

    devices = jax.devices()
    twin = torch_twin() if args.torch else None
    on_gpu = devices[0].platform == "gpu"
    torch_device = "cuda" if on_gpu else "cpu"
    compile_torch = args.torch_compile or on_gpu
    print(f"{len(devices)} x {devices[0].device_kind}, global batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs; jax {jax.__version__}"
          + (f", torch {twin.torch.__version__} on {torch_device}" if twin else ", no torch"))
    if twin and on_gpu:
        import torch

        if not torch.cuda.is_available():
            print("torch has no CUDA here: PyTorch columns skipped")
            twin = None
    header = ["config", "conv", "px", "dtype", "ms/step", "JAX img/s"]
    if args.loader:
        header += ["loader img/s (workers)", "loader/step"]
    if twin:
        header += ["torch eager img/s", "JAX/torch eager"]
        if compile_torch:
            header += ["torch.compile img/s", "JAX/torch.compile"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)

    loader_cache: dict[str, float] = {}
    torch_cache: dict[tuple, tuple[float, float | None]] = {}
    notes = []
    for name in args.configs:
        has_conv = "conv" in load_experiment(name).model
        variants = []  # one per convolution layer, timed in turns so load changes hit all alike
        for conv in (args.conv if args.conv and has_conv else [None]):
            config = experiment_config(name, args.batch_size, args.img_size or None,
                                       args.dtype or None, conv)
            twin_check = bool(twin and config.model.name == "se_resnet")
            variants.append((config, *prepare(config, twin_check)))
        seconds = [np.inf] * len(variants)
        for _ in range(max(1, args.repeats)):
            for i, (_, run, _) in enumerate(variants):
                seconds[i] = min(seconds[i], run(args.steps))
        for (config, _, info), best in zip(variants, seconds, strict=True):
            is_se = config.model.name == "se_resnet"
            result = {**info, "ms_per_step": 1000 * best,
                      "images_per_s": config.batch_size / best}
            if "twin_error" in result:
                notes.append(f"{name}: PyTorch twin {result['twin_params']:,} parameters = "
                             f"Flax {result['params']:,}; eval logits differ by "
                             f"{result['twin_error']:.1e} of max |logit|")
            dtype = str(config.model.dtype)
            row = [name, config.model.get("conv", "-") if has_conv else "-",
                   str(result["img_size"]), dtype, f"{result['ms_per_step']:.1f}",
                   f"{result['images_per_s']:.1f}"]
            if args.loader:
                if args.workers >= 0:
                    config.data.workers = args.workers
                key = json.dumps([config.data.to_dict(), config.batch_size], sort_keys=True)
                if key not in loader_cache:
                    loader_cache[key] = bench_loader(config, args.loader_batches)
                loader = loader_cache[key]
                row += [f"{loader:.0f} ({config.data.workers})",
                        f"{loader / result['images_per_s']:.2f}"]
            if twin:
                eager = compiled = None
                if is_se:
                    architecture = twin_architecture(create_model(config))
                    key = (config.batch_size, result["img_size"], dtype, repr(architecture))
                    if key not in torch_cache:
                        common = dict(device=torch_device, dtype=dtype,
                                      architecture=architecture or None, repeats=args.repeats)
                        eager = twin.bench_torch(config.batch_size, result["img_size"],
                                                 args.steps, compile=False, **common)
                        if compile_torch:
                            compiled = twin.bench_torch(config.batch_size, result["img_size"],
                                                        args.steps, compile=True, **common)
                        torch_cache[key] = (eager, compiled)
                    eager, compiled = torch_cache[key]
                jax_rate = result["images_per_s"]
                row += [_fmt(eager, ".1f"), _fmt(eager and jax_rate / eager, ".2f")]
                if compile_torch:
                    row += [_fmt(compiled, ".1f"), _fmt(compiled and jax_rate / compiled, ".2f")]
            print("| " + " | ".join(row) + " |", flush=True)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
