"""Operations endpoints: Prometheus metrics, and the Kubernetes-style probes (``/livez``:
the process answers; ``/readyz``: it can serve, so its database answers). acme-dns's
``/health`` stays where clients expect it (app.api.acmedns)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ServicesDep
from app.api.errors import error_response
from app.core.models import ValueState
from app.logs import event
from app.observability import Metrics

router = APIRouter(tags=["operations"])
log = logging.getLogger("acme_delegate.api")


@router.get("/livez", responses={200: {"content": {"application/json": {"example": {
    "status": "ok"}}}}})
async def livez() -> JSONResponse:
    """200 while the process answers; touches nothing else (a liveness probe must not
    restart a pod because its database is down)."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", responses={
    200: {"content": {"application/json": {"example": {"status": "ok"}}}},
    503: {"description": "`database_unavailable`, with Retry-After"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the database answers; else 503 (a readiness probe takes the replica out of
    the Service until it does)."""
    try:
        await services.store.ping()
    except Exception as exc:  # any failure of the database is the answer here
        event(log, "readyz.database_down", logging.WARNING, error=type(exc).__name__)
        return error_response(503, "database_unavailable", {"Retry-After": "5"})
    return JSONResponse({"status": "ok"})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics (no secrets, no names: restrict who can reach it all the same)."""
    registry: Metrics = request.app.state.metrics
    counts = await services.store.count_values()
    for state in ValueState:
        registry.live_values.labels(state.value).set(counts.get(state.value, 0))
    free = services.budget.per_minute - services.budget.in_last_minute()
    registry.budget_free.set(max(free, 0))
    for lane, depth in (await services.budget.depth()).items():
        registry.budget_queue.labels(lane.name.lower()).set(depth)
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
