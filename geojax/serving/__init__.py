"""Serving: the client of TF Serving's APIs, drift profiles, and the detection proxy in front of
the model server (the command `python -m geojax.proxy`).

    client      geojax.serving.client      TF Serving's PredictionService/ModelService, gRPC or REST
    drift       geojax.serving.drift       profiles and PSI (export's reference, the proxy's live)
    settings    geojax.serving.settings    ProxySettings from GEOJAX_* variables
    app         geojax.serving.app         create_app: the FastAPI routes
    state       geojax.serving.state       Proxy: clients, model view, bounds, shadow replays
    rollout     geojax.serving.rollout     split/shadow canaries, shadow agreement
    metrics     geojax.serving.metrics     the Prometheus metrics
    uploads     geojax.serving.uploads     images in requests, /detect query parameters
    middleware  geojax.serving.middleware  API keys, the request body limit

Nothing here imports JAX, Flax, optax, orbax, albumentations, wandb or clu; TensorFlow only on
the first gRPC call (its protos), never at import time.
"""
