"""Opaque page tokens for list and search endpoints: the offset of the next page, not meant to be built
by clients (so the scheme can change without breaking them)."""

from __future__ import annotations

import base64
import binascii
import json


class InvalidPageToken(ValueError):
    pass


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset a token stands for; 0 for no token. InvalidPageToken for anything not made here."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise InvalidPageToken(f"page_token {token!r} is not one this server issued") from error
    if not isinstance(offset, int) or offset < 0:
        raise InvalidPageToken(f"page_token {token!r} is not one this server issued")
    return offset


def next_page_token(offset: int, page_size: int, fetched: int) -> str | None:
    """A token for the next page when this one was full (the caller fetched page_size + 1 rows)."""
    return encode_page_token(offset + page_size) if fetched > page_size else None
