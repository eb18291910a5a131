"""Benchmarks, held-out renderers, the demo and the GPU checks: tools around geojax, not part of
the installed package. Run each from the repository root as a module, `python -m scripts.NAME
[ARGS]` (e.g. `python -m scripts.demo`, which `make demo` runs); they import one another as
`from scripts import heldout_shapes`."""
