"""Errors the domain raises; the API maps each to one HTTP status."""


class FlowsError(Exception):
    """Base of the domain's errors."""


class NotFoundError(FlowsError):
    """No flow or run with that id."""


class VersionConflictError(FlowsError):
    """An update named a version that is no longer current."""


class IdempotencyConflictError(FlowsError):
    """An Idempotency-Key was reused with a different request body."""


class RunStateError(FlowsError):
    """The run's status does not allow the requested change."""


class CursorError(FlowsError):
    """A pagination cursor that this service did not issue."""
