"""The proxy's Prometheus metrics: names, labels and buckets, in a registry of their own."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The proxy's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("geojax_requests", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("geojax_request_latency_seconds", "End-to-end latency",
                                 ["endpoint"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.model_latency = Histogram("geojax_model_server_latency_seconds",
                                       "Time in model server calls", ["endpoint"], registry=r,
                                       buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        self.crops = Histogram("geojax_crops_per_request", "Regions classified per /detect",
                               registry=r, buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128))
        self.predicted = Counter("geojax_predicted_class", "Predictions by class", ["class"],
                                 registry=r)
        self.confidence = Histogram("geojax_prediction_confidence", "Top-class probability",
                                    registry=r, buckets=tuple(np.linspace(0.1, 1.0, 10)))
        self.input_pixels = Histogram("geojax_input_pixels", "Decoded image size in pixels",
                                      registry=r, buckets=tuple(4.0 ** np.arange(5, 13)))
        self.drift_psi = Gauge("geojax_drift_psi", "Population stability index vs reference",
                               ["feature"], registry=r)
        self.drift = Gauge("geojax_drift_detected", "1 when any feature's PSI is over the "
                           "threshold", registry=r)
        self.version = Gauge("geojax_served_model_version", "Version behind the served label",
                             ["model", "label"], registry=r)
        self.server_up = Gauge("geojax_model_server_up", "1 when the last model server call "
                               "succeeded", registry=r)
        self.label_requests = Counter("geojax_label_requests", "Requests answered by each "
                                      "version label (shadow replays under the canary's)",
                                      ["label", "endpoint", "status"], registry=r)
        self.label_latency = Histogram("geojax_label_latency_seconds", "Latency by label",
                                       ["label", "endpoint"], registry=r,
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.shadow_agreement = Gauge("geojax_shadow_agreement", "Share of the canary's "
                                      "answers agreeing with the served ones (recent window)",
                                      ["kind"], registry=r)
        self.shadow_compared = Counter("geojax_shadow_compared", "Images compared in shadow "
                                       "mode", ["kind"], registry=r)
