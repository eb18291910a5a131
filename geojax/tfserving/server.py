"""The server wired together and started, as model_servers/server.cc does: read the configs,
start the core and wait for its models, then serve gRPC and (unless disabled) REST, polling the
model config file for changes; it blocks until the servers stop."""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

import uvicorn

from geojax.core.console import import_tensorflow
from geojax.tfserving.api import ModelServerApi
from geojax.tfserving.config import (
    IGNORED_FLAGS,
    read_config_file,
    read_monitoring_config,
    single_model_config,
)
from geojax.tfserving.core import ServerCore, ServerOptions
from geojax.tfserving.grpc_server import make_grpc_server
from geojax.tfserving.metrics import prometheus_path
from geojax.tfserving.rest_server import RestApi
from geojax.tfserving.status import INVALID_ARGUMENT, ServingError

log = logging.getLogger(__name__)


def _parse_channel_arguments(text: str) -> list[tuple[str, Any]]:
    pairs = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        pairs.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return pairs


def poll_config_file(core: ServerCore, path: str, period: int, stop: threading.Event) -> None:
    """PollFilesystemAndReloadConfig every `period` seconds; errors are logged, the old state
    keeps serving."""
    last_error, applied = None, None
    while not stop.wait(period):
        try:
            config = read_config_file(path)
            if config != applied:
                core.reload_config(config)
            applied, last_error = config, None
        except ServingError as err:
            if err.message != last_error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s",
                          err.message)
            last_error = err.message


def serve(args: argparse.Namespace) -> int:
    """Start the core, wait for the models, then the gRPC and REST servers; block."""
    for name in IGNORED_FLAGS:
        if getattr(args, name) is not None:
            log.info("--%s=%s accepted for compatibility with tensorflow_model_server and "
                     "ignored by this server", name, getattr(args, name))
    rest_api = args.rest_api_port not in (0, args.port)
    metrics_path = None
    if args.monitoring_config_file and rest_api:
        # Read before any model loads (TF Serving reads it when starting the REST server), so
        # a bad file fails fast; like TF Serving, it is not read without a REST port.
        metrics_path = prometheus_path(read_monitoring_config(args.monitoring_config_file))
    tf = import_tensorflow()
    if args.tensorflow_intra_op_parallelism > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism > 0:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if args.model_config_file:
        config = read_config_file(args.model_config_file)
    elif args.model_base_path:
        log.info("Building single TensorFlow model file config:  model_name: %s "
                 "model_base_path: %s", args.model_name, args.model_base_path)
        config = single_model_config(args.model_name, args.model_base_path)
    else:
        raise ServingError(INVALID_ARGUMENT, "Both server_options.model_base_path and "
                           "server_options.model_config_file are empty!")
    core = ServerCore(ServerOptions(
        allow_version_labels_for_unavailable_models=(
            args.allow_version_labels_for_unavailable_models),
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        max_tensor_bytes=args.max_tensor_bytes))
    stop = threading.Event()
    try:
        core.reload_config(config)
        api = ModelServerApi(core)
        grpc_server = make_grpc_server(api, f"{args.host}:{args.port}",
                                       _parse_channel_arguments(args.grpc_channel_arguments),
                                       max_workers=max(16, args.max_concurrent_requests),
                                       max_concurrent_requests=args.max_concurrent_requests)
        grpc_server.start()
        log.info("Running gRPC ModelServer at %s:%d ...", args.host, args.port)
        if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=poll_config_file, daemon=True, name="config-poll", args=(
                core, args.model_config_file, args.model_config_file_poll_wait_seconds, stop)
            ).start()
        if args.rest_api_port == args.port:
            log.error("--rest_api_port cannot be same as --port. Please use a different port "
                      "for HTTP/REST API. Skipped exporting HTTP/REST API.")
        elif rest_api:
            log.info("Exporting HTTP/REST API at:%s:%d ...", args.host, args.rest_api_port)
            if metrics_path is not None:
                log.info("Exporting Prometheus metrics at %s on the HTTP/REST port",
                         metrics_path)
            uvicorn.Server(uvicorn.Config(
                RestApi(api, args.rest_api_timeout_in_ms, metrics_path, args.max_request_bytes,
                        args.max_concurrent_requests), host=args.host,
                port=args.rest_api_port, log_level="warning", access_log=False,
                lifespan="off")).run()
            grpc_server.stop(grace=1)
            return 0
        grpc_server.wait_for_termination()
        return 0
    finally:
        stop.set()
        core.stop()
