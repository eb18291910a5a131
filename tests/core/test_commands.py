"""Every command ends a user's mistake the same way: one line `geojax.<command>: message` on
stderr, exit status 2, no traceback (`geojax.core.errors.user_errors`)."""

import os
import subprocess
import sys

import pytest

from tests.train_setup import REPO


@pytest.mark.parametrize("command, args, env, says", [
    ("geojax.main", ["--config", "experiments/quick.py", "--workdir", "{tmp}/w",
                     "--config.model.name=foo"], {}, "model"),
    ("geojax.evaluate", ["--workdir", "{tmp}/none", "--data_dir", "{tmp}", "--output", "{tmp}/r.json"], {}, "none"),
    ("geojax.predict", ["--model", "{tmp}/none", "x.png"], {}, "none"),
    ("geojax.export", ["--workdir", "{tmp}/none", "--base_path", "{tmp}/m"], {}, "none"),
    ("geojax.registry", ["--base_path", "{tmp}/none", "list"], {}, "none"),
    ("geojax.sweep", ["{tmp}/none.yaml"], {}, "none.yaml"),
    ("geojax.data", ["generate", "--out", "/dev/null/x", "--per_class", "1"], {}, "/dev/null/x"),
    ("geojax.proxy", [], {"GEOJAX_ROLLOUT": "split:150"}, "GEOJAX_ROLLOUT"),
    ("geojax.model_server", ["--port", "0", "--model_config_file", "{tmp}/none.config"], {},
     "none.config"),
])
def test_a_user_error_is_one_line_naming_the_command_and_exit_2(tmp_path, command, args, env,
                                                                 says):
    result = subprocess.run(
        [sys.executable, "-m", command, *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **env})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{command}: ") and says in last, result.stderr
