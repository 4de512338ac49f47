"""The /_emulator/ control API: fault injection, concurrent changes, state, reset, expiry.

Plain JSON over HTTP, no auth, loopback clients only. Documented in sandbox/TASKCLUSTER.md.
"""

from __future__ import annotations

import copy
import itertools

from .api import Request, Response
from .jsjson import JSONParseError, jsonb_equal, parse
from .store import LaunchConfigConflict, iso, utcnow

DEFAULT_FAULTS = {
    500: ("InternalServerError", "Internal Server Error, incidentId {{incidentId}}."),
    503: ("ProviderSetupFailed", "Provider backend may be down or misconfigured"),
}


class ControlError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Faults:
    def __init__(self):
        self.latency_ms = 0
        self.fail = None  # {status, remaining, code, message, match}

    def view(self) -> dict:
        return {"latency_ms": self.latency_ms, "fail": copy.deepcopy(self.fail)}

    def configure(self, body: dict) -> None:
        unknown = set(body) - {"latency_ms", "fail", "clear"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}; allowed: latency_ms, fail, clear")
        if body.get("clear"):
            self.latency_ms, self.fail = 0, None
        if "latency_ms" in body:
            v = body["latency_ms"]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 600_000:
                raise ControlError(400, "latency_ms must be an integer from 0 to 600000")
            self.latency_ms = v
        if "fail" in body:
            f = body["fail"]
            if f is None:
                self.fail = None
                return
            if not isinstance(f, dict):
                raise ControlError(400, "fail must be an object {status, count, code?, message?, match?}")
            unknown = set(f) - {"status", "count", "code", "message", "match"}
            if unknown:
                raise ControlError(400, f"fail: unknown keys {sorted(unknown)}")
            status, count = f.get("status"), f.get("count", 1)
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ControlError(400, "fail.status must be an HTTP error status (400-599), e.g. 503 or 500")
            if not isinstance(count, int) or count < 0:
                raise ControlError(400, "fail.count must be a non-negative integer")
            default_code, default_msg = DEFAULT_FAULTS.get(status, ("InjectedFault", "tc-emulator injected fault"))
            match = f.get("match") or {}
            if not isinstance(match, dict) or set(match) - {"method", "path_contains"}:
                raise ControlError(400, "fail.match may hold method and path_contains")
            self.fail = {"status": status, "remaining": count, "code": f.get("code", default_code),
                         "message": f.get("message", default_msg), "match": match}

    def take(self, req: Request):
        """The failure for this request, if one is due (and count it)."""
        f = self.fail
        if not f or f["remaining"] <= 0:
            return None
        m = f["match"]
        if m.get("method") and m["method"].upper() != req.method:
            return None
        if m.get("path_contains") and m["path_contains"] not in req.raw_uri:
            return None
        f["remaining"] -= 1
        return f["status"], f["code"], f["message"]


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class ConcurrentChanges:
    def __init__(self):
        self.pending: list[dict] = []
        self.applied: list[dict] = []
        self._ids = itertools.count(1)

    def view(self) -> dict:
        return {"pending": copy.deepcopy(self.pending), "applied": copy.deepcopy(self.applied)}


class Control:
    def __init__(self, emulator):
        self.em = emulator

    def handle(self, req: Request) -> Response:
        if req.remote_addr not in ("127.0.0.1", "::1", "localhost"):
            return Response(403, {"error": "the control API answers loopback clients only"})
        path = req.path.rstrip("/")
        routes = {
            ("GET", "/_emulator"): self.help,
            ("GET", "/_emulator/state"): self.state,
            ("POST", "/_emulator/reset"): self.reset,
            ("GET", "/_emulator/faults"): self.get_faults,
            ("POST", "/_emulator/faults"): self.set_faults,
            ("POST", "/_emulator/concurrent-change"): self.concurrent_change,
            ("POST", "/_emulator/expire"): self.expire,
        }
        fn = routes.get((req.method, path))
        if fn is None:
            return Response(404, {"error": f"no control endpoint {req.method} {path}", "endpoints": [
                f"{m} {p}" for m, p in routes]})
        try:
            body = {}
            if req.body.strip():
                body = parse(req.body.decode("utf-8", "replace"))
                if not isinstance(body, dict):
                    raise ControlError(400, "the body must be a JSON object")
            with self.em.lock:
                return Response(200, fn(body))
        except JSONParseError as e:
            return Response(400, {"error": f"body is not JSON: {e}"})
        except ControlError as e:
            return Response(e.status, {"error": str(e)})

    def help(self, body):
        return {"endpoints": {
            "GET /_emulator/state": "pools (with archived launch configs), secrets, request log, faults, changes",
            "POST /_emulator/reset": "reload the seed file; clears faults, changes and the request log",
            "GET|POST /_emulator/faults": "{latency_ms, fail: {status, count, code?, message?, match?}, clear?}",
            "POST /_emulator/concurrent-change": "{workerPoolId, after_requests, patch}",
            "POST /_emulator/expire": "run the service's expiry jobs (deleted pools, archived launch configs, secrets)",
        }, "rootUrl": self.em.root_url}

    def state(self, body):
        store, now = self.em.store, utcnow()
        return {
            "rootUrl": self.em.root_url,
            "seed": self.em.seed_path,
            "workerPools": {
                wpid: {"definition": p.view(),
                       "launchConfigs": [lc.view(wpid) for lc in p.launch_configs]}
                for wpid, p in sorted(store.pools.items())},
            "secrets": {n: {"secret": s.secret, "expires": iso(s.expires), "expired": s.expires <= now}
                        for n, s in sorted(store.secrets.items())},
            "clients": [{"clientId": c, "scopes": v.get("scopes", [])} for c, v in store.clients.items()],
            "providers": store.providers,
            "requests": list(self.em.request_log),
            "faults": self.em.faults.view(),
            "concurrentChanges": self.em.changes.view(),
        }

    def reset(self, body):
        from .store import SeedError
        try:
            self.em.reset()
        except SeedError as e:
            raise ControlError(400, f"reset failed, state kept: {e}")
        return {"reset": True, "seed": self.em.seed_path}

    def get_faults(self, body):
        return self.em.faults.view()

    def set_faults(self, body):
        self.em.faults.configure(body)
        return self.em.faults.view()

    def expire(self, body):
        return self.em.store.expire(utcnow())

    def concurrent_change(self, body):
        unknown = set(body) - {"workerPoolId", "after_requests", "patch"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}; allowed: workerPoolId, after_requests, patch")
        wpid, k, patch = body.get("workerPoolId"), body.get("after_requests", 0), body.get("patch")
        if not isinstance(wpid, str) or wpid not in self.em.store.pools:
            raise ControlError(404, f"no worker pool {wpid!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ControlError(400, "after_requests must be a non-negative integer")
        if not isinstance(patch, dict):
            raise ControlError(400, "patch must be an object (a JSON merge patch of the pool definition)")
        change = {"id": next(self.em.changes._ids), "workerPoolId": wpid, "remaining": k, "patch": patch}
        if k == 0:
            self.apply_change(change)
        else:
            self.em.changes.pending.append(change)
        return {"id": change["id"], "pending": k > 0}

    # -- called by the server after each API request (lock held)
    def after_request(self, worker_pool_id: str | None):
        if worker_pool_id is None:
            return
        for change in list(self.em.changes.pending):
            if change["workerPoolId"] == worker_pool_id:
                change["remaining"] -= 1
                if change["remaining"] <= 0:
                    self.em.changes.pending.remove(change)
                    self.apply_change(change)

    def apply_change(self, change: dict):
        record = {"id": change["id"], "workerPoolId": change["workerPoolId"], "time": iso(utcnow())}
        try:
            self._apply(change["workerPoolId"], change["patch"])
            record["result"] = "applied"
            self.em.log.info("concurrent change %s applied to %s", change["id"], change["workerPoolId"])
        except ControlError as e:
            record["result"] = "failed"
            record["error"] = str(e)
            self.em.log.warning("concurrent change %s failed: %s", change["id"], e)
        self.em.changes.applied.append(record)

    def _apply(self, wpid: str, patch: dict):
        from .api import ApiError  # local: api imports nothing from here
        store = self.em.store
        pool = store.pools.get(wpid)
        if pool is None:
            raise ControlError(404, f"no worker pool {wpid!r}")
        view = pool.view()
        definition = {k: view[k] for k in ("providerId", "description", "owner", "emailOnError", "config")}
        patch = copy.deepcopy(patch)
        lc_patch = (patch.get("config") or {}).get("launchConfigs") if isinstance(patch.get("config"), dict) else None
        if isinstance(lc_patch, dict):
            del patch["config"]["launchConfigs"]
            lcs = definition["config"].get("launchConfigs", [])
            for key, p in lc_patch.items():
                hits = [i for i, lc in enumerate(lcs) if isinstance(lc, dict) and (
                    (lc.get("workerManager") or {}).get("launchConfigId") == key or lc.get("region") == key)]
                if not hits:
                    raise ControlError(400, f"no launch config with id or region {key!r} in {wpid}")
                for i in hits:
                    lcs[i] = merge_patch(lcs[i], p)
        new = merge_patch(definition, patch)
        # someone else's well-behaved client: a changed launch config gets a new id
        rows = {lc.launch_config_id: lc for lc in pool.launch_configs}
        for lc in (new.get("config") or {}).get("launchConfigs", []) or []:
            wm = lc.get("workerManager") if isinstance(lc, dict) else None
            if isinstance(wm, dict) and wm.get("launchConfigId") in rows:
                old = rows[wm["launchConfigId"]].configuration
                strip = lambda c: {k: v for k, v in c.items() if k != "workerManager"} if isinstance(c, dict) else c
                if not jsonb_equal(strip(old), strip(lc)):
                    del wm["launchConfigId"]
                    if not wm:
                        del lc["workerManager"]
        provider = store.providers.get(new.get("providerId"))
        if provider is None:
            raise ControlError(400, f"unknown providerId {new.get('providerId')!r}")
        for k in ("description", "owner"):
            if not isinstance(new.get(k), str):
                raise ControlError(400, f"{k} must be a string")
        if not isinstance(new.get("emailOnError"), bool) or not isinstance(new.get("config"), dict):
            raise ControlError(400, "emailOnError must be a boolean and config an object")
        try:
            self.em.api._validate_config(provider, new["config"])
        except ApiError as e:
            raise ControlError(400, "the patched config is invalid: " + e.message)
        try:
            pool.replace(new["providerId"], new["description"], new["config"], new["owner"], new["emailOnError"],
                         utcnow())
        except LaunchConfigConflict as c:
            raise ControlError(409, f"launch config {c.launch_config_id} already exists with different configuration")
