"""Evaluating a classifier: `metrics` (pure numpy, and the JSON + PNG report), which training
uses too, and `report`, a trained workdir scored on a folder of images (the command
`geojax.evaluate`)."""
