# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install, run the main job on the embedded default
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo clean

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

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

# Every experiment config with a full-size transfer backbone, two steps each (~20 min on 2 cores).
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
