"""geojax: learn to recognise and locate ten geometric shapes with JAX/Flax.

The data flow, one module per step: `geojax.data` (render and load shapes) -> `geojax.models`
(Flax networks) -> `geojax.training` (data-parallel training) -> `geojax.evaluation` -> export to
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

NO_SHAPE: int = -1
"""The label of a training image with no (whole) shape in it: its target is the uniform
distribution over the classes (outlier exposure), so such images get no confident class."""

SHAPE_THRESHOLD: float = 0.5
"""A prediction names a shape only when its (calibrated) top probability reaches this; below it
the answer is "no shape" (`shape_found` false in every API)."""
