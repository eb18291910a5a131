"""CPU: the strongest model this project trains without a GPU, in under 30 minutes on 2 cores.

quick's data and recipe (64 px, sizes 20-95%, every style and background, the device
augmentation, 15% shape-free images, the 8-view test-time averaging), plus the renderer's blur and noise in its own splits,
with the light CNN at full width (4x quick's convolution work per image) for 8000 steps. For a
GPU, train `custom` (the seed's SE-ResNet at 224 px).
"""

import ml_collections

from experiments import quick


def get_config() -> ml_collections.ConfigDict:
    config = quick.get_config()
    config.data.effects = True
    config.model.width = 1.0
    config.total_steps = 8000
    config.warmup_steps = 100
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.log_every_steps = 200
    return config
