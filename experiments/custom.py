"""The seed's default: SE-ResNet at 224 px, Adam, batch 32, 50 epochs, early stopping."""

import ml_collections

from experiments import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config("se_resnet")
    config.batch_size = 32
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    default.epoch_schedule(config, 50)
    config.early_stopping_patience = 10  # epochs without a better validation accuracy
    return config
