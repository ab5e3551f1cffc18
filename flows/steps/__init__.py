"""Step types. Each type is one module that registers a pydantic model with an `execute`."""

from flows.steps import delay, http, transform  # noqa: F401  (importing registers them)
from flows.steps.base import STEP_OUTPUT_LIMIT_BYTES, StepContext, StepError, registry

__all__ = ["STEP_OUTPUT_LIMIT_BYTES", "StepContext", "StepError", "registry"]
