"""Opaque cursors: base64url of a small JSON object. Clients pass them back verbatim."""

import base64
import binascii
import json
from typing import Any, Final

from app.api.errors import ApiError

PAGE_LIMIT_DEFAULT: Final = 100
PAGE_LIMIT_MAX: Final = 1000
CURSOR_KEY_LENGTH_MAX: Final = 256


def encode_cursor(position: int) -> str:
    raw = json.dumps({"before": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = value["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API handed out") from None
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < 2**63:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API handed out")
    return position


def next_cursor(positions: list[int], limit: int) -> str | None:
    return encode_cursor(positions[-1]) if len(positions) == limit else None


def encode_key_cursor(key: str, value: str | int) -> str:
    raw = json.dumps({key: value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_key_cursor(cursor: str | None, key: str, kind: type[str] | type[int]) -> Any:
    """A cursor of the form ``{key: value}`` this API handed out, or 400."""
    if cursor is None:
        return None
    refused = ApiError(400, "invalid_cursor", "cursor is not one this API handed out")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))[key]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise refused from None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise refused
    if isinstance(value, int) and not 0 <= value < 2**63:
        raise refused
    if isinstance(value, str) and len(value) > CURSOR_KEY_LENGTH_MAX:
        raise refused
    return value
