"""The emulator: state loaded from a seed, the WSGI app, and the HTTP server."""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time

from werkzeug.datastructures import EnvironHeaders
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import get_input_stream

from . import hawk
from .api import Api, DecodeParamError, Request, Response
from .control import ConcurrentChanges, Control, Faults
from .hooks import load_seed_hooks
from .queue import Queue
from .sim import Clock, SimError, Simulator, validate_config
from .store import NULL_PROVIDER, SeedError, Secret, Store, load_seed, parse_date, utcnow
from .validation import SchemaSet

GENERATED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 410: "Gone", 413: "Payload Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Emulator:
    def __init__(self, seed_path: str, generated_dir: str = GENERATED_DIR, log: logging.Logger | None = None,
                 simulation: dict | None = None):
        """`simulation`: settings that override the seed's `simulation` (the command line's)."""
        self.log = log or logging.getLogger("tc-emulator")
        self.seed_path = os.path.abspath(seed_path)
        self.schemas = SchemaSet(generated_dir)
        self.root_url = "http://127.0.0.1"
        self.lock = threading.RLock()
        self.api = Api(self)
        self.control = Control(self)
        self.queue = Queue(self)
        self.sim_overrides = dict(simulation or {})
        self.store = self._load()
        self.sim = Simulator(self, self.store.simulation)
        self.request_log: collections.deque = collections.deque(maxlen=2000)
        self.faults = Faults()
        self.changes = ConcurrentChanges()
        self.clock: Clock | None = None

    def start_clock(self):
        """Run the simulation in the background (the command line does; tests of the store do not)."""
        self.clock = Clock(self)
        self.clock.start()

    def stop_clock(self):
        if self.clock is not None:
            self.clock.stopped.set()
            self.clock.join(5)

    # ------------------------------------------------------------------ seed

    def reset(self):
        with self.lock:
            self.store = self._load()
            self.sim = Simulator(self, self.store.simulation)
            self.request_log.clear()
            self.faults = Faults()
            self.changes = ConcurrentChanges()

    def _load(self) -> Store:
        path = self.seed_path
        seed = load_seed(path)
        store = Store()
        store.options = {"applySchemaDefaults": True, **(seed.get("options") or {})}
        try:
            store.simulation = validate_config({**(seed.get("simulation") or {}), **self.sim_overrides},
                                               f"seed {path}: simulation")
        except SimError as e:
            raise SeedError(str(e))
        for c in seed.get("clients", []):
            store.clients[c["clientId"]] = {"accessToken": c["accessToken"], "scopes": list(c.get("scopes", []))}
        store.roles = [(r["roleId"], list(r.get("scopes", []))) for r in seed.get("roles", [])]
        for pid, p in (seed.get("providers") or {}).items():
            store.providers[pid] = {"providerType": p.get("providerType", "null" if pid == NULL_PROVIDER else "aws"),
                                    "setup": p.get("setup", "ok")}
        store.providers.setdefault(NULL_PROVIDER, {"providerType": "null", "setup": "ok"})
        for i, wp in enumerate(seed.get("workerPools", [])):
            self._seed_pool(store, path, i, wp)
        for name, s in (seed.get("secrets") or {}).items():
            msg = self.schemas.message("secrets", "v1/secret.json#", s, self.root_url)
            if msg:
                raise SeedError(f"seed {path}: secrets.{name} is invalid:{msg}")
            store.secrets[name] = Secret(s["secret"], parse_date(s["expires"]))
        load_seed_hooks(self, store, path, seed.get("hooks", []))
        return store

    def _seed_pool(self, store: Store, path: str, i: int, wp):
        where = f"seed {path}: workerPools[{i}]"
        if not isinstance(wp, dict):
            raise SeedError(f"{where} must be an object")
        wpid = wp.get("workerPoolId")
        where = f"seed {path}: workerPools[{i}] ({wpid})"
        if not isinstance(wpid, str) or not re.match(r"^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?\Z", wpid):
            raise SeedError(f"{where}: workerPoolId must match ^[a-zA-Z0-9-_]{{1,38}}/[a-z]([-a-z0-9]{{0,36}}[a-z0-9])?$")
        definition = {k: v for k, v in wp.items() if k not in ("workerPoolId", "created", "lastModified")}
        msg = self.schemas.message("worker-manager", "v1/create-worker-pool-request.json#", definition, self.root_url)
        if msg:
            raise SeedError(f"{where} is invalid:{msg}")
        provider = store.providers.get(definition["providerId"])
        if provider is None:
            raise SeedError(f"{where}: providerId {definition['providerId']!r} is not in providers "
                            f"({', '.join(sorted(store.providers))})")
        schema = "v1/config-null.json#" if provider["providerType"] == "null" else "v1/config-aws.json#"
        if store.options.get("applySchemaDefaults", True):
            self.schemas.apply_defaults("worker-manager", schema, definition["config"])
        msg = self.schemas.message("worker-manager", schema, definition["config"], self.root_url)
        if msg:
            raise SeedError(f"{where}: config is invalid:{msg}")
        try:
            created = parse_date(wp["created"]) if "created" in wp else utcnow()
            modified = parse_date(wp["lastModified"]) if "lastModified" in wp else created
        except (TypeError, ValueError):
            raise SeedError(f"{where}: created/lastModified must be ISO 8601 date-times")
        pool = store.create_pool(wpid, definition["providerId"], definition["description"], definition["config"],
                                 definition["owner"], definition["emailOnError"], created)
        if pool is None:
            raise SeedError(f"{where}: duplicate workerPoolId")
        pool.last_modified = modified
        for lc in pool.launch_configs:
            lc.created = lc.last_modified = created

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ, start_response):
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        if "://" in raw_uri.split("?", 1)[0]:  # absolute-form request target
            raw_uri = "/" + raw_uri.split("://", 1)[1].partition("/")[2]
        try:
            raw_uri = raw_uri.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
        req = Request(
            method=environ["REQUEST_METHOD"].upper(),
            raw_uri=raw_uri,
            headers=EnvironHeaders(environ),
            body=get_input_stream(environ).read(),
            remote_addr=environ.get("REMOTE_ADDR", ""),
        )
        if req.path == "/_emulator" or req.path.startswith("/_emulator/"):
            resp = self.control.handle(req)
        else:
            resp = self.handle_api(req)
        body = resp.bytes() if req.method != "HEAD" else b""
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.bytes()))),
                   ("Access-Control-Allow-Origin", "*"), ("Cache-Control", "no-store no-cache must-revalidate")]
        headers += list(resp.headers.items())
        start_response(f"{resp.status} {_REASONS.get(resp.status, 'Error')}", headers)
        return [body]

    def handle_api(self, req: Request) -> Response:
        started = time.monotonic()
        try:
            route, params = self.api.match(req.method, req.path)
        except DecodeParamError as e:
            return _express_error(400, f"URIError: {e}")
        with self.lock:
            latency = self.faults.latency_ms
        if latency:
            time.sleep(latency / 1000)
        with self.lock:
            ctx = None
            fault = self.faults.take(req)
            if fault:
                resp = self.api.fault_response(req, route, params, *fault)
            elif route is None:
                if req.method == "OPTIONS" and self.api.path_exists(req.path):
                    resp = Response(200, "GET,HEAD,PUT,POST,DELETE", {"Allow": "GET,HEAD,PUT,POST,DELETE"},
                                    content_type="text/html; charset=utf-8")
                else:
                    resp = _express_error(404, f"Cannot {req.method} {req.path}")
            else:
                resp, ctx = self.api.handle(req, route, params)
            self._log(req, route, ctx, resp, fault is not None, started)
            self.control.after_request((params or {}).get("workerPoolId") if route else None)
        return resp

    def _log(self, req, route, ctx, resp, faulted, started):
        auth = ctx.auth if ctx is not None else None
        authenticated = isinstance(auth, hawk.AuthResult) and auth.status == "auth-success"
        client_id = auth.client_id if authenticated else hawk.claimed_client_id(req.headers.get("Authorization"))
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": req.method,
            "path": req.raw_uri,
            "apiMethod": route.entry["name"] if route else None,
            "clientId": client_id,
            "authenticated": authenticated,
            "status": resp.status,
            "injectedFault": faulted,
        }
        if isinstance(resp.body, dict) and resp.status >= 400:
            entry["errorCode"] = resp.body.get("code")
        self.request_log.append(entry)
        self.log.info("%s %s -> %d%s (%s) %.0fms", req.method, req.raw_uri, resp.status,
                      " [injected]" if faulted else "", client_id or "no credentials",
                      (time.monotonic() - started) * 1000)


def _express_error(status: int, text: str) -> Response:
    html = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
            f'</head>\n<body>\n<pre>{_html_escape(text)}</pre>\n</body>\n</html>\n')
    return Response(status, html, {"Content-Security-Policy": "default-src 'none'",
                                   "X-Content-Type-Options": "nosniff"}, content_type="text/html; charset=utf-8")


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass  # the emulator logs each API request itself


def serve(emulator: Emulator, port: int = 0):
    """Bind 127.0.0.1:port (0 = any free port) and return the server (not yet serving)."""
    srv = make_server("127.0.0.1", port, emulator, threaded=True, request_handler=_QuietHandler)
    emulator.root_url = f"http://127.0.0.1:{srv.server_port}"
    return srv


__all__ = ["Emulator", "SeedError", "serve"]
