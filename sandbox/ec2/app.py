"""The sandbox's WSGI application: control API, fault injection, then moto.

    /_sandbox/...        control API (JSON), handled here
    everything else      counted; EC2 requests may get an injected fault;
                         the rest goes to moto's DomainDispatcherApplication
                         (moto.moto_server.werkzeug_app), with the model lock
                         held so that moto never runs two requests at once and
                         never runs while the simulator changes its models.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from .config import Config, ConfigError
from .events import EventLog, Scheduler
from .faults import LOST_KINDS, FaultInjector, Stats, classify, error_response
from .seed import Seeds
from .sim import Simulator
from . import state as state_mod

log = logging.getLogger("ec2-sandbox")

StartResponse = Callable[..., Any]

ENDPOINTS = {
    "GET /_sandbox/": "this list",
    "GET /_sandbox/health": "{ok: true}",
    "GET /_sandbox/config": "the configuration",
    "POST /_sandbox/config": "deep-merge a JSON object into the configuration; returns it",
    "GET /_sandbox/state": "JSON dump of instances, key pairs, security groups, images, snapshots, volumes, events (?seeded=1: include seed images, ?all_regions=1: every region backend)",
    "POST /_sandbox/seed-image": "add an Amazon-owned base image {region|all, name, creation_date, state, platform, owner_id}",
    "POST /_sandbox/seed-owned-images": "register N images the account owns, in bulk {region, count, name_prefix, tags, creation_date, step_seconds, snapshots_per_image, tag_snapshots, state}",
    "GET /_sandbox/stats": "EC2 requests per action, faulted requests, total",
    "POST /_sandbox/stats/reset": "zero the request counters",
    "POST /_sandbox/reset": "reset moto and the simulator: reloads the seed, restores the start-up config (body {keep_config: true} keeps the current one), zeroes stats and events",
}


class ResponseLost(ConnectionAbortedError):
    """Raised out of the WSGI app to drop the connection without an answer
    (werkzeug's request handler treats a ConnectionError as a dropped connection)."""


class SandboxApp:
    def __init__(
        self,
        moto_app: Any,
        config: Config,
        sim: Simulator,
        seeds: Seeds,
        events: EventLog,
        scheduler: Scheduler,
        stats: Stats,
        faults: FaultInjector,
        lock: threading.RLock,
    ):
        self.moto_app = moto_app
        self.config = config
        self.sim = sim
        self.seeds = seeds
        self.events = events
        self.scheduler = scheduler
        self.stats = stats
        self.faults = faults
        self.lock = lock

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        try:
            if path == "/_sandbox" or path.startswith("/_sandbox/"):
                return self._control(environ, start_response, path)
            info = classify(environ)
            if path.startswith("/moto-api") or path == "/favicon.ico":
                return self._moto(environ, start_response, moto_reset=path.rstrip("/") == "/moto-api/reset")
            self.stats.count(info)
            if info.service == "ec2":
                kind = self.faults.decide(info.action)
                if kind in LOST_KINDS:
                    self.stats.count_fault(info.action)
                    return self._lost_response(environ, start_response, info.region, info.action, kind)
                if kind is not None:
                    self.stats.count_fault(info.action)
                    status, headers, body = error_response(kind)
                    log.info("fault injected: %s %s -> %s", info.region, info.action, status)
                    start_response(status, headers)
                    return [body]
            return self._moto(environ, start_response)
        except ResponseLost:
            raise  # werkzeug treats it as a dropped connection
        except Exception:  # noqa: BLE001 - the sandbox must answer, whatever happens
            log.error("unhandled error for %s %s:\n%s", environ.get("REQUEST_METHOD"), path, traceback.format_exc())
            status, headers, body = error_response("500")
            start_response(status, headers)
            return [body]

    def _lost_response(
        self, environ: dict[str, Any], start_response: StartResponse, region: str | None, action: str | None, kind: str
    ) -> Iterable[bytes]:
        """Lets moto apply the call, then loses its answer: HTTP 500 InternalError
        (`lost-500`) or a connection closed before any byte of the answer
        (`lost-connection`)."""
        moto_status: list[str] = []
        self._moto(environ, lambda status, headers, exc_info=None: moto_status.append(status))
        log.info(
            "fault injected after the call was applied: %s %s (moto answered %s) -> %s",
            region, action, moto_status[0] if moto_status else "?", kind,
        )
        if kind == "lost-500":
            status, headers, body = error_response("500")
            start_response(status, headers)
            return [body]
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise ResponseLost(f"{action}: response dropped after the call was applied")

    def _moto(self, environ: dict[str, Any], start_response: StartResponse, moto_reset: bool = False) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured[:] = [status, headers]
            return lambda data: None

        with self.lock:
            result = self.moto_app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if moto_reset:
                self._reset_sandbox_state()
        start_response(captured[0], captured[1])
        return [body]

    # --------------------------------------------------------------- control

    def _reset_sandbox_state(self) -> None:
        self.scheduler.clear()
        self.sim.reset()
        self.seeds.reset()
        self.events.clear()

    def reset(self, keep_config: bool = False) -> None:
        from moto.moto_api._internal.models import moto_api_backend  # moto's /moto-api/reset

        with self.lock:
            self.scheduler.clear()
            if not keep_config:
                self.config.reset()  # first: moto's reset re-creates the regions from it (extra_windows_images)
            moto_api_backend.reset()
            self._reset_sandbox_state()
            self.faults.reset()
            self.stats.reset()
        log.info("sandbox reset")

    @staticmethod
    def _json(start_response: StartResponse, status: str, obj: Any) -> list[bytes]:
        body = (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _body(environ: dict[str, Any]) -> Any:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        if not raw.strip():
            return {}
        return json.loads(raw.decode("utf-8"))

    def _control(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        route = path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}

        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("1", "true", "yes")

        routes: dict[str, dict[str, Callable[[], Any]]] = {
            "/_sandbox": {"GET": lambda: {"endpoints": ENDPOINTS}},
            "/_sandbox/health": {"GET": lambda: {"ok": True}},
            "/_sandbox/config": {"GET": self.config.snapshot, "POST": lambda: self._post_config(environ)},
            "/_sandbox/state": {"GET": lambda: self._state(flag("seeded"), flag("all_regions"))},
            "/_sandbox/seed-image": {"POST": lambda: self._seed_image(environ)},
            "/_sandbox/seed-owned-images": {"POST": lambda: self._seed_owned_images(environ)},
            "/_sandbox/stats": {"GET": self.stats.snapshot},
            "/_sandbox/stats/reset": {"POST": lambda: (self.stats.reset(), self.stats.snapshot())[1]},
            "/_sandbox/reset": {"POST": lambda: self._reset(environ)},
        }
        handlers = routes.get(route)
        if handlers is None:
            return self._json(start_response, "404 Not Found", {"error": f"no such endpoint {path}", "endpoints": ENDPOINTS})
        handler = handlers.get(method)
        if handler is None:
            return self._json(
                start_response, "405 Method Not Allowed", {"error": f"{method} not allowed on {route}; use {', '.join(handlers)}"}
            )
        try:
            return self._json(start_response, "200 OK", handler())
        except json.JSONDecodeError as e:
            return self._json(start_response, "400 Bad Request", {"error": f"body is not valid JSON: {e}"})
        except (ConfigError, ValueError) as e:
            return self._json(start_response, "400 Bad Request", {"error": str(e)})

    def _reset(self, environ: dict[str, Any]) -> dict[str, Any]:
        body = self._body(environ)
        if not isinstance(body, dict) or set(body) - {"keep_config"}:
            raise ValueError('body must be empty or {"keep_config": true|false}')
        self.reset(keep_config=bool(body.get("keep_config")))
        return {"ok": True, "config": self.config.snapshot()}

    def _post_config(self, environ: dict[str, Any]) -> dict[str, Any]:
        patch = self._body(environ)
        with self.lock:
            old, new = self.config.merge(patch)
            if old["extra_windows_images"] != new["extra_windows_images"]:
                self.seeds.apply_extra()
        log.info("config updated: %s", json.dumps(patch, sort_keys=True))
        return new

    def _state(self, include_seeded: bool, all_regions: bool) -> dict[str, Any]:
        with self.lock:
            return state_mod.dump(self.sim, self.seeds, self.events, self.scheduler, include_seeded, all_regions)

    def _seed_image(self, environ: dict[str, Any]) -> dict[str, Any]:
        body = self._body(environ)
        with self.lock:
            return self.seeds.add_runtime(body)

    def _seed_owned_images(self, environ: dict[str, Any]) -> dict[str, Any]:
        from .owned import seed_owned_images

        body = self._body(environ)
        with self.lock:
            out = seed_owned_images(body)
        log.info("registered %d owned images in %s", len(out["images"]), out["region"])
        return out
