"""Hawk authentication as Taskcluster does it.

Mirrors services/auth/src/signaturevalidator.js (client lookup, `ext` with `certificate` and
`authorizedScopes`) on top of the `hawk` npm package's server.authenticate (header parsing,
MAC over `hawk.1.header\\n...`, 15 minutes of clock skew), and lib-api's payload hash check.
Messages are the ones those libraries produce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field

from . import scopes as scopelib
from .jsjson import js_number

SKEW_SEC = 15 * 60
_HEADER_KEYS = ("id", "ts", "nonce", "hash", "ext", "mac", "app", "dlg")
_ATTR = re.compile(r'(\w+)="([^"\\]*)"\s*(?:,\s*|$)')
_ATTR_VALUE = re.compile(r"^[ \w!#$%&'()*+,\-./:;<=>?@\[\]^`{|}~]+$")


class AuthFailed(Exception):
    """Authentication failed; str() is the message the real service reports."""


@dataclass
class AuthResult:
    status: str  # 'auth-success' | 'no-auth'
    client_id: str | None = None
    scopes: list[str] = field(default_factory=list)
    hash: str | None = None
    claimed_id: str | None = None


def parse_authorization_header(header: str) -> dict:
    m = re.match(r"^(\w+)(?:\s+(.*))?$", header)
    if not m:
        raise AuthFailed("Bad Request: Invalid header syntax")
    if m.group(1).lower() != "hawk":
        raise AuthFailed("Unauthorized")
    attrs_string = m.group(2) or ""
    if not attrs_string:
        raise AuthFailed("Bad Request: Invalid header syntax")
    attributes: dict[str, str] = {}
    error = ""

    def repl(mm):
        nonlocal error
        key, value = mm.group(1), mm.group(2)
        if key not in _HEADER_KEYS:
            error = "Unknown attribute: " + key
            return mm.group(0)
        if not _ATTR_VALUE.match(value):
            error = "Bad attribute value: " + key
            return mm.group(0)
        if key in attributes:
            error = "Duplicate attribute: " + key
            return mm.group(0)
        attributes[key] = value
        return ""

    rest = _ATTR.sub(repl, attrs_string)
    if rest != "":
        raise AuthFailed("Bad Request: " + (error or "Bad header format"))
    return attributes


def claimed_client_id(header: str | None) -> str | None:
    if not header:
        return None
    try:
        return parse_authorization_header(header).get("id")
    except AuthFailed:
        return None


def normalized_string(kind, ts, nonce, method, resource, host, port, hash_="", ext="", app=None, dlg=None) -> str:
    s = f"hawk.1.{kind}\n{ts}\n{nonce}\n{method.upper()}\n{resource}\n{host.lower()}\n{port}\n{hash_ or ''}\n"
    if ext:
        s += ext.replace("\\", "\\\\").replace("\n", "\\n")
    s += "\n"
    if app:
        s += app + "\n" + (dlg or "") + "\n"
    return s


def calculate_mac(key: str, normalized: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), normalized.encode(), hashlib.sha256).digest()).decode()


def payload_hash(body: str, content_type: str | None) -> str:
    ct = (content_type or "").split(";")[0].strip().lower()
    h = hashlib.sha256()
    h.update(b"hawk.1.payload\n")
    h.update(ct.encode() + b"\n")
    h.update(body.encode("utf-8", "surrogatepass"))
    h.update(b"\n")
    return base64.b64encode(h.digest()).decode()


def _b64decode_lenient(s: str) -> bytes:
    # Buffer.from(s, 'base64') accepts url-safe characters and missing padding, skips garbage
    s = s.replace("-", "+").replace("_", "/")
    s = re.sub(r"[^A-Za-z0-9+/]", "", s)
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s)
    except binascii.Error:
        return b""


def _parse_ext(ext: str):
    try:
        return json.loads(_b64decode_lenient(ext).decode("utf-8"))
    except Exception:
        raise AuthFailed("Failed to parse ext")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _js_truthy(v) -> bool:
    return not (v is None or v is False or v == "" or (isinstance(v, (int, float)) and not isinstance(v, bool) and (v == 0 or v != v)))


def _limit_client_with_ext(credential_name, issuing_client_id, access_token, client_scopes, ext, expand=list):
    """signaturevalidator.js limitClientWithExt: returns (accessToken, scopes). `expand` applies
    the roles (the auth service's expandScopes)."""
    scopes = list(client_scopes)
    key = access_token
    if not isinstance(ext, dict):
        ext = {}
    if _js_truthy(ext.get("certificate")):  # JS truthiness: {} and [] count
        cert = ext["certificate"]
        if not isinstance(cert, (dict, list)):
            raise AuthFailed("ext.certificate must be a JSON object")
        if not isinstance(cert, dict) or cert.get("version") != 1:
            raise AuthFailed("ext.certificate.version must be 1")
        if not isinstance(cert.get("seed"), str):
            raise AuthFailed("ext.certificate.seed must be a string")
        if len(cert["seed"]) != 44:
            raise AuthFailed("ext.certificate.seed must be 44 characters")
        for k in ("start", "expiry"):
            if not isinstance(cert.get(k), (int, float)) or isinstance(cert.get(k), bool):
                raise AuthFailed(f"ext.certificate.{k} must be a number")
        if not isinstance(cert.get("scopes"), list):
            raise AuthFailed("ext.certificate.scopes must be an array")
        if not all(scopelib.valid_scope(s) for s in cert["scopes"]):
            raise AuthFailed("ext.certificate.scopes must be an array of valid scopes")
        now = _now_ms()
        if cert["start"] > now + 5 * 60 * 1000:
            raise AuthFailed("ext.certificate.start > now")
        if cert["expiry"] < now - 5 * 60 * 1000:
            raise AuthFailed("ext.certificate.expiry < now")
        if cert["expiry"] - cert["start"] > 31 * 24 * 60 * 60 * 1000:
            raise AuthFailed("ext.certificate cannot last longer than 31 days!")
        if issuing_client_id != credential_name:
            create_scope = "auth:create-client:" + credential_name
            if not scopelib.satisfies(scopes, create_scope):
                raise AuthFailed(
                    "ext.certificate issuer `" + issuing_client_id + "` doesn't have `" + create_scope
                    + "` for supplied clientId.")
        elif "clientId" in cert:
            raise AuthFailed("ext.certificate.clientId must only be used with ext.certificate.issuer")
        if not scopelib.satisfies(scopes, {"AllOf": cert["scopes"]}):
            raise AuthFailed(
                "ext.certificate issuer `" + issuing_client_id + "` doesn't satisfy all certificate scopes "
                + ", ".join(cert["scopes"]) + ".  The temporary credentials were not generated correctly.")
        sig = ["version:1"]
        if cert.get("issuer"):
            sig += ["clientId:" + credential_name, "issuer:" + str(cert["issuer"])]
        sig += ["seed:" + cert["seed"], "start:" + js_number(cert["start"]),
                "expiry:" + js_number(cert["expiry"]), "scopes:"] + cert["scopes"]
        expected = base64.b64encode(
            hmac.new(access_token.encode(), "\n".join(sig).encode(), hashlib.sha256).digest()).decode()
        if not isinstance(cert.get("signature"), str) or not hmac.compare_digest(
                cert["signature"].encode(), expected.encode()):
            if cert.get("issuer"):
                raise AuthFailed("ext.certificate.signature is not valid, or wrong clientId provided")
            raise AuthFailed("ext.certificate.signature is not valid")
        key = (base64.b64encode(hmac.new(access_token.encode(), cert["seed"].encode(), hashlib.sha256).digest())
               .decode().replace("+", "-").replace("/", "_").replace("=", ""))
        scopes = list(cert["scopes"])
    if _js_truthy(ext.get("authorizedScopes")):  # an empty list restricts to nothing
        auth_scopes = ext["authorizedScopes"]
        if not isinstance(auth_scopes, list):
            raise AuthFailed("ext.authorizedScopes must be an array")
        if not all(scopelib.valid_scope(s) for s in auth_scopes):
            raise AuthFailed("ext.authorizedScopes must be an array of valid scopes")
        with_anon = expand(_merge(scopes, ["assume:anonymous"]))
        if not scopelib.satisfies(with_anon, {"AllOf": auth_scopes}):
            raise AuthFailed("\n".join([
                "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:",
                "", "```", "\n".join(with_anon), "```", "",
                "authorizedScopes are:", "", "```", "\n".join(auth_scopes), "```"]))
        scopes = list(auth_scopes)
    return key, scopes


def _merge(a, b):
    out = list(a)
    for s in b:
        if s not in out:
            out.append(s)
    return sorted(out)


def authenticate(*, clients: dict, method: str, resource: str, host_header: str | None,
                 headers, now: float | None = None, expand=list) -> AuthResult:
    """Authenticate a request. `clients` maps clientId -> {accessToken, scopes}; `expand(scopes)`
    applies the roles where signaturevalidator.js does (the client's scopes, the credentials'
    scopes before the authorizedScopes check, the final scopes).

    Returns AuthResult('no-auth') without an Authorization header; raises AuthFailed."""
    authorization = headers.get("Authorization")
    if not authorization:
        return AuthResult("no-auth")
    claimed = claimed_client_id(authorization)
    host, port = _parse_host(host_header, headers)
    attrs = parse_authorization_header(authorization)
    if not all(attrs.get(k) for k in ("id", "ts", "nonce", "mac")):
        raise AuthFailed("Bad Request: Missing attributes")

    # credentials (signaturevalidator loadCredentials)
    credential_name = issuing = attrs["id"]
    ext = None
    if attrs.get("ext"):
        ext = _parse_ext(attrs["ext"])
        if isinstance(ext, dict) and isinstance(ext.get("certificate"), dict) and "issuer" in ext["certificate"]:
            issuing = ext["certificate"]["issuer"]
            if not isinstance(issuing, str):
                raise AuthFailed("ext.certificate.issuer must be a string")
            if issuing == credential_name:
                raise AuthFailed("ext.certificate.issuer must differ from the supplied clientId")
    client = clients.get(issuing)
    if client is None:
        raise AuthFailed(f"Client with clientId '{issuing}' not found")
    key, scopes = client["accessToken"], expand(list(client.get("scopes", [])))
    if ext is not None:
        key, scopes = _limit_client_with_ext(credential_name, issuing, key, scopes, ext, expand)
    scopes = expand(_merge(scopes, ["assume:anonymous"]))

    normalized = normalized_string("header", attrs["ts"], attrs["nonce"], method, resource, host, port,
                                   attrs.get("hash", ""), attrs.get("ext", ""), attrs.get("app"), attrs.get("dlg"))
    mac = calculate_mac(key, normalized)
    if not hmac.compare_digest(mac.encode(), attrs["mac"].encode()):
        raise AuthFailed("Unauthorized: Bad mac")
    now = time.time() if now is None else now
    try:
        ts = float(attrs["ts"])
    except ValueError:
        ts = float("nan")
    # as in hawk: a non-numeric ts gives NaN, and NaN > skew is false
    if abs(ts * 1000 - now * 1000) > SKEW_SEC * 1000:
        raise AuthFailed("Unauthorized: Stale timestamp")
    return AuthResult("auth-success", client_id=credential_name, scopes=scopes, hash=attrs.get("hash"),
                      claimed_id=claimed)


def _parse_host(host_header: str | None, headers):
    """hawk.utils.parseHost plus lib-api's X-Forwarded-Port/Proto handling."""
    host = host_header or ""
    m = re.match(r"^(?:(?:\r\n)?\s)*((?:[^:]+)|(?:\[[\w:.]+\]))(?::(\d+))?(?:(?:\r\n)?\s)*$", host)
    name, port = (m.group(1), m.group(2)) if m else (host, None)
    if port is None:
        port = "80"
    if headers.get("X-Forwarded-Port") is not None:
        try:
            port = str(int(headers.get("X-Forwarded-Port")))
        except ValueError:
            port = "NaN"
    elif headers.get("X-Forwarded-Proto") is not None:
        port = "443" if headers.get("X-Forwarded-Proto") == "https" else port
    return name, port
