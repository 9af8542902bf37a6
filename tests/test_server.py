"""The HTTP server's own start-up (app.server.Server)."""

from __future__ import annotations

import gc

import uvicorn
from fastapi import FastAPI

from app.server import Server


async def test_a_started_server_freezes_what_it_built_out_of_the_collectors_view() -> None:
    """A full collection would otherwise walk the whole heap built at start-up (~100 ms
    with the loop held, measured): once started, that heap is frozen, and the oldest
    generation the collector walks holds only what came after."""
    gc.unfreeze()
    config = uvicorn.Config(FastAPI(), host="127.0.0.1", port=0, lifespan="off",
                            log_config=None)
    config.load()
    server = Server(config)
    server.lifespan = config.lifespan_class(config)  # as uvicorn's serve() sets it
    try:
        await server.startup()
        assert server.started
        assert gc.get_freeze_count() > 50_000
        assert len(gc.get_objects(generation=2)) < 1_000
    finally:
        await server.shutdown()
        gc.unfreeze()
