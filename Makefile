# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install, run the main job on the embedded default
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# What `make typecheck` holds to mypy: the whole geojax package, which passes.
TYPED := geojax

.PHONY: install test test-slow lint typecheck deploy-tools constraints demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	# albumentations depends on the plain opencv wheel, which shadows the contrib build's cv2
	# (selective search lives in cv2.ximgproc): keep only the contrib build.
	$(PY) -m pip uninstall --quiet -y opencv-python-headless opencv-python
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
		"opencv-contrib-python-headless$$($(PY) -c 'import importlib.metadata as m; print("==" + m.version("opencv-contrib-python-headless"))')"
	$(PY) -c "import cv2; cv2.ximgproc.segmentation; print('opencv', cv2.__version__, 'with contrib')"
	touch $(STAMP)

# promtool and prometheus (Debian package `prometheus`) for tests/deploy/test_deploy.py and
# tests/deploy/test_deploy.py: installed when missing and we are root (CI, the dev machines);
# otherwise those tests say how to install them (and fail under CI=true).
deploy-tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the Debian package prometheus (promtool, prometheus)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends prometheus >/tmp/geojax-apt.log 2>&1 \
	      || { apt-get update -qq >>/tmp/geojax-apt.log 2>&1 \
	           && apt-get install -y -qq --no-install-recommends prometheus >>/tmp/geojax-apt.log 2>&1; } \
	      || { tail -20 /tmp/geojax-apt.log; exit 1; }; \
	  else \
	    echo "promtool/prometheus not found: apt-get install prometheus (as root) to run the deploy tests"; \
	  fi; \
	fi

test: $(STAMP) deploy-tools
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

# Every experiment config with a full-size transfer backbone, two steps each (~20 min on 2 cores).
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy --ignore-missing-imports --follow-imports=silent \
		--cache-dir $(VENV)/.mypy_cache $(TYPED)

# Pins for the Docker images (deploy/docker/constraints.txt): the versions installed here, which
# the tests ran with. Run after changing pyproject.toml and `make install`.
constraints: $(STAMP)
	{ echo "# pip constraints for the Docker images: written by \`make constraints\` from the"; \
	  echo "# environment the tests ran in. Do not edit by hand."; \
	  $(PY) -m pip freeze --exclude-editable --disable-pip-version-check; } \
	  > deploy/docker/constraints.txt

demo: $(STAMP)
	$(PY) -m scripts.demo

clean:
	rm -rf $(VENV) build *.egg-info
