"""Operations endpoints: Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ServicesDep
from app.core.models import ValueState
from app.observability import Metrics

router = APIRouter(tags=["operations"])


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
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
