"""EC2's paging (``MaxResults`` / ``NextToken``) for the Describe calls moto does not page.

moto 5.2.5 ignores ``MaxResults`` and ``NextToken`` for DescribeImages, DescribeSnapshots and
DescribeSecurityGroups (it returns everything), and pages DescribeInstances its own way
(100 reservations when no ``MaxResults`` is given, a reservation id as the token, a 500 for a
token it does not know).  The sandbox pages all four as EC2 does:

* filters (and ``Owners``, ids, …) are applied first, then the matching items are paged;
* ``MaxResults`` from 5 to 1000; without it (and without ``NextToken``) everything comes in one
  answer;
* ``NextToken`` is opaque; the last page has none; a token that was not issued for the same
  request (other action, region, filters or owners) is refused with ``InvalidPaginationToken``.

Items are paged in the order of their id, and a token remembers the last id it returned, so an
item deleted between two pages does not shift the next page.  Pure, apart from reading the
request through moto's response object.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
from typing import Any, Callable, Sequence, TypeVar

from moto.ec2.exceptions import EC2ClientError

T = TypeVar("T")

MIN_RESULTS = 5
MAX_RESULTS = 1000
PAGING_PARAMS = ("MaxResults", "NextToken")


class InvalidPaginationToken(EC2ClientError):
    def __init__(self) -> None:
        # EC2's common client error (API reference, "Error codes"), HTTP 400.
        super().__init__("InvalidPaginationToken", "The specified pagination token is not valid or is expired.")


def requested(response: Any) -> bool:
    """Whether the request asks for paging at all."""
    return any(response._get_param(p) not in (None, "") for p in PAGING_PARAMS)


def max_results(value: Any) -> int | None:
    """``MaxResults`` checked as EC2 does; None when absent."""
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise EC2ClientError("InvalidParameterValue", f"Value ( {value} ) for parameter maxResults is invalid.") from None
    if n < MIN_RESULTS:
        # The text EC2 answers for DescribeInstances (seen in a real transcript).
        raise EC2ClientError(
            "InvalidParameterValue", f"Value ( {n} ) for parameter maxResults is invalid. Expecting a value greater than 5."
        )
    if n > MAX_RESULTS:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ( {n} ) for parameter maxResults is invalid. Expecting a value less than or equal to {MAX_RESULTS}.",
        )
    return n


def _fingerprint(action: str, region: str, params: dict[str, Any]) -> str:
    """What makes two requests "the same listing": everything but the paging parameters."""
    canon = sorted((k, list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in params.items() if k not in PAGING_PARAMS)
    return hashlib.sha256(json.dumps([action, region, canon], sort_keys=True, default=str).encode()).hexdigest()[:24]


def encode_token(fingerprint: str, last_key: str) -> str:
    raw = json.dumps({"v": 1, "q": fingerprint, "after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, fingerprint: str) -> str:
    """The last key of the previous page.  Raises InvalidPaginationToken."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidPaginationToken() from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("q") != fingerprint or not isinstance(data.get("after"), str):
        raise InvalidPaginationToken()
    return data["after"]


def page(
    items: Sequence[T], key: Callable[[T], str], limit: int | None, token: str | None, fingerprint: str
) -> tuple[list[T], str | None]:
    """One page of ``items`` (ordered by ``key``) after ``token``, and the next token."""
    ordered = sorted(items, key=key)
    start = 0
    if token:
        after = decode_token(token, fingerprint)
        start = bisect.bisect_right([key(i) for i in ordered], after)
    end = len(ordered) if limit is None else start + limit
    out = ordered[start:end]
    next_token = encode_token(fingerprint, key(out[-1])) if out and end < len(ordered) else None
    return out, next_token


def page_request(response: Any, action: str, items: Sequence[T], key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Pages ``items`` (already filtered) as the request asks."""
    limit = max_results(response._get_param("MaxResults"))
    token = response._get_param("NextToken") or None
    fingerprint = _fingerprint(action, response.region, response.querystring)
    return page(items, key, limit, token, fingerprint)
