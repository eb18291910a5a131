"""Prints each geojax model's parameter count and forward FLOPs per image as a Markdown table.

    .venv/bin/python -m scripts.model_summary [--models se_resnet light ...]

Parameters are the trainable 'params' (BatchNorm statistics excluded), at each model's default
config. FLOPs are XLA's cost analysis of the compiled inference forward pass (train=False) on
one image at the model's default input size: a multiply-add counts as 2.
"""

import argparse

import jax
import jax.numpy as jnp

from geojax.models import MODEL_NAMES, create_model, default_model_config
from geojax.models.layout import trace_backbone


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def summarize(name: str) -> dict[str, float]:
    """Parameter counts and forward GFLOPs per image of model `name` at its defaults."""
    config = default_model_config(name)
    model = create_model(config)
    variables = trace_backbone(model).variables
    size = config.input_size
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    cost = forward.lower(variables, images).compile().cost_analysis()
    return {
        "input": size,
        "params": count(variables["params"]),
        "backbone": count(variables["params"]["backbone"]),
        "head": count(variables["params"]["head"]),
        "gflops": cost["flops"] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODEL_NAMES, choices=MODEL_NAMES)
    args = parser.parse_args()
    print("| model | input px | params | backbone params | head params | GFLOPs / image |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        s = summarize(name)
        print(
            f"| {name} | {s['input']} | {s['params']:,} | {s['backbone']:,} | {s['head']:,}"
            f" | {s['gflops']:.2f} |"
        )


if __name__ == "__main__":
    main()
