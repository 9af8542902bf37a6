"""In-place rotation: a full name takes each new value with one DigitalOcean call (PUT),
and stays crash-safe: a lost answer is settled by reading the record, a record deleted
behind our back is created afresh, a token without ``domain:update`` falls back to create
+ delete (once, loudly), and a kill at any point is repaired by one reconcile pass."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from app.core.models import ValueState
from tests.conftest import Harness, challenge_value
from tests.core.support import Crash, CrashAt, consistent, reconciler

V1, V2, V3, V4 = (challenge_value(n) for n in (1, 2, 3, 4))


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> CrashAt:
    return CrashAt(monkeypatch)


async def full(h: Harness) -> tuple[dict[str, Any], dict[str, int]]:
    """An account whose name holds its window (2) of values; their record ids by value."""
    account = await h.create_account(domain="www.example.com")
    for value in (V1, V2):
        assert (await h.update(account, value)).status_code == 200
    ids = {r.data: r.id for r in h.do.find_records(account["fulldomain"], "TXT")}
    h.do.clear_requests()
    return account, ids


def calls(h: Harness) -> list[tuple[str, int]]:
    return [(e.method, e.status) for e in h.do.requests()]


async def rows(h: Harness, account: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r.value, r.state.value)
            for r in await h.services.store.values_at(account["fulldomain"])]


async def test_a_full_name_takes_each_new_value_with_one_call(harness: Harness) -> None:
    account, ids = await full(harness)
    assert (await harness.update(account, V3)).status_code == 200
    assert (await harness.update(account, V4)).status_code == 200
    assert calls(harness) == [("PUT", 200), ("PUT", 200)]
    # The oldest record was overwritten each time: same ids, newest values.
    records = {r.data: r.id for r in harness.do.find_records(account["fulldomain"], "TXT")}
    assert records == {V3: ids[V1], V4: ids[V2]}
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_a_lost_answer_is_settled_by_reading_the_record(harness: Harness) -> None:
    account, ids = await full(harness)
    harness.do.update_faults(ghost_next=1)  # the PUT lands, its answer is lost
    response = await harness.update(account, V3)
    assert response.status_code == 200
    # Never sent twice: one PUT, then one read of that record by id.
    assert calls(harness) == [("PUT", 500), ("GET", 200)]
    assert [e.path for e in harness.do.requests()][1].endswith(f"/records/{ids[V1]}")
    assert harness.txt_at(account["fulldomain"]) == sorted([V2, V3])
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_an_update_that_did_not_land_is_a_503_and_changes_nothing(
    harness: Harness,
) -> None:
    account, _ = await full(harness)
    harness.do.update_faults(methods=["PUT"], error_next=1)
    response = await harness.update(account, V3)
    assert response.status_code == 503
    assert response.json() == {"error": "dns_provider_unavailable"}
    assert response.headers["retry-after"].isdigit()
    assert calls(harness) == [("PUT", 500), ("GET", 200)]
    assert await rows(harness, account) == [(V1, "live"), (V2, "live")]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_a_lost_answer_and_a_failed_read_are_settled_by_the_reconciler(
    harness: Harness,
) -> None:
    account, ids = await full(harness)
    harness.do.update_faults(ghost_next=1, methods=["GET"], error_next=4)
    response = await harness.update(account, V3)
    assert response.status_code == 503
    harness.do.update_faults(error_next=0, methods=None)
    # The new value is written down, naming the record it may have overwritten.
    pending = [r for r in await harness.services.store.values_at(account["fulldomain"])
               if r.state is ValueState.PENDING]
    assert [(r.value, r.record_id) for r in pending] == [(V3, ids[V1])]
    report = await reconciler(harness, later=timedelta(minutes=1)).run_once()
    assert report.adopted == 1 and report.failures == []
    assert await rows(harness, account) == [(V2, "live"), (V3, "live")]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])
    assert (await reconciler(harness, later=timedelta(minutes=2)).run_once()).repairs == 0


async def test_a_record_deleted_behind_our_back_is_created_afresh(harness: Harness) -> None:
    account, ids = await full(harness)
    harness.do.delete_record("example.com", ids[V1])
    response = await harness.update(account, V3)
    assert response.status_code == 200
    assert calls(harness) == [("PUT", 404), ("POST", 201)]
    assert harness.txt_at(account["fulldomain"]) == sorted([V2, V3])
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_a_token_without_the_update_scope_falls_back_once_and_says_so(
    harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.api.test_metrics import scrape, value

    account, _ = await full(harness)
    harness.do.update_faults(forbidden_methods=["PUT"])
    caplog.set_level(logging.WARNING, logger="acme_delegate")
    assert (await harness.update(account, V3)).status_code == 200
    assert (await harness.update(account, V4)).status_code == 200
    # One refused PUT, then create + delete for each value; PUT is not tried again.
    assert calls(harness) == [("PUT", 403), ("POST", 201), ("DELETE", 204),
                              ("POST", 201), ("DELETE", 204)]
    assert harness.txt_at(account["fulldomain"]) == sorted([V3, V4])
    said = [r for r in caplog.records if "txt.update_forbidden" in r.getMessage()]
    assert len(said) == 1 and "domain:update" in said[0].getMessage()
    assert value(await scrape(harness), "acme_delegate_digitalocean_rotation_in_place") == 0
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_killed_between_writing_down_and_the_call(harness: Harness, crash_at: CrashAt
                                                        ) -> None:
    account, _ = await full(harness)
    crash_at(harness.services.provider, "update_txt")
    with pytest.raises(Crash):
        await harness.update(account, V3)
    crash_at.restart()
    assert (V3, "pending") in await rows(harness, account)
    report = await reconciler(harness, later=timedelta(minutes=1)).run_once()
    assert report.forgotten == 1 and report.failures == []
    assert await rows(harness, account) == [(V1, "live"), (V2, "live")]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_killed_after_the_call_before_the_commit(harness: Harness, crash_at: CrashAt
                                                       ) -> None:
    account, _ = await full(harness)
    crash_at(harness.services.provider, "update_txt", after=True)
    with pytest.raises(Crash):
        await harness.update(account, V3)
    crash_at.restart()
    assert harness.txt_at(account["fulldomain"]) == sorted([V2, V3])  # DigitalOcean has it
    report = await reconciler(harness, later=timedelta(minutes=1)).run_once()
    assert report.adopted == 1 and report.failures == []
    assert await rows(harness, account) == [(V2, "live"), (V3, "live")]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])
    # The next value overwrites the oldest as usual.
    harness.do.clear_requests()
    assert (await harness.update(account, V4)).status_code == 200
    assert calls(harness) == [("PUT", 200)]
    assert harness.txt_at(account["fulldomain"]) == sorted([V3, V4])


async def test_a_name_over_its_window_is_trimmed_whatever_left_it_there(
    harness: Harness,
) -> None:
    account, _ = await full(harness)
    # As a crash between a create and its eviction leaves it: three live values.
    challenges = harness.services.challenges
    challenges.rotate_in_place = False

    async def killed_before_eviction(*args: Any, **kwargs: Any) -> None:
        return None

    original = challenges._evict
    challenges._evict = killed_before_eviction  # type: ignore[method-assign]
    try:
        assert (await harness.update(account, V3)).status_code == 200
    finally:
        challenges._evict = original  # type: ignore[method-assign]
    assert len(harness.txt_at(account["fulldomain"])) == 3
    report = await reconciler(harness, later=timedelta(minutes=1)).run_once()
    assert report.trimmed == 1
    assert await rows(harness, account) == [(V2, "live"), (V3, "live")]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_a_listing_older_than_a_later_overwrite_never_undoes_it(
    harness: Harness, crash_at: CrashAt, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the chaos test: the reconciler listed a zone, an update overwrote a record
    (the name's lock was free in between), and the stale listing then made a crashed
    overwrite of that record look landed: the confirmed value was dropped."""
    account, _ = await full(harness)
    crash_at(harness.services.provider, "update_txt", after=True)
    with pytest.raises(Crash):
        await harness.update(account, V3)  # lands in DigitalOcean, never recorded
    crash_at.restart()
    provider = harness.services.provider
    stale = await provider.list_txt("example.com")  # the reconciler's listing, taken now
    assert (await harness.update(account, V4)).status_code == 200  # then this overwrite
    assert harness.txt_at(account["fulldomain"]) == sorted([V2, V4])

    async def listed_earlier(zone: str) -> Any:
        return stale

    monkeypatch.setattr(provider, "list_txt", listed_earlier)
    report = await reconciler(harness, later=timedelta(minutes=1)).run_once()
    monkeypatch.undo()
    assert report.failures == [] and report.forgotten == 1 and report.adopted == 0
    assert await rows(harness, account) == [(V2, "live"), (V4, "live")]  # V4 stays
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])
