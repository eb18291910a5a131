"""Transfer learning with a ResNet101 backbone (see `default.transfer_config` for weights)."""

import ml_collections

from experiments import default


def get_config() -> ml_collections.ConfigDict:
    return default.transfer_config("resnet101")
