"""/detect through the real model server and proxy finds the shapes of generated scenes:
precision and recall >= 0.95 at IoU 0.5 with the quick model (experiments/quick.py), contour
proposals, the endpoint's default confidence and NMS.

Marked slow: training quick takes minutes on 2 CPU cores (the whole test, training and export
included: 5.6 min, 284 CPU-s, on a busy 2-core machine), over the default suite's budget, and
fewer steps do not reach the bar (300 steps: 75% test accuracy), so `make test-slow` runs it.
The default suite checks where /detect puts its boxes with the tiny untrained model
(tests/serving/test_proxy.py). To test a quick model trained already, e.g. the one `make demo` exports:

    GEOJAX_QUICK_MODEL=runs/demo/models/geojax .venv/bin/python -m pytest -m slow \\
        tests/serving/test_detection_quality.py

GEOJAX_QUICK_MODEL may name a SavedModel version, a model base path of numbered versions (the
highest is taken) or a training workdir (exported here first).

The scenes are the generator's defaults (flat, gradient and textured backgrounds; filled,
outline and bordered shapes; blur, noise and JPEG) at seeds 20000-20149; the detector's
settings were tuned on seeds 50000-50199; scripts/bench_detection.py reports from 10000.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geojax.data import compose_scene
from geojax.detection.scoring import mean_average_precision, precision_recall
from geojax.release.registry import Registry

from test_proxy import detect_scenes, serving

ROOT = Path(__file__).resolve().parents[2]
SCENE_SEED = 20_000
NUM_SCENES = 150

pytestmark = pytest.mark.slow


def run(*args):
    """A `python -m ...` step; on failure, the end of its output says why."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    assert done.returncode == 0, f"python {' '.join(args)} failed:\n{done.stdout[-3000:]}"


@pytest.fixture(scope="module")
def quick_stack(tmp_path_factory):
    """Model server + proxy serving a quick model from a fresh registry (production label)."""
    from geojax.inference.predictor import find_saved_model

    root = tmp_path_factory.mktemp("quick")
    base, config_file = root / "models" / "geojax", root / "models.config"
    registry = Registry(base, config_file=config_file)
    given = os.environ.get("GEOJAX_QUICK_MODEL")
    saved_model = find_saved_model(given) if given else None
    if saved_model is not None:
        incoming = registry.incoming_dir()
        shutil.rmtree(incoming)
        shutil.copytree(saved_model, incoming)
        version = registry.register(incoming, {"metrics": {}})
    else:
        workdir = given or str(root / "workdir")
        if not given:
            run("-m", "geojax.main", "--config", "experiments/quick.py", "--workdir", workdir)
        run("-m", "geojax.export", "--workdir", workdir, "--base_path", str(base),
            "--config_file", str(config_file))
        version = registry.versions()[-1].version
    registry.promote(version, "staging")
    registry.promote(version, "production")
    with serving(root, base, config_file) as (client, _):
        yield client


def test_detect_finds_the_shapes_of_generated_scenes(quick_stack):
    scenes = [compose_scene(np.random.default_rng(SCENE_SEED + i)) for i in range(NUM_SCENES)]
    predictions, _ = detect_scenes(quick_stack, scenes, method="contours")
    truth = [(scene.boxes, scene.labels) for scene in scenes]
    precision, recall = precision_recall(predictions, truth, iou=0.5)
    mean_ap = mean_average_precision(predictions, truth, iou=0.5)
    print(f"{len(scenes)} scenes, {sum(len(s.boxes) for s in scenes)} shapes: precision "
          f"{precision:.3f}, recall {recall:.3f}, mAP@0.5 {mean_ap:.3f}")
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
