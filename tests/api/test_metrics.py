"""/metrics after real traffic: each metric moves as it should; request ids."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.core.reconcile import ReconcileLoop, ReconcileReport
from tests.conftest import Harness, challenge_value


async def scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await h.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_traffic(harness: Harness) -> None:
    before = await scrape(harness)
    account = (await harness.client.post("/register")).json()
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    for n in range(3):
        await harness.client.post("/update", headers=headers,
                                  json={"subdomain": account["subdomain"],
                                        "txt": challenge_value(n)})
    await harness.client.post("/update", headers={**headers, "X-Api-Key": "k" * 40},
                              json={"subdomain": account["subdomain"], "txt": challenge_value(9)})
    # A ghost of our name for the reconciler to remove.
    label = account["fulldomain"].removesuffix(".example.org")
    harness.do.add_record("example.org", "TXT", label, "ghost")
    passed = asyncio.Event()

    def on_pass(report: ReconcileReport | None, seconds: float) -> None:
        harness.metrics.reconciled(report, seconds)
        passed.set()

    loop = ReconcileLoop(harness.services.reconciler, 3600, on_pass=on_pass)
    loop.start()
    await asyncio.wait_for(passed.wait(), 30)
    await loop.stop()

    after = await scrape(harness)
    grew = [
        ("acme_delegate_http_requests_total", {"route": "/update", "method": "POST",
                                               "status": "200"}, 3),
        ("acme_delegate_http_requests_total", {"route": "/update", "method": "POST",
                                               "status": "401"}, 1),
        ("acme_delegate_http_requests_total", {"route": "/register", "method": "POST",
                                               "status": "201"}, 1),
        ("acme_delegate_http_request_duration_seconds_count", {"route": "/update"}, 4),
        ("acme_delegate_auth_failures_total", {"reason": "forbidden"}, 1),
        ("acme_delegate_operations_total", {"operation": "update", "outcome": "ok"}, 3),
        # Two creates fill the window; the third value overwrites the oldest in place.
        ("acme_delegate_digitalocean_requests_total", {"operation": "create_record",
                                                       "status": "201"}, 2),
        ("acme_delegate_digitalocean_requests_total", {"operation": "update_record",
                                                       "status": "200"}, 1),
        ("acme_delegate_digitalocean_requests_total", {"operation": "delete_record",
                                                       "status": "204"}, 1),
        ("acme_delegate_digitalocean_request_duration_seconds_count",
         {"operation": "create_record"}, 2),
        ("acme_delegate_reconcile_runs_total", {"outcome": "ok"}, 1),
        ("acme_delegate_reconcile_repairs_total", {"kind": "ghosts"}, 1),
    ]
    for name, labels, delta in grew:
        assert value(after, name, **labels) - value(before, name, **labels) == delta, name
    assert value(after, "acme_delegate_txt_values", state="live") == 2
    assert value(after, "acme_delegate_digitalocean_rotation_in_place") == 1
    assert value(after, "acme_delegate_digitalocean_ratelimit_remaining") > 0
    assert 0 <= value(after, "acme_delegate_digitalocean_budget_free") < 240
    for key in after:
        for secret in (account["password"], account["username"]):
            assert secret not in str(key)


async def test_request_ids(harness: Harness) -> None:
    given = await harness.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await harness.client.get("/health", headers={"X-Request-ID": "bad id;" * 20})
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != "abc-123"


async def test_normalised_paths_count_under_their_route(harness: Harness) -> None:
    await harness.client.post("http://acme.test//update", json={})
    samples = await scrape(harness)
    assert value(samples, "acme_delegate_http_requests_total", route="/update", method="POST",
                 status="401") == 1


async def test_a_client_that_goes_away_is_a_499_not_a_500(harness: Harness,
                                                          caplog: Any) -> None:
    """A body that never arrives because the client hung up: nobody was answered, so
    it is nginx's 499 in the metrics and the access log, never a 5xx (which anyone could
    otherwise fire alerts with)."""
    app = harness.client._transport.app  # type: ignore[attr-defined]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/register", "raw_path": b"/register",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000),
             "server": ("acme.test", 80),
             "headers": [(b"host", b"acme.test"), (b"content-length", b"100")]}
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": b"{", "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    caplog.set_level(logging.INFO, logger="acme_delegate.http")
    await app(scope, receive, send)
    assert not sent  # nobody to answer
    samples = await scrape(harness)
    requests = {labels: v for (name, labels), v in samples.items()
                if name == "acme_delegate_http_requests_total"}
    assert requests.get((("method", "POST"), ("route", "unmatched"), ("status", "499"))) == 1
    assert not any(dict(labels)["status"].startswith("5") for labels in requests), requests
    access = [r for r in caplog.records if getattr(r, "event", None) == "http.request"
              and r.fields["path"] == "/register"]
    assert [r.fields["status"] for r in access] == [499]


async def test_queue_depth_counts_the_reservations_of_refused_clients(
        harness_factory: Any) -> None:
    """A client refused for want of a DigitalOcean slot keeps a reservation in the client
    lane until it comes back: /metrics shows it, by lane."""
    async with harness_factory(do_rate_per_minute=1, do_max_wait=0) as h:
        accounts = [await h.create_account(domain=f"q{n}.example.com") for n in range(3)]
        statuses = [(await h.update(a, challenge_value(n))).status_code
                    for n, a in enumerate(accounts)]
        samples = await scrape(h)
    refused = statuses.count(503)
    assert refused >= 2, statuses
    assert value(samples, "acme_delegate_digitalocean_queue_depth", lane="client") == refused
    assert value(samples, "acme_delegate_digitalocean_queue_depth", lane="revocation") == 0
    assert value(samples, "acme_delegate_digitalocean_queue_depth", lane="housekeeping") == 0
