"""Evaluating a trained workdir: `report` scores its checkpoint on a folder of images, by size
band and style (the command `geojax.evaluate`). The metrics themselves are `geojax.core.metrics`,
which training and export use too."""
