"""/metrics after real traffic: each metric moves as it should; request ids."""

from __future__ import annotations

import asyncio

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
        ("acme_delegate_digitalocean_requests_total", {"operation": "create_record",
                                                       "status": "201"}, 3),
        ("acme_delegate_digitalocean_requests_total", {"operation": "delete_record",
                                                       "status": "204"}, 2),
        ("acme_delegate_digitalocean_request_duration_seconds_count",
         {"operation": "create_record"}, 3),
        ("acme_delegate_reconcile_runs_total", {"outcome": "ok"}, 1),
        ("acme_delegate_reconcile_repairs_total", {"kind": "ghosts"}, 1),
    ]
    for name, labels, delta in grew:
        assert value(after, name, **labels) - value(before, name, **labels) == delta, name
    assert value(after, "acme_delegate_txt_values", state="live") == 2
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
