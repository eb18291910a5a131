"""What every stage shares and the serving side can import alone: reading images
(`geojax.core.images`), the model artefact's contract (`geojax.core.artefact`), the answers'
JSON shapes (`geojax.core.results`) and the commands' console (`geojax.core.console`). Nothing
here imports JAX, Flax, TensorFlow or albumentations at import time: the proxy is built on it.
"""
