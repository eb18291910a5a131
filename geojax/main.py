"""Command line for training: `python -m geojax.main --config experiments/quick.py --workdir W`.

`--config.key=value` overrides any config field; rerunning the same command resumes from the
workdir's latest checkpoint. User errors (unknown config field, a bad value in any section:
training, data or model, an unreadable checkpoint) print `geojax.main: message` and exit 2
before anything is written; no traceback. The console shows
geojax's own lines, the metrics and clu's progress line (steps/s, ETA); `--verbose` adds the
libraries' INFO logging.
"""

import logging
import os
from collections.abc import Sequence

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from geojax.core.console import quiet_start_up
from geojax.core.errors import exit_with, user_errors

PROG = "geojax.main"

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (experiments/*.py).", lock_config=True
)
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Also show the libraries' INFO logging (Orbax's per-checkpoint lines, "
    "JAX's backend probes); by default the console shows geojax's own lines, the metrics, the "
    "progress line and every warning; --verbose also shows TensorFlow's and JAX's C++ "
    "start-up lines (oneDNN, CUDA probes).")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Validate the config, build the model and compile the train step for the "
    "configured devices without running it; print parameters, FLOPs per image and step and the "
    "compiled step's memory per device, then exit (nothing is written to --workdir).")
flags.mark_flags_as_required(["config", "workdir"])
# INFO lines the console keeps without --verbose: geojax's own (the progress, evaluation and
# checkpoint lines of geojax.training.console among them).
_OWN_INFO = (f"{os.sep}geojax{os.sep}",)


class _OwnInfoOnly(logging.Filter):
    """Passes warnings and errors from anyone, INFO only from `_OWN_INFO`'s sources."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(
            part in record.pathname for part in _OWN_INFO)


class _ConsoleFormatter(logging.Formatter):
    """Time and message; warnings and errors keep their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            time_part, _, message = text.partition(" ")
            return f"{time_part} {record.levelname}: {message}"
        return text


def quiet_console(verbose: bool) -> None:
    """Keeps third-party INFO logging (one checkpoint is dozens of Orbax lines) off the console
    unless `verbose`, and TensorFlow's and JAX's C++ start-up lines (`quiet_start_up`)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_start_up()
    handler = absl_logging.get_absl_handler()
    handler.addFilter(_OwnInfoOnly())
    # "12:03:04 message" instead of absl's level, date, microseconds, thread id and source.
    handler.setFormatter(_ConsoleFormatter("%(asctime)s %(message)s", "%H:%M:%S"))


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
    """absl's parser, with its errors (a missing or bad flag, a config that does not load)
    through the one exit: `geojax.main: message`, status 2."""
    try:
        args = flags.FLAGS(list(argv))
        # config_flags defers a config file's load error until the config is first used.
        _CONFIG.value.keys()
    except flags.Error as e:
        exit_with(PROG, f"{e} (--helpfull lists the flags)")
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
        exit_with(PROG, f"{_config_error_message(e, argv)} (--helpfull lists the flags)")
    return args


def format_dry_run(plan: dict) -> str:
    """The dry run's report, one fact a line."""
    gib = 2**30
    memory = plan["memory_per_device_bytes"]
    lines = [
        f"model            {plan['model']} at {plan['input_size']} px, "
        f"{plan['parameters']:,} parameters",
        f"devices          {plan['devices']} (batch {plan['batch_size']}, "
        f"{plan['batch_size'] // plan['devices']} per device)",
        f"train step       {plan['flops_per_step_per_device'] / 1e9:,.1f} GFLOPs per device, "
        f"{plan['flops_per_image'] / 1e9:,.3f} GFLOPs per image",
    ]
    if memory:
        total = sum(memory[k] for k in ("arguments", "outputs", "temporaries"))
        lines.append(f"memory           {total / gib:.2f} GiB per device (arguments "
                     f"{memory['arguments'] / gib:.2f}, outputs {memory['outputs'] / gib:.2f}, "
                     f"temporaries {memory['temporaries'] / gib:.2f})")
    lines.append("compiled: the config runs (dry run, nothing trained or written)")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_console(_VERBOSE.value)
    # Imported here, not at the top: data-loader worker processes re-import this module, and
    # must not pay for JAX and the metric writers' TensorFlow.
    from geojax.training.loop import dry_run, train_and_evaluate

    workdir = _WORKDIR.value
    assert workdir is not None  # a required flag
    # Config, checkpoint and non-finite-loss errors (and any other UserError): a message.
    with user_errors(PROG):
        if _DRY_RUN.value:
            print(format_dry_run(dry_run(_CONFIG.value)))
            return
        train_and_evaluate(_CONFIG.value, workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
