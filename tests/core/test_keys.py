"""Keys: shape, hashing, and an unknown user costing what a known one costs."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from app.core import keys
from app.core.names import looks_like_key


def test_new_keys_are_40_base64url_characters_and_unique() -> None:
    issued = {keys.new_key() for _ in range(1000)}
    assert len(issued) == 1000
    assert all(looks_like_key(k) for k in issued)


def test_hash_and_verify() -> None:
    key = keys.new_key()
    stored = keys.hash_key(key)
    assert key not in stored and stored.startswith("sha256$")
    assert keys.verify_key(key, stored)
    assert not keys.verify_key(key[:-1] + ("A" if key[-1] != "A" else "B"), stored)
    assert not keys.verify_key(key, None)
    assert not keys.verify_key(key, "bcrypt$whatever")  # unknown scheme: refused


def test_unknown_user_does_the_same_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    key = keys.new_key()
    keys.verify_key(key, keys.hash_key(key))
    known = list(calls)
    calls.clear()
    keys.verify_key(key, None)
    assert calls == known  # one comparison of two 64-character digests, either way
