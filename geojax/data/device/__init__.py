"""Training data made on the accelerators themselves (`config.data.source = 'device'`): the CPU
renderer's shapes, styles and augmentation redone in JAX, per sample and with static shapes.

    batches      geojax.data.device.batches   batch_fn, local_batch, make_batch (sharded, keyed
                                              by seed, step and sample index)
    painting     geojax.data.device.render    render_sample, sample_style, render
    shapes       geojax.data.device.geometry  sample_geometry, signed_distance, coverage
    augmentation geojax.data.device.augment   compose(spec) of flips, turns, affine, colour, blur,
                                              noise
    pixels       geojax.data.device.pixels    blur, colour spaces, quantise, noise bank, mask box
"""
