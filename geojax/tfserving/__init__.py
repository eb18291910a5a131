"""A local stand-in for TensorFlow Serving: its gRPC and REST protocols over the same SavedModels.

    python -m geojax.model_server --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --model_config_file_poll_wait_seconds=10 \\
        --allow_version_labels_for_unavailable_models=true [--host=127.0.0.1]
    python -m geojax.model_server --model_name=geojax --model_base_path=export/geojax

TF Serving's `tensorflow_model_server` is not on PyPI or in Debian, so development machines and
tests run this server; deployment runs the real `tensorflow/serving` image with the same flags, the
same model base path and the same `models.config`. A client cannot tell the two apart by the
protocol: the same protos, routes, JSON shapes, status codes and (where TF Serving's source states
them) the same error messages.

The package is laid out the way TF Serving's sources are; each module names the files it was
read from (paths under `tensorflow_serving/` in the tensorflow/serving repository):

- `status`: error codes and their names (tensorflow's `core/protobuf/error_codes.proto`,
  `error::Code_Name`), and `ServingError`, a status code with its message;
- `metrics`: monitoring -- `config/monitoring_config.proto`, `g3doc/serving_config.md`
  (Monitoring Configuration), `util/prometheus_exporter.cc` (names, text format), the metrics'
  definitions in `servables/tensorflow/util.cc`, `saved_model_warmup_util.cc` and tensorflow's
  `tensorflow/cc/saved_model/loader.cc`, and where they are recorded:
  `model_servers/prediction_service_impl.cc` (`Predict`), `servables/tensorflow/predict_util.cc`
  (`RunPredict`); `model_servers/http_server.cc` (`CreateAndStartHttpServer`) for the path;
- `servable`: one loaded SavedModel version -- `servables/tensorflow/predict_util.cc`, tensors
  to and from TensorProto, and warm-up: `servables/tensorflow/saved_model_warmup.cc`,
  `saved_model_warmup_util.cc`;
- `core`: config, versions, labels -- `model_servers/server_core.cc` (`ReloadConfig`,
  `UpdateModelVersionLabelMap`, `ServableRequestFromModelSpec`, `GetModelVersionForLabel`),
  `core/manager.h` (`ServableRequest::DebugString`), `core/basic_manager.cc` ("Servable not found
  for request: ..."), `config/model_server_config.proto`; the load-before-unload order is the
  AvailabilityPreservingPolicy that `main.cc` names (its source was not re-read here);
- `api`: the services' semantics shared by gRPC and REST --
  `model_servers/prediction_service_impl.cc`, `servables/tensorflow/get_model_metadata_impl.cc`,
  `model_servers/get_model_status_impl.cc`, `model_servers/model_service_impl.cc`;
- `grpc_server`: `apis/prediction_service.proto`, `apis/model_service.proto` and the messages
  they use;
- `json_tensor`: REST JSON <-> tensors -- `util/json_tensor.cc` (request parsing,
  `predictions`/`outputs` shapes, float printing, `_bytes` outputs as `{"b64": ...}`, messages);
- `rest_server`: the REST API -- `g3doc/api_rest.md`, `model_servers/http_rest_api_util.cc`
  (routes, label/version parsing, JSON of status and metadata),
  `model_servers/http_rest_api_handler.cc` and its test, `model_servers/http_server.cc`
  (`ToHTTPStatusCode`, `ProcessPrometheusRequest`),
  `servables/tensorflow/testdata/saved_model_half_plus_two_2_versions_metadata.json`;
- `config`: flags -- `model_servers/main.cc`, `model_servers/server.h` (names, defaults) -- and
  the text-proto config files;
- `server`: `model_servers/server.cc` (`BuildAndStart`, `PollFilesystemAndReloadConfig`): the
  parts wired together and started. `geojax/model_server.py` is the command around it.

Behaviour of the released server (labels at startup, status history, rollback order) was
cross-checked with a public field guide's notes taken on `tensorflow/serving:2.21.0`.

TF Serving behaviours kept on purpose, because the deployed server has them:

- A version label may only name a version that is AVAILABLE when the config is read, so a config
  that adds a version and labels it in the same change is refused (FAILED_PRECONDITION, the old
  state keeps serving and each poll logs it again). With labels in the config at startup the
  server does not start unless `--allow_version_labels_for_unavailable_models=true`, which lets a
  *new* label name a version that is not loaded yet (moving an existing label still needs the
  version AVAILABLE). Requests naming an unknown label get INVALID_ARGUMENT (REST 400):
  "Unrecognized servable version label: L"; unknown models and versions get NOT_FOUND (REST 404).
- Model status lists every version the server has seen, with state START/LOADING/AVAILABLE/
  UNLOADING/END, until restart; status by label is status of all versions (GetModelStatus
  reads only `model_spec.version`).
- New models (and all models at startup) are waited for before a reload returns; new versions of
  known models load in the background, newest first, and an old version unloads only once an
  aspired version is AVAILABLE.
- `model_platform` must be "tensorflow" in a config file.
- `--monitoring_config_file` (a MonitoringConfig text proto) with `prometheus_config { enable:
  true }` serves Prometheus text on the REST port at `prometheus_config.path` (default
  `/monitoring/prometheus/metrics`); without it, or at any other non-/v1/ path, the REST port
  answers 404. The metrics, per server, with TF Serving's names (the TensorFlow monitoring
  name with "/" made ":"), labels, microsecond units, buckets (10 us x 1.8^i, 33 limits, then
  +Inf) and text (TYPE lines, counters without `_total`, histograms as `_bucket`/`_sum`/`_count`):
  `:tensorflow:serving:request_count` {model_name, status} and
  `:tensorflow:serving:request_latency` {model_name, API, entrypoint} (only OK requests) for
  each Predict, over gRPC (API "Predict", entrypoint "GRPC") and REST (API the URL's verb,
  entrypoint "REST"); `:tensorflow:serving:runtime_latency` {model_name, API, runtime="TF1"}
  for each run of the graph, warm-up included; `:tensorflow:serving:model_warmup_latency`
  {model_path, status}; `:tensorflow:cc:saved_model:load_attempt_count` {model_path, status
  "success"|"fail"} and `:tensorflow:cc:saved_model:load_latency` {model_path}. As in TF
  Serving, GetModelMetadata and GetModelStatus are not counted. The REST accounting follows
  `HttpRestApiHandler::ProcessRequest`, which hands the model name and verb to
  http_server.cc for its metrics (that caller's current text was not re-read here).

Not implemented: Classify, Regress and MultiInference (UNIMPLEMENTED; warm-up records of those
kinds are skipped with a log line), request batching (so no
`:tensorflow:serving:batching_session:*` metrics), TensorFlow's own `:tensorflow:core:*`
metrics, load retries (a version that fails to load or warm up goes to END with the error in
its status, and loads again only after it leaves the policy and comes back), SSL, UNIX sockets,
`custom_model_config`, logging configs, and other model platforms. Flags for those are accepted
and logged as ignored, so the deployment's command line runs here unchanged; `--host` (bind
address) is this server's own addition. A REST call over `--rest_api_timeout_in_ms` gets 504
with this server's own message.

Limits (this server's own additions; TF Serving leaves them to its deployment): a REST body
over `--max_request_bytes` is refused with 413 before it is read in full (and is read
linearly); a request tensor whose declared shape holds more than `--max_tensor_bytes` is
refused (INVALID_ARGUMENT) before anything is allocated, however few values it sends; JSON
nested deeper than Python can parse is INVALID_ARGUMENT, not a 500; at most
`--max_concurrent_requests` Predict calls run at once on each API (gRPC refuses the excess with
RESOURCE_EXHAUSTED; REST queues it within its timeout), and work whose deadline passed while
queued never starts (a graph already running cannot be interrupted: it finishes, holding its
slot). Error texts quote at most `json_tensor.ECHO_LIMIT` characters of what was sent. Error
messages that come from inside TensorFlow (a wrong shape reaching the graph) are TensorFlow's
Python-side wording, not the C++ session's.
"""
