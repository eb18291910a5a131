#!/usr/bin/env bash
# The accelerator checks, as one prepared run on a lent GPU machine (BENCHMARKS.md):
#
#   bash scripts/gpu_checks.sh OUT_DIR      # from the repo root; wheels for what the machine
#                                           # lacks in .whl/ (see BENCHMARKS.md, "GPU")
#
# The lent machines have jax (CUDA), flax, optax and torch but no network and none of clu,
# ml_collections or albumentations; fetch those here first (cp312, no dependencies) and carry
# .whl/ along (it is not tracked):
#   pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl clu ml_collections \
#     albumentations albucore pydantic pydantic_core stringzilla simsimd annotated-types \
#     typing-inspection
#
# 1. device data: bare train step vs render+augment+train in one step vs the CPU loader vs
#    PyTorch eager and torch.compile, and torch.compile fed by the CPU loader (custom:
#    SE-ResNet, 224 px, bf16, batch 256);
#    then each part of render + augment timed alone (where the device data's time goes), and
#    scripts/gpu_aot_report.py's estimate of the same program (a second calibration point for
#    the estimate made without a GPU, BENCHMARKS.md);
# 2. bench_train: every experiment's train step at its input size (PyTorch and the loader are
#    in part 1, to keep the run inside the lease);
# 3. the custom model trained on device data for a few thousand steps, judged on held-out
#    images from the independent PIL renderer (scripts/heldout_shapes.py).
# Each part has its own time limit, so one slow part cannot take the others' output with it;
# together 580 s, inside one 600 s device call.
set -uo pipefail
OUT_DIR=${1:-/tmp/gpu_checks}
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi -L
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"

part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log" | grep -v "^WARNING\|^I0000\|^W0000"
  echo "=== $name: rc=${PIPESTATUS[0]} in $((SECONDS - start)) s"
}

part device_data 260 python3 -m scripts.bench_device_data --config custom --batch_size 256 \
  --dtype bfloat16 --steps 30 --workers 16
part device_parts 60 python3 -m scripts.bench_device_data --config custom --batch_size 256 \
  --steps 20 --parts
part aot_report 40 python3 -m scripts.gpu_aot_report --no-train --top 20
part bench_train 110 python3 -m scripts.bench_train --batch_size 256 --dtype bfloat16 --steps 20 \
  --no-torch --no-loader --configs custom quick light resnet50 efficientnet_b0 mobilenet_v2 \
  mobilenet_v3_small resnet101 efficientnet_b3 mobilenet_v3_large
part heldout 110 python3 -m scripts.gpu_heldout --config custom --steps 2000 --batch_size 128
