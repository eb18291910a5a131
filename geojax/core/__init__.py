"""What every stage shares and the serving side can import alone: the user-error exit
(`geojax.core.errors`), reading images (`geojax.core.images`), the model artefact's contract
(`geojax.core.artefact`), the answers' JSON shapes (`geojax.core.results`), a classifier's
metrics and calibration (`geojax.core.metrics`, pure numpy) and the commands' console
(`geojax.core.console`). Nothing here imports JAX, Flax, TensorFlow or albumentations at import
time: the proxy is built on it.
"""
