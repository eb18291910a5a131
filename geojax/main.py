"""Command line for training: `python -m geojax.main --config experiments/quick.py --workdir W`.

`--config.key=value` overrides any config field; rerunning the same command resumes from the
workdir's latest checkpoint. User errors (unknown config field, bad value, unreadable
checkpoint) exit with a one-paragraph message instead of a traceback.
"""

import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (experiments/*.py).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def _config_error_message(error: Exception, argv: Sequence[str]) -> str:
    """A one-line reason; config_flags reports an unknown field as a KeyError repr."""
    detail = str(error.args[0] if error.args else error)
    detail = detail.strip("'\"").replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
    if isinstance(error, AttributeError | KeyError):
        field = detail.split("'")[1] if detail.count("'") >= 2 else ""
        culprits = [a.split("=")[0] for a in argv
                    if a.startswith("--config.") and field in a.split("=")[0].split(".")]
        return (f"{culprits[0] if culprits else '--config override'} names a field the "
                f"config does not have ({detail})")
    if isinstance(error, OSError):
        return f"cannot load the --config file: {detail}"
    return f"bad --config: {type(error).__name__}: {detail}"


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's parser (which explains bad values itself), plus clear config errors."""
    try:
        args = app.parse_flags_with_usage(list(argv))
        # config_flags defers a config file's load error until the config is first used.
        _CONFIG.value.keys()
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
        sys.exit(f"FATAL Flags parsing error: {_config_error_message(e, argv)}\n"
                 "Pass --helpfull to see help on flags.")
    return args


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Imported here, not at the top: data-loader worker processes re-import this module, and
    # must not pay for JAX and the metric writers' TensorFlow.
    from geojax import train

    workdir = _WORKDIR.value
    assert workdir is not None  # a required flag
    try:
        train.train_and_evaluate(_CONFIG.value, workdir)
    except (train.ConfigError, train.CheckpointError) as e:
        sys.exit(f"geojax.main: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
