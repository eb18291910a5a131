"""What every stage shares and the serving side can import alone: reading images
(`geojax.core.images`) and the model artefact's contract (`geojax.core.artefact`). Nothing here
imports JAX, Flax, TensorFlow or albumentations: the proxy is built on this.
"""
