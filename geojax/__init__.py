"""geojax: learn to recognise and locate ten geometric shapes with JAX/Flax.

The data flow, one module per step: `geojax.data` (render and load shapes) -> `geojax.models`
(Flax networks) -> `geojax.train` (data-parallel training) -> `geojax.evaluate` -> export to
TF Serving SavedModels -> the detection proxy in `serving/`.
"""

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "rectangle",
    "triangle",
    "pentagon",
    "hexagon",
    "octagon",
    "star",
    "rhombus",
    "ellipse",
)
"""The ten shape classes; a class's index in this tuple is its label."""

NUM_CLASSES: int = len(CLASSES)
