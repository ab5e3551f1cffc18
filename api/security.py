"""Bearer-key authentication, compared in constant time against every configured key."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status


async def require_api_key(request: Request) -> None:
    """Reject the request with 401 unless it carries `Authorization: Bearer <a known key>`."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    keys: tuple[str, ...] = request.app.state.api_keys
    matched = False
    for key in keys:
        # Check every key, so the time taken does not tell which one came close.
        matched |= hmac.compare_digest(presented.strip().encode(), key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
