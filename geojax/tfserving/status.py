"""Status codes as TF Serving returns them: error_codes.proto's numbers and names, and
`ServingError`, a refusal with its code and message (gRPC's status, REST's mapped by
`rest_server.HTTP_STATUS`)."""

from __future__ import annotations

from geojax.core.errors import UserError

# tensorflow/core/protobuf/error_codes.proto numbers, as used by StatusProto and gRPC.
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS = 9, 12, 13, 14, 15

CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
"""error_codes.proto's names by number (the status label of request_count)."""


def code_name(code: int) -> str:
    """error::Code_Name: 3 -> 'INVALID_ARGUMENT'."""
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else str(code)


class ServingError(UserError):
    """A request or config that TF Serving would refuse: a status code and its message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
