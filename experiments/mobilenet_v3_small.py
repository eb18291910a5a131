"""Transfer learning with a MobileNetV3-Small backbone (see `default.transfer_config` for weights)."""

import ml_collections

from experiments import default


def get_config() -> ml_collections.ConfigDict:
    return default.transfer_config("mobilenet_v3_small")
