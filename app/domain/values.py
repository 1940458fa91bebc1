"""Value checks and deterministic ids. Client ids map to aggregate ids by uuid5,
so every process (and every backend) finds the same stream for the same id."""

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final
from uuid import UUID, SafeUUID

from app.domain import limits
from app.domain.errors import AmountOutOfRangeError, ValidationError

# Fixed forever: changing it would orphan every stream already written.
LEDGER_NAMESPACE: Final = UUID("6f1d2c1e-4b7a-5c3d-9e8f-0a1b2c3d4e5f")


# A command asks for the same stream ids several times (lookups, events, answers):
# remembered, each uuid5 (a SHA-1) is computed once.
STREAM_ID_CACHE_SIZE: Final = 65_536


@lru_cache(maxsize=STREAM_ID_CACHE_SIZE)
def account_uuid(account_id: str) -> UUID:
    return name_uuid("account:" + account_id)


@lru_cache(maxsize=STREAM_ID_CACHE_SIZE)
def transfer_uuid(transfer_id: str) -> UUID:
    return name_uuid("transfer:" + transfer_id)


_NAMESPACE_BYTES: Final = LEDGER_NAMESPACE.bytes
# RFC 4122 name-based (SHA-1) ids: the variant's and the version's bits, as uuid5 sets them.
_UUID5_KEPT: Final = ~((0xC000 << 48) | (0xF000 << 64))
_UUID5_SET: Final = (0x8000 << 48) | (5 << 76)


def name_uuid(name: str) -> UUID:
    """``uuid5(LEDGER_NAMESPACE, name)``, built from its integer (uuid5 goes through
    ``UUID(bytes=..., version=5)``, twice the cost: every new transfer id takes one).
    Its two attributes are set as ``UUID.__init__`` sets them, without the checks of
    arguments that a SHA-1's masked first 16 bytes pass by construction."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()  # noqa: S324  # as uuid5
    made = _new_object(UUID)
    _set_attribute(made, "int", int.from_bytes(digest[:16]) & _UUID5_KEPT | _UUID5_SET)
    _set_attribute(made, "is_safe", SafeUUID.unknown)
    return made


_new_object: Final = object.__new__
_set_attribute: Final = object.__setattr__


def check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not limits.ID_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{field} must be 1-{limits.ID_LENGTH_MAX} characters of [A-Za-z0-9._:-]",
            field=field,
        )
    return value


def check_unit(value: object) -> str:
    if not isinstance(value, str) or not limits.UNIT_PATTERN.fullmatch(value):
        raise ValidationError("unit must be 1-16 characters of [A-Z0-9_]", field="unit")
    return value


def check_amount(value: object, field: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer", field=field)
    if not limits.AMOUNT_MIN <= value <= limits.AMOUNT_MAX:
        raise AmountOutOfRangeError(
            f"{field} must be between {limits.AMOUNT_MIN} and {limits.AMOUNT_MAX}",
            field=field,
        )
    return value


def check_overdraft_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("overdraft_limit must be an integer", field="overdraft_limit")
    if not 0 <= value <= limits.OVERDRAFT_LIMIT_MAX:
        raise ValidationError(
            f"overdraft_limit must be between 0 and {limits.OVERDRAFT_LIMIT_MAX}",
            field="overdraft_limit",
        )
    return value


def check_timeout_seconds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("timeout_seconds must be an integer", field="timeout_seconds")
    if not limits.TIMEOUT_SECONDS_MIN <= value <= limits.TIMEOUT_SECONDS_MAX:
        raise ValidationError(
            f"timeout_seconds must be between {limits.TIMEOUT_SECONDS_MIN} "
            f"and {limits.TIMEOUT_SECONDS_MAX}",
            field="timeout_seconds",
        )
    return value


def check_metadata(value: object) -> dict[str, str]:
    if value is None or (type(value) is dict and not value):  # the usual case, at once
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("metadata must be an object of strings", field="metadata")
    check_metadata_size(value)
    checked: dict[str, str] = {}
    for key, item in value.items():
        _check_metadata_key(key)
        if not isinstance(item, str) or len(item) > limits.METADATA_VALUE_LENGTH_MAX:
            raise ValidationError(
                f"metadata values must be strings of at most "
                f"{limits.METADATA_VALUE_LENGTH_MAX} characters",
                field="metadata",
            )
        checked[key] = item
    return canonical_metadata(checked)


def check_metadata_changes(value: object) -> dict[str, str | None]:
    """A metadata update (JSON Merge Patch): each key and each string value as
    ``check_metadata`` checks them; None removes a key. The merged whole's size is the
    account's rule (``Account.update_metadata``), so removals may outnumber the limit."""
    if not isinstance(value, Mapping):
        raise ValidationError("metadata must be an object of strings", field="metadata")
    checked: dict[str, str | None] = {}
    for key, item in value.items():
        _check_metadata_key(key)
        if item is not None and (
            not isinstance(item, str) or len(item) > limits.METADATA_VALUE_LENGTH_MAX
        ):
            raise ValidationError(
                f"metadata values must be strings of at most "
                f"{limits.METADATA_VALUE_LENGTH_MAX} characters",
                field="metadata",
            )
        checked[key] = item
    return checked


def check_metadata_size(value: Mapping[Any, Any]) -> None:
    if len(value) > limits.METADATA_ENTRIES_MAX:
        raise ValidationError(
            f"metadata may hold at most {limits.METADATA_ENTRIES_MAX} entries",
            field="metadata",
        )


# The key that marks a tagged value in stored events (``{"_type_": …, "_data_": …}``,
# the library's JSON format): metadata holding it could read back as a time, or not at
# all, leaving its account or transfer unreadable.
RESERVED_METADATA_KEY: Final = "_type_"


def _check_metadata_key(key: object) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= limits.METADATA_KEY_LENGTH_MAX:
        raise ValidationError(
            f"metadata keys must be strings of 1-{limits.METADATA_KEY_LENGTH_MAX} characters",
            field="metadata",
        )
    if key == RESERVED_METADATA_KEY:
        raise ValidationError(
            f"metadata key {RESERVED_METADATA_KEY} is reserved (it marks tagged values in "
            "stored events)",
            field="metadata",
        )


def canonical_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata as events record it: a new dict, sorted by key."""
    return dict(sorted(metadata.items()))


def breakage_account_id(unit: str) -> str:
    """The account every expired credit of ``unit`` goes to; the ledger opens it."""
    return f"breakage:{unit}"


def derived_transfer_id(kind: str, cause_id: str) -> str:
    """The id of a transfer the ledger writes because of ``cause_id`` (an expiry of a
    grant, breakage of a hold): the same cause always gives the same id, so writing it
    again is an idempotent replay. Ids too long to prefix are hashed."""
    candidate = f"{kind}:{cause_id}"
    if len(candidate) <= limits.ID_LENGTH_MAX:
        return candidate
    return f"{kind}:sha256:{hashlib.sha256(cause_id.encode()).hexdigest()}"


# Ids of the transfers the ledger writes itself; clients may not use these prefixes.
LEDGER_TRANSFER_PREFIXES: Final = ("expiry:", "breakage:")


def is_breakage_transfer_id(transfer_id: str) -> bool:
    return transfer_id.startswith(LEDGER_TRANSFER_PREFIXES)
