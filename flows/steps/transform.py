"""`transform`: reshape data with a JMESPath expression over `{input, steps}`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from flows import templating
from flows.steps.base import StepBase, StepContext, StepError, registry


@registry.register
class TransformStep(StepBase):
    """Evaluate `expression` over the run context; its result is the step output."""

    type: Literal["transform"]
    expression: str = Field(min_length=1, max_length=4096)

    @field_validator("expression")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return templating.check_expression(value)

    async def execute(self, context: StepContext) -> Any:
        try:
            return templating.search(self.expression, context.data)
        except templating.TemplateError as exc:
            raise StepError(str(exc)) from exc
