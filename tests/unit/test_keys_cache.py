"""The key check from memory that the API's guard runs on the event loop: it answers only
for a key the store confirmed recently, and never lets a wrong secret or a revoked key
through."""

from pathlib import Path

import pytest

from app.persistence import keys as keys_module
from app.persistence.keys import KeyStore, Verdict


def store(tmp_path: Path) -> KeyStore:
    return KeyStore(f"sqlite:///{tmp_path / 'keys.sqlite'}")


def test_a_key_the_store_has_not_confirmed_yet_is_left_to_the_store(tmp_path: Path) -> None:
    keys = store(tmp_path)
    key = keys.create("write")
    assert keys.check_cached(key) is None
    assert keys.check(key).scope == "write"
    cached = keys.check_cached(key)
    assert cached is not None
    assert (cached.verdict, cached.scope) == (Verdict.VALID, "write")


def test_a_wrong_secret_or_a_malformed_key_is_refused_from_memory(tmp_path: Path) -> None:
    keys = store(tmp_path)
    key = keys.create("admin")
    keys.check(key)
    prefix, key_id, _secret = key.split("_", 2)
    forged = keys.check_cached(f"{prefix}_{key_id}_{'A' * 43}")
    assert forged is not None
    assert (forged.verdict, forged.scope) == (Verdict.UNKNOWN, None)
    malformed = keys.check_cached("not-a-key")
    assert malformed is not None
    assert malformed.verdict is Verdict.UNKNOWN


def test_a_revoked_key_is_no_longer_answered_from_memory(tmp_path: Path) -> None:
    keys = store(tmp_path)
    key = keys.create("write")
    keys.check(key)
    assert keys.revoke(key.split("_")[1])
    assert keys.check_cached(key) is None
    assert keys.check(key).verdict is Verdict.UNKNOWN


def test_a_confirmation_older_than_its_lifetime_goes_back_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = store(tmp_path)
    key = keys.create("read")
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", -1.0)
    assert keys.check(key).scope == "read"  # confirmed by the store, already stale
    assert keys.check_cached(key) is None


def test_a_key_answered_from_memory_is_not_hashed_again_until_its_confirmation_ages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = store(tmp_path)
    key = keys.create("write")
    keys.check(key)
    hashed: list[str] = []
    hash_secret = keys_module._hash

    def counted(secret: str) -> str:
        hashed.append(secret)
        return hash_secret(secret)

    monkeypatch.setattr(keys_module, "_hash", counted)
    checks = [keys.check_cached(key) for _ in range(5)]
    assert len(hashed) == 1
    assert {(check.verdict, check.scope) for check in checks if check is not None} == {
        (Verdict.VALID, "write")
    }
    assert None not in checks


def test_a_key_remembered_as_checked_is_forgotten_when_revoked(tmp_path: Path) -> None:
    keys = store(tmp_path)
    key = keys.create("write")
    keys.check(key)
    remembered = keys.check_cached(key)
    assert remembered is not None
    assert remembered.verdict is Verdict.VALID
    assert keys.revoke(key.split("_")[1])
    assert keys.check_cached(key) is None
