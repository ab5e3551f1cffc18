"""The FastAPI application: flows, runs and health checks."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Response, status
from fastapi.responses import JSONResponse

from api.database import ConnectionLostError, Database
from api.errors import ErrorBody, install_error_handlers
from api.middleware import RequestGuard
from api.security import require_api_key
from flows import repository
from flows.db import create_engine
from flows.errors import VersionConflictError
from flows.models import (
    FlowCreate,
    FlowList,
    FlowPublic,
    FlowUpdate,
    RunCreate,
    RunList,
    RunPublic,
    RunStatus,
)
from flows.outbox import OutboxRelay, relay_outbox
from flows.queue import sqs_client
from flows.settings import ApiSettings

log = logging.getLogger("api")

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)}
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=500, description="`next_cursor` of a page.")]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=100,
                                       description="The ETag of the version being replaced.")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                              max_length=200,
                                              description="Same key, same flow: same run.")]


def create_app(settings: ApiSettings, *, relay_in_background: bool = True) -> FastAPI:
    """Build the app; with `relay_in_background` False (Lambda), runs are relayed in-request."""
    db = Database(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
    # The relay is a thread with its own small synchronous pool.
    relay_engine = create_engine(settings.sqlalchemy_url, pool_size=2)
    sqs = sqs_client()
    relay = OutboxRelay(relay_engine, sqs, settings.queue_url) if relay_in_background else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if relay:
            relay.start()
        yield
        if relay:
            relay.stop()
        await db.dispose()
        relay_engine.dispose()

    app = FastAPI(title="Flow Builder API", version="1.0.0", lifespan=lifespan,
                  responses=ERRORS)
    app.state.api_keys = settings.api_key_list

    async def after_commit() -> None:
        if relay:
            relay.notify()
            return
        try:
            await asyncio.to_thread(relay_outbox, relay_engine, sqs, settings.queue_url, limit=10)
        except (BotoCoreError, ClientError) as exc:
            log.warning("queue unavailable; the scheduler will relay", extra={"error": str(exc)})

    install_error_handlers(app)
    app.include_router(_health_routes(db))
    app.include_router(_flow_routes(db, after_commit), dependencies=[Depends(require_api_key)])
    app.add_middleware(RequestGuard, max_body_bytes=settings.api_max_body_bytes)
    return app


def freeze_startup_objects() -> None:
    """Leave what is loaded by now (libraries, botocore's models) out of later GC passes.

    It lives as long as the process, yet every full collection scanned all of it: a pause of
    tens of milliseconds, every few hundred requests (bench-api: p99 of creating runs
    about 100 ms before, about 20 ms after).
    """
    gc.collect()
    gc.freeze()


def _health_routes(db: Database) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The database answers; 503 otherwise.",
                responses={503: {"model": ErrorBody}})
    async def readyz() -> Any:
        if not await db.ping():
            return JSONResponse(status_code=503, content={"detail": "database unreachable"})
        return {"status": "ok"}

    return router


def _flow_routes(db: Database, after_commit: Callable[[], Awaitable[None]]) -> APIRouter:
    router = APIRouter()

    @router.post("/flows", status_code=201, response_model=FlowPublic, tags=["flows"],
                 summary="Create a flow.")
    async def create_flow(body: FlowCreate, response: Response) -> Any:
        flow = await db.write(repository.create_flow, body)
        response.headers["ETag"] = _etag(flow["version"])
        return flow

    @router.get("/flows", response_model=FlowList, tags=["flows"], summary="List flows.")
    async def list_flows(limit: Limit = 20, cursor: Cursor = None) -> Any:
        items, next_cursor = await db.read(repository.list_flows, limit=limit, cursor=cursor)
        return {"items": items, "next_cursor": next_cursor}

    @router.get("/flows/{flow_id}", response_model=FlowPublic, tags=["flows"],
                summary="Get a flow; its ETag is the version to send in If-Match.")
    async def get_flow(flow_id: UUID, response: Response) -> Any:
        flow = await db.read(repository.get_flow, flow_id)
        response.headers["ETag"] = _etag(flow["version"])
        return flow

    @router.put("/flows/{flow_id}", response_model=FlowPublic, tags=["flows"],
                summary="Replace a flow; a stale If-Match or version gets 409.")
    async def update_flow(flow_id: UUID, body: FlowUpdate, response: Response,
                          if_match: IfMatch = None) -> Any:
        expected = _expected_version(if_match, body.version)
        flow = await db.write(repository.update_flow, flow_id, body, expected_version=expected)
        response.headers["ETag"] = _etag(flow["version"])
        return flow

    @router.delete("/flows/{flow_id}", status_code=204, tags=["flows"],
                   summary="Delete a flow and cancel its open runs.")
    async def delete_flow(flow_id: UUID) -> Response:
        await db.write(repository.delete_flow, flow_id)
        return Response(status_code=204)

    @router.post("/flows/{flow_id}/runs", status_code=201, response_model=RunPublic,
                 tags=["runs"], summary="Queue a run; the same Idempotency-Key returns it again.",
                 responses={200: {"model": RunPublic, "description": "The run created before "
                                  "with this Idempotency-Key."}})
    async def create_run(flow_id: UUID, response: Response, body: RunCreate | None = None,
                         idempotency_key: IdempotencyKey = None) -> Any:
        values = repository.run_values(flow_id, body.input if body else {},
                                       idempotency_key=idempotency_key)
        try:
            run = await db.fetch_one(repository.INSERT_RUN, values)
        except ConnectionLostError:
            # It may have run: run it again on a live connection, which finds it by its id.
            run, created = await db.read(repository.insert_run, values)
        else:
            created = run is not None
            if not created:  # an unknown flow, or an Idempotency-Key used before
                run, created = await db.read(repository.existing_run, values)
        if not created:
            response.status_code = status.HTTP_200_OK
            return await db.read(repository.get_run, run["id"])
        await after_commit()
        return {**run, "steps": []}

    @router.get("/flows/{flow_id}/runs", response_model=RunList, tags=["runs"],
                summary="List a flow's runs, newest first.")
    async def list_runs(flow_id: UUID, limit: Limit = 20, cursor: Cursor = None,
                        status: RunStatus | None = None) -> Any:
        items, next_cursor = await db.read(repository.list_runs, flow_id, limit=limit,
                                           cursor=cursor, status=status)
        return {"items": items, "next_cursor": next_cursor}

    @router.get("/runs/{run_id}", response_model=RunPublic, tags=["runs"], summary="Get a run.")
    async def get_run(run_id: UUID) -> Any:
        return await db.read(repository.get_run, run_id)

    @router.post("/runs/{run_id}/cancel", response_model=RunPublic, tags=["runs"],
                 summary="Cancel a queued or running run.")
    async def cancel_run(run_id: UUID) -> Any:
        return await db.write(repository.cancel_run, run_id)

    return router


def _etag(version: int) -> str:
    return f'"{version}"'


def _expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version the client last saw, from If-Match (`"3"`, `W/"3"`, `3`) or the body."""
    if if_match is None:
        return body_version
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise VersionConflictError(
            f"If-Match {if_match!r} is not a version this API issued; send the ETag of GET"
        )
    return int(raw)


