"""REST's JSON <-> tensors as util/json_tensor.cc does: a predict request's `instances` (row)
or `inputs` (columnar) to arrays by the signature's dtypes, with TF Serving's messages, and
outputs to `predictions` / `outputs` JSON printed as TF Serving prints it."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geojax.tfserving.status import INVALID_ARGUMENT, UNIMPLEMENTED, ServingError, code_name

ECHO_LIMIT = 200
"""Characters of a request quoted back in an error message (TF Serving quotes it all)."""

INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int16": (-2**31, 2**31 - 1),
              "int8": (-2**31, 2**31 - 1), "uint8": (-2**31, 2**31 - 1),
              "int64": (-2**63, 2**63 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}
NUMPY_TYPES = {"float": np.float32, "double": np.float64, "int32": np.int32, "int16": np.int16,
               "int8": np.int8, "uint8": np.uint8, "int64": np.int64, "uint32": np.uint32,
               "uint64": np.uint64, "bool": np.bool_, "string": object}


def echo(text: str) -> str:
    """`text` cut to ECHO_LIMIT characters for an error message (a request can be megabytes)."""
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}... ({len(text):,} characters)"


def _json_text(value: Any) -> str:
    return echo(json.dumps(value, indent=4))


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _leaf_value(value: Any, dtype: str) -> Any:
    """AddValueToTensor / JsonDecodeBase64Object for one JSON leaf."""
    def type_error() -> ServingError:
        return ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} Type: "
                            f"{_json_type(value)} is not of expected type: {dtype}")

    if isinstance(value, dict):
        if dtype != "string":
            raise type_error()
        if not _is_b64(value):
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} not "
                               "formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as err:
            raise ServingError(INVALID_ARGUMENT, "Unable to base64 decode") from err
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in ("float", "double"):
        if not number:
            raise type_error()
        digits = 24 if dtype == "float" else 53
        limit = float(np.finfo(np.float32 if dtype == "float" else np.float64).max)
        lossless = (abs(value) <= 2**digits - 1 if isinstance(value, int)
                    else not math.isfinite(value) or abs(value) <= limit)
        if not lossless:
            raise ServingError(INVALID_ARGUMENT, f"Cannot convert JSON value: "
                               f"{_json_text(value)} to {dtype} without loss of precision.")
        return float(value)
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise type_error()
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise type_error()
        return value.encode()
    if dtype == "bool":
        if not isinstance(value, bool):
            raise type_error()
        return value
    raise ServingError(UNIMPLEMENTED, f"Conversion of JSON Value: {_json_text(value)} to type: "
                       f"{dtype}")


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: str, out: list) -> None:
    """FillTensorProto: every leaf at depth rank, every list of the size its level expects."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} found at "
                               f"incorrect level: {level + 1} in the JSON DOM. Expected at "
                               f"level: {rank}")
        out.append(_leaf_value(value, dtype))
        return
    if level >= rank:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected level: {level} "
                           f"expected < {rank}")
    if len(value) != shape[level]:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected size: {len(value)}"
                           f" at level: {level} expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def json_to_array(value: Any, dtype: str) -> np.ndarray:
    """One JSON value (scalar or nested lists) of a signature input to an array."""
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    return _as_array(flat, shape, dtype)


def _as_array(flat: list, shape: Sequence[int], dtype: str) -> np.ndarray:
    if dtype == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype in ("int16", "int8", "uint8"):
        # Parsed as int32 (int_val) and narrowed by the C++ tensor, which wraps around.
        return np.asarray(flat, dtype=np.int64).astype(NUMPY_TYPES[dtype]).reshape(shape)
    return np.asarray(flat, dtype=NUMPY_TYPES[dtype]).reshape(shape)


def _instances_to_arrays(instances: list, dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: rows batched along a new first dimension."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise ServingError(INVALID_ARGUMENT, "instances is a plain list, but expecting list of "
                           "objects as multiple input tensors required as per tensorinfo_map")

    def is_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64(value)

    objects = is_object(instances[0])
    names = sorted(dtypes)
    rows: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if objects and not is_object(element):
            raise ServingError(INVALID_ARGUMENT, f"Expecting object but got list at item {index}"
                               " of input list")
        if not objects and is_object(element):
            raise ServingError(INVALID_ARGUMENT, "Expecting value/list but got object at item "
                               f"{index} of input list")
        items = element.items() if objects else [(names[0], element)]
        for name, value in items:
            try:
                if name not in dtypes:
                    raise ServingError(INVALID_ARGUMENT,
                                       f"JSON object: does not have named input: {name}")
                array = json_to_array(value, dtypes[name])
                first = rows.setdefault(name, [array])[0]
                if array is not first and array.size != first.size:
                    raise ServingError(INVALID_ARGUMENT, f"Expecting tensor size: {first.size}"
                                       f" but got: {array.size}")
                if array is not first and array.shape != first.shape:
                    raise ServingError(INVALID_ARGUMENT, "Expecting shape "
                                       f"[{','.join(map(str, first.shape))}] but got: "
                                       f"[{','.join(map(str, array.shape))}]")
                if array is not first:
                    rows[name].append(array)
            except ServingError as err:
                key = f" key: {name}" if objects else ""
                raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {index}{key} "
                                   f"of 'instances' list. Error: "
                                   f"{code_name(err.code)}: {err.message}") from err
        if objects and set(element) != set(names):
            raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {index} of "
                               f"'instances' list. JSON object: {_json_text(element)} keys must "
                               f"be equal to: {','.join(names)}")
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def parse_predict_json(body: bytes, input_dtypes: Callable[[str], dict[str, str]]
                       ) -> tuple[str, dict[str, np.ndarray], str]:
    """FillPredictRequestFromJson: (signature_name, inputs, 'row' | 'columnar')."""
    if not body:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except RecursionError as err:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: nested too deeply") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        message, offset = (err.msg, err.pos) if isinstance(err, json.JSONDecodeError) else (
            "Invalid encoding in string.", err.start)
        raise ServingError(INVALID_ARGUMENT, f"JSON Parse error: {message} at offset: "
                           f"{offset}") from err
    if not isinstance(doc, dict):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Is not object")
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} not formatted "
                           "correctly. 'signature_name' key must be a string value.")
    dtypes = input_dtypes(signature)
    if not dtypes:
        raise ServingError(INVALID_ARGUMENT, "Failed to get input map for signature: "
                           f"{signature or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Not formatted "
                           "correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Excepting "
                               "'instances' to be an list/array")
        if not instances:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} No values in "
                               "'instances' array")
        return signature, _instances_to_arrays(instances, dtypes), "row"
    if "inputs" in doc:
        inputs = doc["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(dtypes) > 1:
                raise ServingError(INVALID_ARGUMENT, "inputs is a plain value/list, but "
                                   "expecting an object as multiple input tensors required as "
                                   "per tensorinfo_map")
            name = sorted(dtypes)[0]
            return signature, {name: json_to_array(inputs, dtypes[name])}, "columnar"
        arrays = {}
        for name in sorted(dtypes):
            if name not in inputs:
                raise ServingError(INVALID_ARGUMENT, f"Missing named input: {name} in 'inputs' "
                                   "object.")
            arrays[name] = json_to_array(inputs[name], dtypes[name])
        return signature, arrays, "columnar"
    raise ServingError(INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def format_decimal(value: float, float32: bool) -> str:
    """WriteDecimal: six significant digits if they round-trip, else full precision; '.0' on
    whole numbers; NaN / Infinity / -Infinity tokens."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    back = float(np.float32(text)) if float32 else float(text)
    if back != value:
        text = f"{value:.9g}" if float32 else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _values_json(array: np.ndarray, as_bytes: bool) -> str:
    """AddTensorValues: nested JSON arrays of one tensor's values."""
    kind = array.dtype.kind
    if array.dtype == object or kind == "S":
        def write(v: Any) -> str:
            data = bytes(v)
            if as_bytes:
                return json.dumps({"b64": base64.b64encode(data).decode()})
            return json.dumps(data.decode("utf-8", errors="replace"))
    elif kind == "f":
        float32 = array.dtype.itemsize <= 4

        def write(v: Any) -> str:
            return format_decimal(float(v), float32)
    elif kind == "b":
        def write(v: Any) -> str:
            return "true" if v else "false"
    else:
        def write(v: Any) -> str:
            return str(int(v))

    def nest(a: Any) -> str:
        if a.ndim == 0:
            return write(a[()])
        return "[" + ", ".join(nest(np.asarray(x, dtype=a.dtype)) for x in a) + "]"

    return nest(array)


def predict_json(outputs: dict[str, np.ndarray], layout: str) -> str:
    """MakeJsonFromTensors: {"predictions": rows} or {"outputs": columns}; names dropped when
    there is one output."""
    names = sorted(outputs)
    if layout == "columnar":
        parts = {n: _values_json(outputs[n], n.endswith("_bytes")) for n in names}
        body = parts[names[0]] if len(names) == 1 else "{" + ", ".join(
            f"{json.dumps(n)}: {parts[n]}" for n in names) + "}"
        return '{\n    "outputs": ' + body + "\n}"
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has no shape information ")
        size = outputs[name].shape[0]
        if batch is not None and size != batch:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has inconsistent batch "
                               f"size: {size} expecting: {batch}")
        batch = size
    rows = []
    for i in range(batch or 0):
        values = {n: _values_json(outputs[n][i:i + 1].reshape(outputs[n].shape[1:]),
                                  n.endswith("_bytes")) for n in names}
        rows.append(values[names[0]] if len(names) == 1 else "{" + ", ".join(
            f"{json.dumps(n)}: {values[n]}" for n in names) + "}")
    return '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"
