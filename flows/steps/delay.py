"""`delay`: wait a number of seconds (at most 15 minutes)."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from flows.steps.base import StepBase, StepContext, registry


@registry.register
class DelayStep(StepBase):
    """Wait before the next step."""

    type: Literal["delay"]
    seconds: float = Field(ge=0, le=900)

    async def execute(self, context: StepContext) -> dict[str, float]:
        await asyncio.sleep(self.seconds)
        return {"waited_s": self.seconds}
