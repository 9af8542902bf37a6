"""``UnitOfWorkRoute`` calls the write routes with their dependencies resolved directly
(app.api.deps._direct_call), and leaves every other shape, and overrides, to FastAPI."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from app.api import acmedns, httpreq
from app.api.deps import UnitOfWorkRoute, _direct_call, acmedns_account, get_services
from app.errors import Forbidden
from tests.conftest import Harness, challenge_value


def test_every_route_of_the_class_is_called_directly() -> None:
    routes = [r for r in [*acmedns.router.routes, *httpreq.router.routes]
              if isinstance(r, APIRoute)]
    assert all(isinstance(r, UnitOfWorkRoute) for r in routes)
    assert {r.path for r in routes} == {"/update", "/present", "/cleanup", "/register",
                                        "/health"}
    assert [r.path for r in routes if _direct_call(r.dependant) is None] == []


def test_the_write_routes_are_on_the_app_itself() -> None:
    """Not behind an included router, which FastAPI matches through on every request,
    and declared as included ones would be: the same OpenAPI document."""
    from app.config import Settings
    from app.main import _on_the_app, create_app

    app = create_app(Settings(database_url="sqlite:///:memory:"))
    direct = {r.path for r in app.router.routes if isinstance(r, UnitOfWorkRoute)}
    assert direct == {"/update", "/present", "/cleanup", "/register", "/health"}

    included, flat = FastAPI(), FastAPI()
    for router in (acmedns.router, httpreq.router):
        included.include_router(router)
        _on_the_app(flat, router)
    assert flat.openapi() == included.openapi()
    assert "/update" in flat.openapi()["paths"]


async def test_dependency_overrides_are_honoured(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    value = challenge_value(1)

    async def nobody(request: Request) -> None:
        raise Forbidden()

    harness.app.dependency_overrides[acmedns_account] = nobody
    try:
        refused = await harness.update(account, value)
    finally:
        harness.app.dependency_overrides.clear()
    assert (refused.status_code, refused.json()) == (401, {"error": "forbidden"})
    assert harness.txt_at(account["fulldomain"]) == []
    assert (await harness.update(account, value)).status_code == 200


async def test_a_route_of_another_shape_is_solved_by_fastapi() -> None:
    router = APIRouter(route_class=UnitOfWorkRoute)

    @router.get("/echo")
    async def echo(word: str, request: Request) -> JSONResponse:
        return JSONResponse({"word": word, "path": request.url.path})

    @router.get("/services")
    async def services(request: Request) -> JSONResponse:
        return JSONResponse({"same": await get_services(request) is request.app.state.services})

    app = FastAPI()
    app.state.services = object()
    app.include_router(router)
    by_path = {r.path: r for r in router.routes if isinstance(r, UnitOfWorkRoute)}
    assert _direct_call(by_path["/echo"].dependant) is None  # a query parameter
    assert _direct_call(by_path["/services"].dependant) is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/echo", params={"word": "hi"})).json() == {
            "word": "hi", "path": "/echo"}
        assert (await client.get("/echo")).status_code == 422
        assert (await client.get("/services")).json() == {"same": True}
