"""Request counting and fault injection for the EC2 query API.

Every request that reaches the sandbox outside ``/_sandbox/`` is classified
(service, action, region) from its SigV4 ``Authorization`` header and its
form body / query string.  EC2 requests are counted per action; a configured
fraction (or the next N) are answered with an EC2 error instead of reaching
moto, so they have no side effect; or, for the "lost" kinds, reach moto and then
lose their response (a 500, or a closed connection), so the call took effect but
the caller does not know it.
"""

from __future__ import annotations

import io
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .config import Config

EC2_API_VERSION = "2016-11-15"

FAULTS = {
    # kind: (HTTP status, reason phrase, EC2 error code, message)
    "throttle": (503, "Service Unavailable", "RequestLimitExceeded", "Request limit exceeded."),
    "500": (500, "Internal Server Error", "InternalError", "An internal error has occurred"),
    # Not retried by SDKs: what a missing IAM permission looks like.
    "denied": (403, "Forbidden", "UnauthorizedOperation", "You are not authorized to perform this operation."),
}
# Kinds that let the call reach moto (and take effect), then lose its response.
LOST_KINDS = ("lost-500", "lost-connection")


@dataclass
class RequestInfo:
    service: str | None
    action: str | None
    region: str | None
    # The SigV4 credential's access key id (never the secret key, which is not sent).
    access_key_id: str | None = None


def _read_body(environ: dict[str, Any]) -> bytes:
    """Reads the request body and puts it back for the next application."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def classify(environ: dict[str, Any]) -> RequestInfo:
    service = region = access_key_id = None
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        # AWS4-HMAC-SHA256 Credential=AKID/20240101/us-west-2/ec2/aws4_request, ...
        try:
            scope = auth.split("Credential=", 1)[1].split(",", 1)[0].strip().split("/")
            access_key_id = scope[0] or None
            region, service = scope[2], scope[3]
        except IndexError:
            pass
    params: dict[str, list[str]] = {}
    ctype = environ.get("CONTENT_TYPE", "") or ""
    if ctype.startswith("application/x-www-form-urlencoded"):
        body = _read_body(environ)
        try:
            params = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            params = {}
    if not params:
        params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    action = (params.get("Action") or [None])[0]
    if service is None and action and (params.get("Version") or [None])[0] == EC2_API_VERSION:
        service = "ec2"
    return RequestInfo(service=service, action=action, region=region, access_key_id=access_key_id)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.faulted: Counter[str] = Counter()
            self.by_region: Counter[str] = Counter()
            self.other: Counter[str] = Counter()
            self.by_access_key_id: Counter[str] = Counter()
            self.since = time.time()

    def count(self, info: RequestInfo) -> None:
        with self._lock:
            if info.service == "ec2":
                self.requests[info.action or "(none)"] += 1
                self.by_region[info.region or "(unknown)"] += 1
                self.by_access_key_id[info.access_key_id or "(unsigned)"] += 1
            else:
                self.other[f"{info.service or '?'}:{info.action or '?'}"] += 1

    def count_fault(self, action: str | None) -> None:
        with self._lock:
            self.faulted[action or "(none)"] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.time()
            total = sum(self.requests.values())
            return {
                "requests": dict(sorted(self.requests.items())),
                "faulted": dict(sorted(self.faulted.items())),
                "total": total,
                "faulted_total": sum(self.faulted.values()),
                "by_region": dict(sorted(self.by_region.items())),
                "other_requests": dict(sorted(self.other.items())),
                "by_access_key_id": dict(sorted(self.by_access_key_id.items())),
                "since": self.since,
                "now": now,
                "per_minute": round(total * 60.0 / max(now - self.since, 1e-6), 3),
            }


class FaultInjector:
    """Decides which EC2 requests fail.  ``faults.next`` is counted down in
    the live config, so ``GET /_sandbox/config`` shows what is left."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seed: Any = object()  # forces a re-seed on the next decision
            self._rng = random.Random()
            self._n = 0

    def decide(self, action: str | None) -> str | None:
        with self._lock:
            f = self.config.get("faults")
            if f["seed"] != self._seed:
                self._seed = f["seed"]
                self._rng = random.Random(f["seed"])
            if f["actions"] is not None and action not in f["actions"]:
                return None
            kinds = f["kinds"]
            if f["next"] > 0:
                self.config.set(("faults", "next"), f["next"] - 1)
                kind = kinds[self._n % len(kinds)]
                self._n += 1
                return kind
            if f["rate"] > 0 and self._rng.random() < f["rate"]:
                return self._rng.choice(kinds)
            return None


def error_response(kind: str) -> tuple[str, list[tuple[str, str]], bytes]:
    status, phrase, code, message = FAULTS[kind]
    request_id = str(uuid.uuid4())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{request_id}</RequestID></Response>"
    ).encode("utf-8")
    headers = [
        ("Content-Type", "text/xml;charset=UTF-8"),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", request_id),
    ]
    return f"{status} {phrase}", headers, body
