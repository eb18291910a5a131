"""The release stage's user errors: an export that cannot be registered, a registry operation
that cannot be done."""

from __future__ import annotations

from geojax.core.errors import UserError


class ExportError(UserError, RuntimeError):
    """The export could not produce a correct SavedModel; nothing was registered."""


class RegistryError(UserError, ValueError):
    """A registry operation a user asked for that cannot be done; the message says why."""
