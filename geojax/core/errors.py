"""The one kind of error a user can fix, and the one way every command reports it.

Every library error that a user's input can cause (a bad config field, an unreadable image or
checkpoint, an unknown model version, a model server that is down) derives from `UserError`;
each command wraps its work in `user_errors(prog)`, which prints `prog: message` on stderr and
exits with status 2, with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

USAGE_STATUS = 2
"""The exit status of a command stopped by a user's mistake (argparse's and absl's too)."""


class UserError(Exception):
    """A mistake in what the user gave us; its message says what was wrong and how to fix it."""


def exit_with(prog: str, message: str) -> NoReturn:
    """`prog: message` on stderr, then exit 2: the one exit for a user's mistake."""
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(USAGE_STATUS)


@contextlib.contextmanager
def user_errors(prog: str, *also: type[BaseException]) -> Iterator[None]:
    """Turns a `UserError` (and the exception types in `also`, for example `OSError` where a
    command reads the user's files) raised inside the block into `exit_with(prog, message)`."""
    try:
        yield
    except (UserError, *also) as err:
        exit_with(prog, str(err))
