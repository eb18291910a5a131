"""Training a shape classifier, one module per job:

- `config`: the checks a config must pass before any work, and the model it describes;
- `state`: processes, device mesh, learning-rate schedule, optimizer, the initial train state;
- `steps`: losses, the data-parallel train and predict steps, feeding them global arrays;
- `checkpoints`: saving and restoring checkpoints (Orbax);
- `workdir`: the workdir's config, history and calibration files;
- `loop`: the training loop (`train_and_evaluate`, the command `geojax.main`) and its dry run;
- `throughput`: images/s, TFLOP/s and MFU as the loop logs them;
- `sweep`: a W&B sweep file run offline (the command `geojax.sweep`).
"""
