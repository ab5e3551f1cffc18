"""How errors become responses: one short sentence in `detail`, field errors listed."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from flows import errors
from flows.steps import registry

log = logging.getLogger("api")

STATUS_BY_ERROR: dict[type[errors.FlowsError], int] = {
    errors.NotFoundError: 404,
    errors.VersionConflictError: 409,
    errors.IdempotencyConflictError: 409,
    errors.RunStateError: 409,
    errors.CursorError: 400,
}
# The database is down, failing over or out of connections: the client may retry as is.
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
                        psycopg.OperationalError, psycopg.InterfaceError)


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[FieldProblem] = []


def field_path(loc: tuple[Any, ...]) -> str:
    """`("body", "steps", 0, "http", "url")` -> `steps[0].url`."""
    parts: list[str] = []
    previous: Any = None
    for item in loc:
        if item in ("body", "query", "header", "path") and not parts:
            continue
        if isinstance(previous, int) and item in registry.names():
            continue  # the discriminator tag pydantic adds for a step's type
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
        previous = item
    return "".join(parts) or "body"


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "json_invalid":
            message = "request body is not valid JSON"
        problems.append(FieldProblem(field=field_path(tuple(error["loc"])), message=message))
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
    body = ErrorBody(detail=f"invalid request: {summary}", errors=problems)
    return JSONResponse(status_code=422, content=body.model_dump())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette lists only the matched route's methods; a path served by several
            # routes (GET and POST /flows) must list them all.
            headers["Allow"] = ", ".join(sorted(_allowed_methods(app, request)))
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail},
                            headers=headers)

    @app.exception_handler(errors.FlowsError)
    async def _domain(request: Request, exc: errors.FlowsError) -> JSONResponse:
        code = STATUS_BY_ERROR.get(type(exc), 400)
        return JSONResponse(status_code=code, content={"detail": str(exc)})

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The driver's message only: SQLAlchemy's own text carries the statement's parameters.
        log.warning("database unavailable",
                    extra={"error": f"{type(exc).__name__}: {getattr(exc, 'orig', exc)}"[:300]})
        return JSONResponse(status_code=503, content={"detail": "database unavailable; retry"},
                            headers={"Retry-After": "1"})

    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _unavailable)


def _allowed_methods(app: FastAPI, request: Request) -> set[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods
