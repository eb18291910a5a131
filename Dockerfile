# syntax=docker/dockerfile:1
# Images for the two things geojax runs itself (TF Serving uses the official
# tensorflow/serving image, see serving/):
#   docker build --target train -t geojax-train .    python -m geojax.main ...
#   docker build --target proxy -t geojax-proxy .    the detection proxy on :8000
ARG PYTHON=3.11.7

FROM python:${PYTHON}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY geojax ./geojax
RUN python -m venv /opt/venv
RUN /opt/venv/bin/pip install . \
 # albumentations pulls in the plain OpenCV wheel, which shadows the contrib build (see Makefile)
 && /opt/venv/bin/pip uninstall -y opencv-python-headless \
 && /opt/venv/bin/pip install --force-reinstall --no-deps \
      "opencv-contrib-python-headless==$(/opt/venv/bin/python -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python-headless"))')" \
 && /opt/venv/bin/python -c "import cv2; cv2.ximgproc.segmentation"

FROM python:${PYTHON}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 WANDB_DIR=/tmp
RUN useradd --create-home --uid 10001 geojax
WORKDIR /app
COPY experiments ./experiments

FROM runtime AS train
COPY --from=build /opt/venv /opt/venv
USER 10001
ENTRYPOINT ["python", "-m", "geojax.main"]
CMD ["--config=experiments/quick.py", "--workdir=/tmp/runs/quick"]

FROM build AS build-serve
RUN /opt/venv/bin/pip install ".[serve]"

FROM runtime AS proxy
COPY --from=build-serve /opt/venv /opt/venv
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["python", "-m", "geojax.proxy", "--host", "0.0.0.0", "--port", "8000"]
