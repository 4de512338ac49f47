"""Simulated workers, provisioning and task execution.

worker-manager's side: workers per launch config in the states the service uses (requested,
running, stopping, stopped), started by a provisioner loop on the pool's current launch configs
(up to minCapacity, and up to maxCapacity while tasks are pending), retired when their launch
config is archived (generic-worker notices at its next `checkForNewDeploymentEverySecs` check and
exits once idle), removed by `removeWorker`. The queue's side: an idle running worker of the pool
claims a pending task after a short delay, runs it for its `payload.maxRunTime` and resolves it.

Everything runs on a simulated clock: simulated seconds pass `1 / timeScale` times faster than
real ones (timeScale 0.001: an hour in 3.6 s; 0: frozen, only `POST /_emulator/advance` moves it).
Nothing is random: worker ids are derived from a counter, choices are made in a fixed order.
Documented in sandbox/TASKCLUSTER.md ("Simulated workers and tasks").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass

from .queue import CLAIM_TIMEOUT_SECS, PRIORITY_LEVELS, QueueError, slugid_from
from .store import NULL_PROVIDER, iso, utcnow

DEFAULTS = {
    "timeScale": 0.001,  # real seconds per simulated second
    "tickMs": 20,  # how often the clock thread advances the simulation (real milliseconds)
    "bootSecs": 60,  # requested -> running (instance boot, worker registration, first claimWork)
    "claimDelaySecs": 5,  # a pending run can be claimed this long after it was scheduled
    "stopSecs": 30,  # stopping -> stopped (instance shutting down)
    "checkForNewDeploymentEverySecs": 1800,  # generic-worker's default, when the launch config sets none
    "expireWorkerPoolsEverySecs": 600,  # how often deleted pools without workers are removed
    "defaultMaxRunTime": None,  # None: a task without payload.maxRunTime is malformed, as for generic-worker
    "ec2Url": None,  # the EC2 sandbox: images are checked there (state, sandbox:task-outcome tag)
}
OUTCOME_TAG = "sandbox:task-outcome"
CHILDREN_ENV = "TC_AMI_SANDBOX_CHILDREN"
WORKER_LIFETIME = dt.timedelta(weeks=1)  # aws provider: a worker row expires a week after it was requested
STATES = ("requested", "running", "stopping", "stopped")
EXCEPTION_REASONS = ("malformed-payload", "resource-unavailable", "internal-error", "superseded",
                     "intermittent-task", "worker-shutdown")
RETRY_REASONS = {"worker-shutdown": "retry", "intermittent-task": "task-retry"}  # api.js reportException


class SimError(Exception):
    pass


def validate_config(cfg: dict, where: str) -> dict:
    out = dict(DEFAULTS)
    for k, v in (cfg or {}).items():
        if k not in DEFAULTS:
            raise SimError(f"{where}: unknown key {k!r} (allowed: {', '.join(sorted(DEFAULTS))})")
        if k == "ec2Url":
            if v is not None and (not isinstance(v, str) or not v.startswith(("http://", "https://"))):
                raise SimError(f"{where}.ec2Url must be an http(s) URL such as http://127.0.0.1:41234")
        elif k == "defaultMaxRunTime":
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise SimError(f"{where}.defaultMaxRunTime must be null or a positive integer (seconds)")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k == "tickMs" and v < 1):
            raise SimError(f"{where}.{k} must be a non-negative number" + (" (at least 1)" if k == "tickMs" else ""))
        out[k] = v
    return out


@dataclass
class Worker:
    """A worker-manager worker row, plus what the simulation needs to drive it."""
    worker_pool_id: str
    worker_group: str
    worker_id: str
    provider_id: str
    launch_config_id: str | None
    capacity: int
    state: str
    created: dt.datetime
    expires: dt.datetime
    last_modified: dt.datetime
    last_checked: dt.datetime
    image_id: str | None = None
    boot_at: float | None = None
    check_every: float = 1800.0
    next_check: float | None = None
    idle_timeout: float | None = None
    idle_since: float = 0.0
    draining: bool = False  # noticed that its launch config is gone: exits when idle
    task: tuple | None = None  # (taskId, runId) being run
    stop_at: float | None = None

    @property
    def key(self):
        return (self.worker_pool_id, self.worker_group, self.worker_id)

    def view(self) -> dict:
        """Worker.serializable({removeQueueData: true}) (worker-full.json)."""
        out = {
            "workerPoolId": self.worker_pool_id, "workerGroup": self.worker_group, "workerId": self.worker_id,
            "providerId": self.provider_id, "created": iso(self.created), "expires": iso(self.expires),
            "lastModified": iso(self.last_modified), "lastChecked": iso(self.last_checked),
            "capacity": self.capacity, "state": self.state,
        }
        if self.launch_config_id is not None:
            out["launchConfigId"] = self.launch_config_id
        return out

    def set_state(self, state: str, now: dt.datetime):
        if state != self.state:
            self.state = state
            self.last_modified = now
        self.last_checked = now


class ImageChecker:
    """Which images are usable and which outcome their tasks get: from the EC2 sandbox when its URL
    is configured (DescribeImages in the launch config's region: the image must exist and be
    `available`; its tag `sandbox:task-outcome` = failed makes tasks fail), else every image is
    usable and tasks complete. Answers are cached for a second."""

    TTL = 1.0

    def __init__(self, ec2_url: str | None, log):
        self.url, self.log = ec2_url, log
        self.cache: dict = {}
        self._clients: dict = {}
        self._warned = 0.0

    def lookup(self, region: str, image_id) -> dict:
        if not self.url:
            return {"usable": True, "state": None, "outcome": None}
        if not isinstance(image_id, str) or not image_id:
            return {"usable": False, "state": "missing", "outcome": None}
        key = (region, image_id)
        hit = self.cache.get(key)
        if hit and time.monotonic() - hit[0] < self.TTL:
            return hit[1]
        info = self._describe(region, image_id)
        self.cache[key] = (time.monotonic(), info)
        return info

    def _client(self, region):
        if region not in self._clients:
            import boto3  # only when an EC2 sandbox is configured
            from botocore.config import Config
            self._clients[region] = boto3.client(
                "ec2", region_name=region, endpoint_url=self.url, aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        return self._clients[region]

    def _describe(self, region, image_id) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            images = self._client(region).describe_images(ImageIds=[image_id]).get("Images", [])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
                return {"usable": False, "state": "missing", "outcome": None}
            return self._unreachable(f"{e}")
        except (BotoCoreError, ValueError) as e:
            return self._unreachable(f"{e}")
        if not images:
            return {"usable": False, "state": "missing", "outcome": None}
        img = images[0]
        tags = {t.get("Key"): t.get("Value") for t in img.get("Tags", [])}
        return {"usable": img.get("State") == "available", "state": img.get("State"),
                "outcome": tags.get(OUTCOME_TAG)}

    def _unreachable(self, why: str) -> dict:
        if time.monotonic() - self._warned > 60:
            self._warned = time.monotonic()
            self.log.warning("EC2 sandbox at %s did not answer DescribeImages (%s); images count as unusable",
                             self.url, why)
        return {"usable": False, "state": "unknown", "outcome": None}


class Simulator:
    """Drives workers and tasks on a simulated clock. Every method runs with the emulator lock held."""

    def __init__(self, emulator, cfg: dict):
        self.em = emulator
        self.cfg = dict(cfg)
        self.now = 0.0
        self._last_real = time.monotonic()
        self.images = ImageChecker(self.cfg.get("ec2Url"), emulator.log)
        self._ids = itertools.count(1)
        self.next_pool_expiry = float(self.cfg["expireWorkerPoolsEverySecs"])

    @property
    def store(self):
        return self.em.store

    @property
    def queue(self):
        return self.em.queue

    def view(self) -> dict:
        return {"now": round(self.now, 3), **self.cfg}

    def set_time_scale(self, scale):
        self.tick()  # account for the time that passed at the old scale
        self.cfg["timeScale"] = scale

    # ------------------------------------------------------------------ clock

    def tick(self):
        """Advance the simulated clock by the real time elapsed since the last tick."""
        real = time.monotonic()
        elapsed, self._last_real = real - self._last_real, real
        scale = self.cfg["timeScale"]
        self.run_until(self.now + elapsed / scale if scale > 0 else self.now)

    def run_until(self, target: float):
        """Process every event up to `target`, in time order."""
        for _ in range(100_000):
            self.step()
            nxt = self.next_event()
            if nxt is None or nxt > target:
                break
            self.now = nxt
        self.now = max(self.now, target)
        self.step()

    def next_event(self) -> float | None:
        times = [self.next_pool_expiry]
        for w in self.store.workers.values():
            if w.state == "requested" and w.boot_at is not None:
                times.append(w.boot_at)
            elif w.state == "running":
                if not w.draining and w.next_check is not None:
                    times.append(w.next_check)
                if w.task is None and w.idle_timeout is not None:
                    times.append(w.idle_since + w.idle_timeout)
            elif w.state == "stopping" and w.stop_at is not None:
                times.append(w.stop_at)
        for t in self.store.tasks.values():
            if t.runs:
                r = t.runs[-1]
                if r.state == "pending":
                    times.append(r.claimable_at)
                elif r.state == "running":
                    times.extend(x for x in (r.finish_at, r.claim_expires_at) if x is not None)
        later = [x for x in times if x > self.now]
        return min(later) if later else None

    # ------------------------------------------------------------------ one step at self.now

    def step(self):
        self._deadlines()
        self._runs()
        self._workers()
        self._claims()
        self._provision()
        self._pools()

    def _deadlines(self):
        now = utcnow()
        for t in list(self.store.tasks.values()):
            if t.state() in ("unscheduled", "pending", "running") and t.deadline <= now:
                self.queue.resolve_at_deadline(t)

    def _runs(self):
        for t in list(self.store.tasks.values()):
            if not t.runs or t.runs[-1].state != "running":
                continue
            r = t.runs[-1]
            if r.claim_expires_at is not None and r.claim_expires_at <= self.now:
                r.claim_expires_at = None
                self.queue.resolve(t, "exception", "claim-expired", "retry")  # claimresolver
            elif r.finish_at is not None and r.finish_at <= self.now:
                state, reason = t.forced_outcome or r.outcome or ("completed", "completed")
                self.queue.resolve(t, state, reason, RETRY_REASONS.get(reason) if state == "exception" else None)

    def _workers(self):
        now = utcnow()
        for w in sorted(self.store.workers.values(), key=lambda w: w.key):
            if w.state == "requested" and w.boot_at is not None and w.boot_at <= self.now:
                self._start(w, now)
            if w.state == "running":
                while not w.draining and w.next_check is not None and w.next_check <= self.now:
                    w.next_check += w.check_every
                    w.last_checked = now
                    if not self._launch_config_current(w):
                        w.draining = True
                idle_out = w.idle_timeout is not None and w.idle_since + w.idle_timeout <= self.now
                if w.task is None and (w.draining or idle_out):
                    self.stop(w, now)  # generic-worker exits; the instance shuts down
            if w.state == "stopping" and w.stop_at is not None and w.stop_at <= self.now:
                w.stop_at = None
                w.set_state("stopped", now)

    def _start(self, w: Worker, now):
        w.set_state("running", now)
        w.boot_at = None
        w.idle_since = self.now
        w.next_check = self.now + w.check_every
        self.queue.queue_worker_seen(w.worker_pool_id, w.worker_group, w.worker_id)  # its first claimWork

    def stop(self, w: Worker, now, orphan_task: bool = False):
        """running/requested -> stopping. A task it was running is left to the queue's claim expiry."""
        if w.task is not None and orphan_task:
            task = self.store.tasks.get(w.task[0])
            if task is not None and task.runs and task.runs[-1].state == "running":
                run = task.runs[-1]
                run.finish_at = None
                run.claim_expires_at = self.now + CLAIM_TIMEOUT_SECS
            w.task = None
        w.set_state("stopping", now)
        w.boot_at = None
        w.stop_at = self.now + self.cfg["stopSecs"]

    def _launch_config_current(self, w: Worker) -> bool:
        pool = self.store.pools.get(w.worker_pool_id)
        if pool is None or pool.provider_id != w.provider_id:
            return False
        return any(lc.launch_config_id == w.launch_config_id and not lc.is_archived for lc in pool.launch_configs)

    # ------------------------------------------------------------------ claiming and running tasks

    def _claims(self):
        pending = [t for t in self.store.tasks.values() if t.runs and t.runs[-1].state == "pending"
                   and t.runs[-1].claimable_at <= self.now]
        pending.sort(key=lambda t: (PRIORITY_LEVELS.index(t.definition["priority"]), t.runs[-1].scheduled,
                                    t.task_id))
        for t in pending:
            tq = t.definition["taskQueueId"]
            for w in sorted(self.store.workers.values(), key=lambda w: (w.created, w.key)):
                if w.worker_pool_id != tq or w.state != "running" or w.draining or w.task is not None:
                    continue
                self._claim(t, w, self._image_of(w))  # a running instance works whatever became of its image
                break

    def _image_of(self, w: Worker) -> dict:
        region = w.worker_group
        return self.images.lookup(region, w.image_id) if w.image_id is not None else {
            "usable": True, "state": None, "outcome": None}

    def _claim(self, task, w: Worker, image: dict):
        now = utcnow()
        run = task.runs[-1]
        run_id = len(task.runs) - 1
        run.state, run.worker_group, run.worker_id = "running", w.worker_group, w.worker_id
        run.started, run.taken_until = now, now + dt.timedelta(seconds=CLAIM_TIMEOUT_SECS)
        w.task = (task.task_id, run_id)
        qw = self.queue.queue_worker_seen(w.worker_pool_id, w.worker_group, w.worker_id)
        qw.task_seen(task.task_id, run_id)
        payload = task.definition["payload"]
        max_run_time = payload.get("maxRunTime") if isinstance(payload, dict) else None
        if max_run_time is None:
            max_run_time = self.cfg["defaultMaxRunTime"]
        if not isinstance(max_run_time, int) or isinstance(max_run_time, bool) or not 1 <= max_run_time <= 86400:
            task.log.append(f"run {run_id}: payload.maxRunTime must be an integer from 1 to 86400 "
                            "(generic-worker refuses the payload)")
            run.outcome = ("exception", "malformed-payload")
            run.finish_at = self.now
            return
        outcome = ("completed", "completed")
        if image.get("outcome") == "failed":
            outcome = ("failed", "failed")
            task.log.append(f"run {run_id}: image {w.image_id} carries {OUTCOME_TAG}=failed")
        if not self._create_children(task, run_id):
            outcome = ("failed", "failed")
        run.outcome = outcome
        run.finish_at = self.now + max_run_time

    def _create_children(self, task, run_id: int) -> bool:
        """A decision task: payload.env.TC_AMI_SANDBOX_CHILDREN is a JSON list of task definitions,
        created in the parent's task group with the parent's scopes as credentials."""
        env = task.definition["payload"].get("env") if isinstance(task.definition["payload"], dict) else None
        raw = env.get(CHILDREN_ENV) if isinstance(env, dict) else None
        if raw is None:
            return True
        try:
            children = json.loads(raw) if isinstance(raw, str) else None
        except ValueError as e:
            children = None
            task.log.append(f"run {run_id}: {CHILDREN_ENV} is not JSON: {e}")
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            task.log.append(f"run {run_id}: {CHILDREN_ENV} must be a JSON list of task definitions")
            return False
        ok = True
        d = task.definition
        for i, child in enumerate(children):
            child = dict(child)
            child_id = child.pop("taskId", None) or slugid_from(f"{task.task_id}/{run_id}/{i}")
            body = {
                "schedulerId": d["schedulerId"], "projectId": d["projectId"],
                "created": iso(utcnow()), "deadline": d["deadline"], "expires": d["expires"],
                "metadata": {**d["metadata"], "name": f"{d['metadata'].get('name', '')} / child {i}"},
                "payload": {"maxRunTime": 60},
                **({} if any(k in child for k in ("taskQueueId", "provisionerId", "workerType"))
                   else {"taskQueueId": d["taskQueueId"]}),
                **child,
                "taskGroupId": d["taskGroupId"],
            }
            try:
                self.em.api.create_task_as(child_id, body, d["scopes"], f"task-client/{task.task_id}/{run_id}")
                task.log.append(f"run {run_id}: created child {child_id}")
            except QueueError as e:
                ok = False
                task.log.append(f"run {run_id}: child {i} ({child_id}) refused: {e.code}: {e.message}")
        return ok

    # ------------------------------------------------------------------ provisioning

    def _provision(self):
        now = utcnow()
        for pool in self.store.sorted_pools():
            provider = self.store.providers.get(pool.provider_id)
            if pool.provider_id == NULL_PROVIDER or provider is None or provider.get("providerType") != "aws" \
                    or provider.get("setup", "ok") != "ok":
                continue
            active = [lc for lc in pool.launch_configs if not lc.is_archived]
            if not active:
                continue
            workers = [w for w in self.store.workers.values() if w.worker_pool_id == pool.worker_pool_id]
            live = [w for w in workers if w.state in ("requested", "running")]
            live_cap = sum(w.capacity for w in live)
            available = sum(w.capacity for w in live if not w.draining and w.task is None)
            pending = sum(1 for t in self.store.tasks.values() if t.definition["taskQueueId"] == pool.worker_pool_id
                          and t.runs and t.runs[-1].state == "pending")
            cfg = pool.config
            min_cap, max_cap = int(cfg.get("minCapacity", 0) or 0), int(cfg.get("maxCapacity", 0) or 0)
            want = min(max(min_cap - live_cap, pending - available), max_cap - live_cap)
            while want > 0:
                lc = self._choose_launch_config(pool, active, live)
                if lc is None:
                    break
                w = self.spawn(pool, lc, "requested", now)
                live.append(w)
                want -= w.capacity

    def _choose_launch_config(self, pool, active, live):
        best = None
        for lc in active:
            conf = lc.configuration if isinstance(lc.configuration, dict) else {}
            wm = conf.get("workerManager") if isinstance(conf.get("workerManager"), dict) else {}
            on_lc = sum(w.capacity for w in live if w.launch_config_id == lc.launch_config_id)
            if isinstance(wm.get("maxCapacity"), int) and on_lc >= wm["maxCapacity"]:
                continue
            image = self.images.lookup(conf.get("region", ""), (conf.get("launchConfig") or {}).get("ImageId"))
            if not image["usable"]:
                continue
            if best is None or on_lc < best[0]:
                best = (on_lc, lc)
        return best[1] if best else None

    def spawn(self, pool, lc, state: str, now, worker_group=None, worker_id=None, capacity=None) -> Worker:
        conf = lc.configuration if isinstance(lc.configuration, dict) else {}
        wm = conf.get("workerManager") if isinstance(conf.get("workerManager"), dict) else {}
        gw = (((conf.get("workerConfig") or {}).get("genericWorker") or {}).get("config") or {}) \
            if isinstance(conf.get("workerConfig"), dict) else {}
        n = next(self._ids)
        if worker_id is None:
            worker_id = "i-" + hashlib.sha256(f"{pool.worker_pool_id}/{n}".encode()).hexdigest()[:17]
        if capacity is None:
            capacity = wm.get("capacityPerInstance", conf.get("capacityPerInstance", 1))
            capacity = capacity if isinstance(capacity, int) and capacity >= 1 else 1
        check = gw.get("checkForNewDeploymentEverySecs")
        idle = gw.get("idleTimeoutSecs")
        w = Worker(
            worker_pool_id=pool.worker_pool_id, worker_group=worker_group or conf.get("region") or "unknown",
            worker_id=worker_id, provider_id=pool.provider_id, launch_config_id=lc.launch_config_id,
            capacity=capacity, state="requested", created=now, expires=now + WORKER_LIFETIME,
            last_modified=now, last_checked=now,
            image_id=(conf.get("launchConfig") or {}).get("ImageId"),
            boot_at=self.now + self.cfg["bootSecs"],
            check_every=float(check) if isinstance(check, (int, float)) and check > 0
            else float(self.cfg["checkForNewDeploymentEverySecs"]),
            idle_timeout=float(idle) if isinstance(idle, (int, float)) and idle > 0 else None,
        )
        self.store.workers[w.key] = w
        if state in ("running", "stopping", "stopped"):
            self._start(w, now)
        if state in ("stopping", "stopped"):
            self.stop(w, now)
        if state == "stopped":
            w.stop_at = None
            w.set_state("stopped", now)
        return w

    # ------------------------------------------------------------------ deleted pools

    def _pools(self):
        for pool in list(self.store.pools.values()):
            # the provisioner loop: a previous provider with no live worker in the pool is dropped
            live = {w.provider_id for w in self.store.workers.values()
                    if w.worker_pool_id == pool.worker_pool_id and w.state != "stopped"}
            pool.previous_provider_ids = [p for p in pool.previous_provider_ids if p in live]
        if self.now >= self.next_pool_expiry:
            every = max(float(self.cfg["expireWorkerPoolsEverySecs"]), 1e-3)
            while self.next_pool_expiry <= self.now:
                self.next_pool_expiry += every
            self.expire_pools()

    def expire_pools(self) -> list:
        """expire_worker_pools: null-provider pools whose previous providers are all gone."""
        gone = [k for k, p in self.store.pools.items()
                if p.provider_id == NULL_PROVIDER and not p.previous_provider_ids]
        for k in gone:
            del self.store.pools[k]
        return gone


class Clock(threading.Thread):
    """Advances the simulation every `tickMs` real milliseconds."""

    def __init__(self, emulator):
        super().__init__(name="simulation", daemon=True)
        self.em = emulator
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.em.sim.cfg["tickMs"] / 1000):
            try:
                with self.em.lock:
                    self.em.sim.tick()
            except Exception:  # keep the clock alive; the error is in the log
                self.em.log.exception("simulation step failed")
