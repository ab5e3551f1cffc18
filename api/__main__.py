"""`python -m api`: serve the API with uvicorn on PORT."""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app, freeze_startup_objects
from flows.logs import configure_logging
from flows.settings import ApiSettings, SettingsError, load_settings

# Longer than the load balancer's 60 s idle timeout, so the ALB always closes idle
# connections first and never sends a request on a connection uvicorn is closing.
KEEP_ALIVE_S = 75


def main() -> int:
    try:
        settings = load_settings(ApiSettings)
        settings.api_key_list  # noqa: B018 - read the key secret at start, not on first request
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    configure_logging(settings.log_level)
    app = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(
        app,
        host="0.0.0.0",  # noqa: S104 - the container's port is what the load balancer reaches
        port=settings.port,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="*",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
