"""The console of the commands: native libraries' start-up lines kept off it by default.

TensorFlow and JAX's CUDA plugin write their start-up notes (oneDNN, CUDA stubs and a failed
cuInit on a machine without a GPU, XLA's service on its first compiled function) from C++
before absl's logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not reach them.
`quiet_start_up` imports both, probes TensorFlow's devices and compiles one trivial function with
file descriptor 2 pointed at /dev/null; anything later prints as usual.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block (Python's own stderr is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> Any:
    """TensorFlow, imported on first use. It stays out of module level everywhere: it takes
    seconds and much memory, training processes must not load it (on a GPU it would take the
    memory JAX needs), and the proxy and the model server's flags and codecs work without it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # deferred: see the docstring

    return tf


def quiet_start_up(tensorflow: bool = True, jax: bool = True) -> None:
    """Import TensorFlow and JAX, probe TensorFlow's devices and compile one trivial TensorFlow
    function, without their start-up lines."""
    with native_stderr_silenced():
        if tensorflow:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe
            # XLA's service announces itself on the first compiled function (export's parity
            # check and the model server run jax2tf graphs through XLA).
            tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(1.0))
        if jax:
            # Imported only: starting its backends here would come before a multi-process
            # run's jax.distributed.initialize, which must be first.
            import jax as jax_module  # noqa: F401
