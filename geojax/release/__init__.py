"""Releasing a trained model: the jax2tf SavedModel export and the registry of its versions.

    SavedModel   geojax.release.saved_model    write (two signatures, warm-up), read back
    export       geojax.release.export         a workdir -> parity-checked next version
    registry     geojax.release.registry       versions, stages as TF Serving labels
    rules        geojax.release.stages         stages, the metrics gate, the `list` table
    config file  geojax.release.serving_config the ModelServerConfig the registry writes
    server       geojax.release.server_watch   waiting until TF Serving has loaded a version
    files        geojax.release.registry_files atomic writes, hashes, stale exports
    errors       geojax.release.errors         ExportError, RegistryError
    CLI          python -m geojax.export | python -m geojax.registry

TensorFlow is imported only where a SavedModel is written or read, never at import time.
"""
