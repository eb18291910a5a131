"""TF Serving's command line and config files: its flags with their names and defaults
(model_servers/main.cc, server.h; flags this server does not model are accepted and ignored),
and the text-proto files they name (ModelServerConfig, MonitoringConfig) read as
ParseProtoTextFile does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import geojax.tfserving
from geojax.tfserving.api import MAX_CONCURRENT_REQUESTS
from geojax.tfserving.metrics import PROMETHEUS_PATH, monitoring_config_message
from geojax.tfserving.rest_server import MAX_REQUEST_BYTES
from geojax.tfserving.servable import MAX_TENSOR_BYTES
from geojax.tfserving.status import INVALID_ARGUMENT, ServingError

IGNORED_FLAGS = {
    "grpc_socket_path": str, "rest_api_num_threads": int, "rest_api_enable_cors_support": bool,
    "enable_batching": bool, "batching_parameters_file": str,
    "enable_per_model_batching_parameters": bool, "num_load_threads": int,
    "num_unload_threads": int, "max_num_load_retries": int, "load_retry_interval_micros": int,
    "flush_filesystem_caches": bool, "tensorflow_session_parallelism": int,
    "tensorflow_session_config_file": str, "use_alts_credentials": bool,
    "ssl_config_file": str, "platform_config_file": str,
    "per_process_gpu_memory_fraction": float, "saved_model_tags": str, "grpc_max_threads": int,
    "remove_unused_fields_from_bundle_metagraph": bool,
    "prefer_tflite_model": bool, "num_tflite_pools": int, "num_tflite_interpreters_per_pool": int,
    "enable_signature_method_name_check": bool, "xla_cpu_compilation_enabled": bool,
    "xla_gpu_compilation_enabled": bool, "enable_profiler": bool,
    "thread_pool_factory_config_file": str, "mixed_precision": str, "skip_initialize_tpu": bool,
    "enable_grpc_healthcheck_service": bool,
}
"""TF Serving flags accepted for a drop-in command line and logged as ignored: batching,
threading, TPU/TFLite and security options this stand-in does not model. (jax2tf
graphs need XLA, which TensorFlow's Python runtime always has.)"""


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.model_server",
                                     description=geojax.tfserving.__doc__.splitlines()[0])

    def flag(name: str, kind: type, default: Any, help: str) -> None:
        if kind is bool:
            parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default,
                                help=help)
        else:
            parser.add_argument(f"--{name}", type=kind, default=default, help=help)

    flag("port", int, 8500, "TCP port for the gRPC API")
    flag("rest_api_port", int, 8501, "TCP port for the HTTP/REST API; 0 disables it (the "
         "tensorflow/serving image passes 8501, the binary's default is 0)")
    flag("rest_api_timeout_in_ms", int, 30000, "timeout for HTTP/REST API calls")
    flag("host", str, "0.0.0.0", "bind address (this server's addition; TF Serving binds all)")
    flag("model_config_file", str, "", "ascii ModelServerConfig file; --model_name and "
         "--model_base_path are then ignored")
    flag("model_config_file_poll_wait_seconds", int, 0, "re-read --model_config_file this "
         "often; 0 reads it once")
    flag("model_name", str, "default", "name of the model (without --model_config_file)")
    flag("model_base_path", str, "", "path to the model's numbered versions (without "
         "--model_config_file)")
    flag("file_system_poll_wait_seconds", int, 1, "interval between scans of the model base "
         "paths for new versions")
    flag("allow_version_labels_for_unavailable_models", bool, False,
         "allow assigning unused version labels to versions that are not available yet")
    flag("enable_model_warmup", bool, True, "replay assets.extra/tf_serving_warmup_requests "
         "when a version loads")
    flag("num_request_iterations_for_warmup", int, 1, "times each warm-up request is run")
    flag("tensorflow_intra_op_parallelism", int, 0, "threads inside one op (0: TensorFlow "
         "chooses)")
    flag("tensorflow_inter_op_parallelism", int, 0, "ops run at once (0: TensorFlow chooses)")
    flag("monitoring_config_file", str, "", "ascii MonitoringConfig file; with "
         "prometheus_config { enable: true } the REST port serves the server's metrics in "
         f"Prometheus format at prometheus_config.path (default {PROMETHEUS_PATH})")
    flag("grpc_channel_arguments", str, "", "comma separated gRPC server arguments, "
         "e.g. grpc.max_connection_age_ms=2000")
    flag("max_request_bytes", int, MAX_REQUEST_BYTES, "largest REST request body; more is "
         "413 (this server's addition)")
    flag("max_tensor_bytes", int, MAX_TENSOR_BYTES, "largest request tensor by its declared "
         "shape; more is INVALID_ARGUMENT before allocating (this server's addition)")
    flag("max_concurrent_requests", int, MAX_CONCURRENT_REQUESTS, "requests run at once per "
         "API; gRPC refuses more (RESOURCE_EXHAUSTED), REST queues them within its timeout "
         "(this server's addition)")
    flag("version", bool, False, "print the version and exit")
    for name, kind in IGNORED_FLAGS.items():
        flag(name, kind, None, argparse.SUPPRESS)
    return parser


def read_text_proto(path: str, message: Any) -> Any:
    """ParseProtoTextFile: `message` filled from a text-format file, or INVALID_ARGUMENT naming
    the file (the parser's reason is the error's cause)."""
    try:
        return text_format.Parse(Path(path).read_text(), message)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as err:
        raise ServingError(INVALID_ARGUMENT, f"Invalid protobuf file: '{path}'") from err


def read_config_file(path: str) -> Any:
    """Parse a text-format ModelServerConfig (--model_config_file)."""
    return read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def read_monitoring_config(path: str) -> Any:
    """Parse a text-format MonitoringConfig (--monitoring_config_file)."""
    return read_text_proto(path, monitoring_config_message()())


def single_model_config(name: str, base_path: str) -> Any:
    """BuildSingleModelConfig: one model, latest version, platform tensorflow."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path,
                                        model_platform="tensorflow")
    return config
