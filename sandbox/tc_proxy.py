#!/usr/bin/env python3
"""A stand-in for taskcluster-proxy, for tests and the sandbox.

    python sandbox/tc_proxy.py --root-url URL [--port 0] [--client-id ID] [--access-token TOKEN]
                               [--certificate JSON] [--parent-pid PID] [--retry-max-elapsed SECS]
                               [--quiet] [<scope>...]

Inside a task, taskcluster-proxy (tools/taskcluster-proxy in taskcluster/taskcluster) lets the
task call the Taskcluster APIs without credentials: it signs every request with the task's
credentials. This stand-in does the same on 127.0.0.1 for the client it is given:

- `<proxy>/api/<service>/<version>/<path>?<query>` is forwarded to
  `<rootUrl>/api/<service>/<version>/<path>?<query>`; the legacy form `<proxy>/<service>/<version>/<path>`
  too (routes.go APIHandler / RootHandler, taskcluster/services.go ConvertPath).
- The forwarded request carries the caller's method, headers and body, a Content-Type of
  `application/json` when it had none and a body, and a Hawk header (client-go's SignRequest: MAC
  over the path with its query, no payload hash, `ext` with the certificate and the
  `authorizedScopes`). Answers come back unchanged (status, headers, body), with the proxy's
  `X-Taskcluster-*` headers.
- 5xx and 429 answers and connection failures are retried with exponential backoff
  (httpbackoff with cenkalti/backoff's defaults: 0.5 s, x1.5, +-50 %, at most 60 s apart, for
  `--retry-max-elapsed` seconds, 900 by default as there); then the last answer is passed on, or
  500 "Failed during proxy request: ..." when there was none.
- `PUT /credentials` with `{clientId, accessToken, certificate}` replaces the credentials.

Credentials: `--client-id`, `--access-token`, `--certificate` or TASKCLUSTER_CLIENT_ID,
TASKCLUSTER_ACCESS_TOKEN, TASKCLUSTER_CERTIFICATE (as taskcluster-proxy reads them). Scopes given
after the options become `authorizedScopes` (the proxy restricted to a task's scopes); none means
no restriction. Prints exactly one line `READY http://127.0.0.1:<port>` on stdout once it accepts
connections; logs go to stderr and never show the access token. See sandbox/TASKCLUSTER.md.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

import mohawk
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import get_input_stream

log = logging.getLogger("tc-proxy")

VERSION = "sandbox-stand-in"  # X-Taskcluster-Proxy-Version: not a taskcluster-proxy release
API_PATH = re.compile(r"^/api/(?P<service>[^/]*)/(?P<version>[^/]*)/(?P<path>.*)$", re.S)
HOSTNAME = re.compile(r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
                      r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])\Z")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "host", "content-length"}
CERT_FIELDS = ("version", "scopes", "start", "expiry", "seed", "signature", "issuer")  # client-go's Certificate


class ConfigError(Exception):
    pass


def go_json(v) -> str:
    """encoding/json.Marshal: compact, with <, > and & escaped."""
    s = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Credentials:
    def __init__(self, client_id: str, access_token: str, certificate: str = "", authorized_scopes=None):
        self.client_id, self.access_token = client_id, access_token
        self.authorized_scopes = authorized_scopes
        self.certificate = certificate
        self.cert = parse_certificate(certificate)

    def ext(self) -> str | None:
        """client-go getExtHeader: base64 of {certificate, authorizedScopes}, or nothing."""
        ext = {}
        if self.cert is not None:
            ext["certificate"] = self.cert
        if self.authorized_scopes is not None:
            ext["authorizedScopes"] = self.authorized_scopes
        return base64.b64encode(go_json(ext).encode()).decode() if ext else None

    def sign(self, method: str, url: str) -> str:
        sender = mohawk.Sender({"id": self.client_id, "key": self.access_token, "algorithm": "sha256"}, url, method,
                               always_hash_content=False, ext=self.ext())
        return sender.request_header

    def headers(self) -> dict:
        """routes.go setHeaders."""
        h = {"X-Taskcluster-Proxy-Version": VERSION, "X-Taskcluster-Proxy-Revision": ""}
        if self.cert is None:
            h["X-Taskcluster-Proxy-Perm-ClientId"] = self.client_id
        else:
            h["X-Taskcluster-Proxy-Temp-ClientId"] = self.client_id
            h["X-Taskcluster-Proxy-Temp-Scopes"] = go_json(self.cert.get("scopes"))
        if self.authorized_scopes is not None:
            h["X-Taskcluster-Authorized-Scopes"] = go_json(self.authorized_scopes)
        return h


def parse_certificate(text: str):
    if not text:
        return None
    try:
        cert = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"the certificate is not JSON ({e}); give the temporary credentials' certificate as "
                          "its JSON text")
    if not isinstance(cert, dict):
        raise ConfigError("the certificate must be a JSON object (the temporary credentials' certificate)")
    out = {k: cert[k] for k in CERT_FIELDS if k in cert}
    if not out.get("issuer"):
        out.pop("issuer", None)  # `json:"issuer,omitempty"`
    return out


def target_url(root_url: str, raw_path: str, query: str):
    """(url, None) or (None, (status, text)) for a request path, as routes.go does."""
    root = root_url.rstrip("/")
    q = "?" + query if query else ""
    if raw_path.startswith("/api"):
        m = API_PATH.match(raw_path)
        if not m:
            return None, (404, "invalid /api path")
        return f"{root}/api/{m['service']}/{m['version']}/{(m['path'] + q).lstrip('/')}", None
    rest = raw_path[1:] if raw_path.startswith("/") else raw_path
    service, _, path = rest.partition("/")
    if not HOSTNAME.match(service):
        return None, (404, f"Unkown taskcluster service: {service} is not a valid taskcluster service")
    if "." in service:  # the real proxy forwards to https://<service>/...; the sandbox stays local
        return None, (404, f"Unkown taskcluster service: {service} is not forwarded by the sandbox's stand-in")
    version, sep, path = path.partition("/")
    if not sep:  # services.go slices past the end of the path here: Go's server drops the connection
        return None, (500, "the real taskcluster-proxy panics on a path without a part after the version")
    return f"{root}/api/{service}/{version}/{(path + q).lstrip('/')}", None


class Backoff:
    """cenkalti/backoff v3's ExponentialBackOff defaults, with the elapsed limit configurable."""

    def __init__(self, max_elapsed: float):
        self.interval, self.started, self.max_elapsed = 0.5, time.monotonic(), max_elapsed

    def next(self) -> float | None:
        if time.monotonic() - self.started > self.max_elapsed:
            return None
        delta = 0.5 * self.interval
        wait = self.interval - delta + random.random() * (2 * delta)
        self.interval = min(self.interval * 1.5, 60.0)
        return wait


class Proxy:
    def __init__(self, root_url: str, creds: Credentials, retry_max_elapsed: float = 900.0):
        self.root_url = root_url
        self.creds = creds
        self.retry_max_elapsed = retry_max_elapsed
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        method = environ["REQUEST_METHOD"].upper()
        body = get_input_stream(environ).read()
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        with self.lock:
            creds = self.creds
        own = creds.headers()
        if raw_uri.startswith("/credentials"):
            status, extra, out = self.credentials(method, body)
        elif raw_uri.startswith("/bewit"):
            status, extra, out = 501, {}, b"the sandbox's taskcluster-proxy stand-in does not sign bewit URLs"
        else:
            status, extra, out = self.forward(creds, method, raw_uri, headers, body)
        resp_headers = {**own, **extra}
        if "Content-Type" not in resp_headers and out:
            resp_headers["Content-Type"] = "text/plain; charset=utf-8"
        resp_headers["Content-Length"] = str(len(out))
        start_response(f"{status} {http.client.responses.get(status, 'Status')}", list(resp_headers.items()))
        return [out]

    def credentials(self, method: str, body: bytes):
        if method != "PUT":
            log.info("Invalid method %s", method)
            return 405, {}, b""
        try:
            update = json.loads(body.decode("utf-8"))
            creds = Credentials(str(update.get("clientId", "")), str(update.get("accessToken", "")),
                                str(update.get("certificate") or ""), self.creds.authorized_scopes)
        except (ValueError, AttributeError, ConfigError) as e:
            log.info("Could not decode request: %s", e)
            return 400, {}, b""
        with self.lock:
            self.creds = creds
        log.info("credentials replaced (clientId %s)", creds.client_id)
        return 200, {}, b""

    def forward(self, creds: Credentials, method: str, raw_uri: str, headers: dict, body: bytes):
        path, _, query = raw_uri.partition("?")
        url, err = target_url(self.root_url, path, query)
        if err:
            log.info("%s parsing %s", err[1], raw_uri)
            return err[0], {}, err[1].encode()
        log.info("Proxying %s | %s | %s", raw_uri, method, url)
        fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        if "Content-Type" not in fwd and body:
            fwd["Content-Type"] = "application/json"
        backoff = Backoff(self.retry_max_elapsed)
        while True:
            fwd["Authorization"] = creds.sign(method, url)  # a fresh signature for every attempt
            try:
                status, resp_headers, out = _request(method, url, fwd, body)
                err = None
            except OSError as e:
                status, err = None, e
            if err is None and status // 100 != 5 and status != 429:
                break
            wait = backoff.next()
            if wait is None:
                break
            log.info("Error: %s; retrying in %.1fs", f"HTTP {status}" if err is None else err, wait)
            time.sleep(wait)
        if err is not None:
            return 500, {"X-Taskcluster-Endpoint": url}, f"Failed during proxy request: {err}".encode()
        extra = {"X-Taskcluster-Endpoint": url}
        for k, v in resp_headers:
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("server", "date"):  # the server adds its own
                extra[k] = v  # Header().Set: one value per name, the upstream's wins
        return status, extra, out


def _request(method: str, url: str, headers: dict, body: bytes):
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=300)
    try:
        target = parts.path + ("?" + parts.query if parts.query else "")
        conn.request(method, target, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                     headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass  # the proxy logs each request itself


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="taskcluster-proxy stand-in (sandbox only): signs requests to the "
                                            "root URL with the configured client's credentials.")
    p.add_argument("scopes", nargs="*", metavar="scope",
                   help="authorizedScopes: restrict the credentials to these scopes (a task's scopes)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--root-url", default=os.environ.get("TASKCLUSTER_ROOT_URL"),
                   help="the deployment's root URL (default: $TASKCLUSTER_ROOT_URL)")
    p.add_argument("--client-id", default=os.environ.get("TASKCLUSTER_CLIENT_ID"),
                   help="the client to sign with (default: $TASKCLUSTER_CLIENT_ID)")
    p.add_argument("--access-token", default=os.environ.get("TASKCLUSTER_ACCESS_TOKEN"),
                   help="its access token (default: $TASKCLUSTER_ACCESS_TOKEN; prefer the variable)")
    p.add_argument("--certificate", default=os.environ.get("TASKCLUSTER_CERTIFICATE", ""),
                   help="temporary credentials' certificate, JSON text (default: $TASKCLUSTER_CERTIFICATE)")
    p.add_argument("--parent-pid", type=int, help="exit when the process with this pid is gone")
    p.add_argument("--retry-max-elapsed", type=float, default=900.0,
                   help="seconds to keep retrying 5xx/429 answers and connection failures (default 900)")
    p.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING if args.quiet else logging.INFO,
                        format="tc-proxy: %(message)s")
    for name, value, hint in (("root URL", args.root_url, "--root-url or TASKCLUSTER_ROOT_URL"),
                              ("client id", args.client_id, "--client-id or TASKCLUSTER_CLIENT_ID"),
                              ("access token", args.access_token, "TASKCLUSTER_ACCESS_TOKEN or --access-token")):
        if not value:
            print(f"tc-proxy: no {name}: set {hint}", file=sys.stderr)
            return 2
    if not re.match(r"^https?://[^/]+", args.root_url):
        print(f"tc-proxy: the root URL {args.root_url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    try:
        creds = Credentials(args.client_id, args.access_token, args.certificate, args.scopes or None)
    except ConfigError as e:
        print(f"tc-proxy: {e}", file=sys.stderr)
        return 2
    proxy = Proxy(args.root_url, creds, args.retry_max_elapsed)
    try:
        srv = make_server("127.0.0.1", args.port, proxy, threaded=True, request_handler=_QuietHandler)
    except OSError as e:
        print(f"tc-proxy: cannot listen on 127.0.0.1:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    srv.daemon_threads = True
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True)
    thread.start()
    log.info("Root URL: '%s'; Client ID: '%s'; Access Token: <not shown>; %s", args.root_url, args.client_id,
             f"authorizedScopes {args.scopes}" if args.scopes else "full scopes of the credentials")
    print(f"READY http://127.0.0.1:{srv.server_port}", flush=True)
    while not stop.wait(0.5):
        if args.parent_pid is not None and not _alive(args.parent_pid):
            log.info("parent process %d is gone", args.parent_pid)
            break
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
