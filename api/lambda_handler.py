"""The API as a Lambda behind a Function URL (UltraStack): the same app through Mangum."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from api.app import create_app, freeze_startup_objects
from flows.logs import configure_logging
from flows.settings import ApiSettings, load_settings

_settings = load_settings(ApiSettings)
configure_logging(_settings.log_level)
# Lambda freezes between invocations, so there is no background relay thread: each new run
# is relayed inside its request, and the scheduler relays whatever that could not send.
_adapter = Mangum(create_app(_settings, relay_in_background=False), lifespan="off")
freeze_startup_objects()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _adapter(event, context)
