"""Predicting with a trained model: `workdir` loads a training workdir's checkpoint (on the mesh
for evaluation, or set up for serving), `predictor` classifies and detects shapes with a
workdir or an exported SavedModel (the command `geojax.predict`)."""
