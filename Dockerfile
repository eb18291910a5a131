# syntax=docker/dockerfile:1
# Images for the two things geojax runs itself (TF Serving runs the official tensorflow/serving
# image, see deploy/):
#   docker build --target train -t geojax-train:0.1.0 .      python -m geojax.main ...
#   docker build --target train --build-arg JAX_EXTRA=cuda12 -t geojax-train:0.1.0-cuda12 .
#   docker build --target proxy -t geojax-proxy:0.1.0 .      the detection proxy on :8000
# Python packages are pinned by deploy/docker/constraints.txt: the versions the tests ran with
# (`make constraints` rewrites it). Both images run as user 10001 and work with a read-only root
# filesystem given a writable /tmp.
ARG PYTHON=3.11.7

FROM python:${PYTHON}-slim-bookworm AS build
# JAX's accelerator extra for training images (e.g. cuda12); empty: CPU.
ARG JAX_EXTRA=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md deploy/docker/constraints.txt ./
# Dependencies first, in a layer that changes only with pyproject.toml or the pins.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > requirements.txt \
 && /opt/venv/bin/pip install -r requirements.txt -c constraints.txt \
 && if [ -n "$JAX_EXTRA" ]; then /opt/venv/bin/pip install -c constraints.txt "jax[$JAX_EXTRA]"; fi \
 # albumentations pulls in the plain OpenCV wheel, which shadows the contrib build (see Makefile)
 && /opt/venv/bin/pip uninstall -y opencv-python-headless \
 && /opt/venv/bin/pip install --force-reinstall --no-deps \
      "opencv-contrib-python-headless==$(/opt/venv/bin/python -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python-headless"))')" \
 && /opt/venv/bin/python -c "import cv2; cv2.ximgproc.segmentation"
COPY geojax ./geojax
RUN /opt/venv/bin/pip install --no-deps .

# The proxy's own stage, from a fresh venv: only the `serve` extra (FastAPI, gRPC, TF Serving's
# protos with the TensorFlow they need, numpy, Pillow, OpenCV contrib) and geojax without its
# dependencies; none of the training stack (JAX, Flax, optax, orbax, clu, wandb, albumentations).
FROM python:${PYTHON}-slim-bookworm AS build-serve
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md deploy/docker/constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve']))" \
      > requirements-serve.txt \
 && /opt/venv/bin/pip install -r requirements-serve.txt -c constraints.txt
COPY geojax ./geojax
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/python -c "import cv2; cv2.ximgproc.segmentation; import geojax.proxy" \
 && /opt/venv/bin/python -c "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc"

FROM python:${PYTHON}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2 WANDB_DIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --gid 10001 geojax \
 && useradd --uid 10001 --gid 10001 --create-home --no-log-init geojax
WORKDIR /app
COPY experiments ./experiments
LABEL org.opencontainers.image.title="geojax" \
      org.opencontainers.image.description="Recognise and locate geometric shapes (JAX/Flax), served with TF Serving" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.1.0"

FROM runtime AS train
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# A batch job: no endpoint to probe (orchestrators watch the exit status).
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "geojax.main"]
CMD ["--config=experiments/quick.py", "--workdir=/tmp/runs/quick"]

FROM runtime AS proxy
COPY --from=build-serve /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
# Liveness (the process answers); readiness, /ready, needs the model server and is left to the
# orchestrator (deploy/compose.yaml, deploy/k8s).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["python", "-m", "geojax.proxy", "--host", "0.0.0.0", "--port", "8000"]
