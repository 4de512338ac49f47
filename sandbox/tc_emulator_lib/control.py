"""The /_emulator/ control API: fault injection, concurrent changes, state, reset, expiry, and the
simulation (tasks, workers, time scale, forced outcomes).

Plain JSON over HTTP, no auth, loopback clients only. Documented in sandbox/TASKCLUSTER.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import re

from .api import Request, Response
from .jsjson import JSONParseError, jsonb_equal, parse
from .queue import QueueError, slugid_from
from .sim import EXCEPTION_REASONS, STATES
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
            ("GET", "/_emulator/tasks"): self.tasks,
            ("GET", "/_emulator/workers"): self.workers,
            ("POST", "/_emulator/workers"): self.add_workers,
            ("POST", "/_emulator/time-scale"): self.time_scale,
            ("POST", "/_emulator/advance"): self.advance,
            ("POST", "/_emulator/task-outcome"): self.task_outcome,
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
            "GET /_emulator/state": "pools (with archived launch configs), secrets, roles, hooks (with their last "
                                    "fires), request log, faults, changes",
            "POST /_emulator/reset": "reload the seed file; clears faults, changes and the request log",
            "GET|POST /_emulator/faults": "{latency_ms, fail: {status, count, code?, message?, match?}, clear?}",
            "POST /_emulator/concurrent-change": "{workerPoolId, after_requests, patch}",
            "POST /_emulator/expire": "run the services' expiry jobs (stopped workers, deleted pools, archived "
                                      "launch configs, secrets)",
            "GET /_emulator/tasks": "every task: state, runs, forced outcome, what the simulation did",
            "GET /_emulator/workers": "every worker: worker-manager's view, its task, draining, the queue's record",
            "POST /_emulator/workers": "{workerPoolId, workers: [{state, launchConfigId?, workerGroup?, workerId?, "
                                       "capacity?, taskMaxRunTime?}]}",
            "POST /_emulator/time-scale": "{timeScale}: real seconds per simulated second (0 freezes the clock)",
            "POST /_emulator/advance": "{seconds}: move the simulated clock forward",
            "POST /_emulator/task-outcome": "{taskId, outcome: completed|failed|exception, reason?}",
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
            "roles": [{"roleId": r, "scopes": s} for r, s in store.roles],
            "hooks": {f"{g}/{h}": {"definition": hook.definition(), "nextScheduledDate": iso(hook.next_scheduled_date),
                                   "lastFires": [{**f, "taskCreateTime": iso(f["taskCreateTime"])}
                                                 for f in hook.last_fires]}
                      for (g, h), hook in sorted(store.hooks.items())},
            "providers": store.providers,
            "requests": list(self.em.request_log),
            "faults": self.em.faults.view(),
            "concurrentChanges": self.em.changes.view(),
            "simulation": self.em.sim.view(),
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

    # ------------------------------------------------------------------ simulation

    def tasks(self, body):
        self.em.sim.tick()
        return {"simulation": self.em.sim.view(), "tasks": [{
            "taskId": t.task_id, "taskGroupId": t.definition["taskGroupId"],
            "taskQueueId": t.definition["taskQueueId"], "name": t.definition["metadata"].get("name"),
            "state": t.state(), "runs": t.status()["runs"],
            "forcedOutcome": None if t.forced_outcome is None else {"outcome": t.forced_outcome[0],
                                                                    "reason": t.forced_outcome[1]},
            "log": list(t.log)} for t in sorted(self.em.store.tasks.values(), key=lambda t: t.task_id)]}

    def _worker_view(self, w):
        qw = self.em.store.queue_workers.get(w.key)
        return {**w.view(), "imageId": w.image_id, "draining": w.draining,
                "task": None if w.task is None else {"taskId": w.task[0], "runId": w.task[1]},
                "queue": None if qw is None else {
                    "firstClaim": iso(qw.first_claim), "lastDateActive": iso(qw.last_date_active),
                    "expires": iso(qw.expires), "recentTasks": list(qw.recent_tasks)}}

    def workers(self, body):
        self.em.sim.tick()
        return {"simulation": self.em.sim.view(), "workers": [
            self._worker_view(w) for w in sorted(self.em.store.workers.values(), key=lambda w: w.key)]}

    def add_workers(self, body):
        unknown = set(body) - {"workerPoolId", "workers"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}; allowed: workerPoolId, workers")
        wpid, specs = body.get("workerPoolId"), body.get("workers")
        pool = self.em.store.pools.get(wpid) if isinstance(wpid, str) else None
        if pool is None:
            raise ControlError(404, f"no worker pool {wpid!r}")
        if not isinstance(specs, list) or not specs or not all(isinstance(x, dict) for x in specs):
            raise ControlError(400, "workers must be a non-empty list of {state, launchConfigId?, workerGroup?, "
                                    "workerId?, capacity?, taskMaxRunTime?}")
        provider = self.em.store.providers.get(pool.provider_id) or {}
        if provider.get("providerType") != "aws":
            raise ControlError(400, f"{wpid} has provider {pool.provider_id!r}; simulated workers come from an "
                                    "aws provider (a deleted pool has null-provider)")
        rows = {lc.launch_config_id: lc for lc in pool.launch_configs}
        active = [lc for lc in pool.launch_configs if not lc.is_archived]
        plan = []
        for i, x in enumerate(specs):
            bad = set(x) - {"state", "launchConfigId", "workerGroup", "workerId", "capacity", "taskMaxRunTime"}
            if bad:
                raise ControlError(400, f"workers[{i}]: unknown keys {sorted(bad)}")
            state = x.get("state", "running")
            if state not in STATES:
                raise ControlError(400, f"workers[{i}].state must be one of {', '.join(STATES)}")
            lcid = x.get("launchConfigId")
            if lcid is None:
                if not active:
                    raise ControlError(400, f"workers[{i}]: {wpid} has no current launch config; name one "
                                            "with launchConfigId (archived ones are listed by "
                                            "listWorkerPoolLaunchConfigs?includeArchived=true)")
                lc = active[0]
            elif lcid in rows:
                lc = rows[lcid]
            else:
                raise ControlError(400, f"workers[{i}]: {wpid} has no launch config {lcid!r}")
            for k in ("workerGroup", "workerId"):
                v = x.get(k)
                if v is not None and (not isinstance(v, str) or not re.fullmatch(r"[a-zA-Z0-9-_]{1,38}", v)):
                    raise ControlError(400, f"workers[{i}].{k} must match ^([a-zA-Z0-9-_]{{1,38}})$")
            cap = x.get("capacity")
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
                raise ControlError(400, f"workers[{i}].capacity must be a positive integer")
            mrt = x.get("taskMaxRunTime")
            if mrt is not None and (state != "running" or not isinstance(mrt, int) or isinstance(mrt, bool)
                                    or not 1 <= mrt <= 86400):
                raise ControlError(400, f"workers[{i}].taskMaxRunTime needs state running and 1 to 86400 seconds")
            if x.get("workerId") is not None and (wpid, x.get("workerGroup") or lc.configuration.get("region"),
                                                  x["workerId"]) in self.em.store.workers:
                raise ControlError(409, f"workers[{i}]: worker {x['workerId']} already exists")
            plan.append((x, state, lc, mrt))
        now = utcnow()
        made = []
        for x, state, lc, mrt in plan:
            w = self.em.sim.spawn(pool, lc, state, now, worker_group=x.get("workerGroup"),
                                  worker_id=x.get("workerId"), capacity=x.get("capacity"))
            if mrt is not None:
                self._busy(w, mrt)
            made.append(self._worker_view(w))
        return {"workers": made}

    def _busy(self, w, max_run_time: int):
        """A task in the worker's pool, claimed by this worker at once."""
        sim = self.em.sim
        task_id = slugid_from(f"busy/{w.worker_pool_id}/{w.worker_group}/{w.worker_id}/{sim.now}")
        now = utcnow()
        body = {"taskQueueId": w.worker_pool_id, "created": iso(now), "deadline": iso(now + dt.timedelta(days=1)),
                "metadata": {"name": f"busy {w.worker_id}", "description": "keeps a simulated worker busy",
                             "owner": "tc-emulator@example.invalid", "source": "https://tc-emulator.invalid/"},
                "payload": {"maxRunTime": max_run_time}}
        try:
            self.em.api.create_task_as(task_id, body, ["*"], "tc-emulator")
        except QueueError as e:
            raise ControlError(400, f"could not create the task that keeps {w.worker_id} busy: {e.message}")
        sim._claim(self.em.store.tasks[task_id], w, sim._image_of(w))

    def time_scale(self, body):
        v = body.get("timeScale")
        if set(body) != {"timeScale"} or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ControlError(400, "the body must be {\"timeScale\": N}: real seconds per simulated second, "
                                    "N >= 0 (0 freezes the clock)")
        self.em.sim.set_time_scale(v)
        return self.em.sim.view()

    def advance(self, body):
        v = body.get("seconds")
        if set(body) != {"seconds"} or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ControlError(400, "the body must be {\"seconds\": N}, N >= 0 simulated seconds")
        self.em.sim.tick()
        self.em.sim.run_until(self.em.sim.now + v)
        return self.em.sim.view()

    def task_outcome(self, body):
        unknown = set(body) - {"taskId", "outcome", "reason"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}; allowed: taskId, outcome, reason")
        task = self.em.store.tasks.get(body.get("taskId"))
        if task is None:
            raise ControlError(404, f"no task {body.get('taskId')!r}")
        outcome, reason = body.get("outcome"), body.get("reason")
        if outcome in ("completed", "failed"):
            if reason is not None:
                raise ControlError(400, "reason goes only with outcome exception")
            forced = (outcome, outcome)
        elif outcome == "exception":
            reason = reason or "malformed-payload"
            if reason not in EXCEPTION_REASONS:
                raise ControlError(400, f"reason must be one of {', '.join(EXCEPTION_REASONS)}")
            forced = ("exception", reason)
        else:
            raise ControlError(400, "outcome must be completed, failed or exception")
        if task.state() in ("completed", "failed", "exception"):
            raise ControlError(409, f"task {task.task_id} is already resolved ({task.state()})")
        task.forced_outcome = forced
        return {"taskId": task.task_id, "outcome": forced[0], "reason": forced[1]}

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
