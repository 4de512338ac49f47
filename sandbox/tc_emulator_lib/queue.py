"""The Queue: tasks, runs, task groups and the queue's worker records, as services/queue keeps them.

Sources (taskcluster/taskcluster): services/queue/src/api.js (createTask, task, status,
listTaskGroup, cancelTask, listWorkers, getWorker: checks, their order and their messages),
data.js (Task.definition/status key order, idempotency by comparing every field but the status
fields), dependencytracker.js (dependencies), workerinfo.js (worker records: firstClaim, expires
one day after being seen, the 20 most recent tasks). Runs and states follow the database
functions' documented behaviour (schedule_task, cancel_task, resolve_task, claim expiry).

`Queue.create_task` is the whole createTask handler minus HTTP: the API, decision tasks' children
and (later) hooks' triggerHook call it with their own authorizer.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import base64
from dataclasses import dataclass, field

from .jsjson import jsonb_equal
from .store import iso, parse_date, utcnow

PRIORITY_LEVELS = ["highest", "very-high", "high", "medium", "low", "very-low", "lowest"]
MAX_DRIFT = dt.timedelta(minutes=15)
MAX_DEADLINE = dt.timedelta(days=5)
CLAIM_TIMEOUT_SECS = 1200  # the queue's default claimTimeout
RECENT_TASKS_LIMIT = 20  # workerinfo.js
QUEUE_WORKER_LIFETIME = dt.timedelta(days=1)  # workerinfo.js: a worker record expires a day after it was seen
# definition fields compared for createTask's idempotency (data.js Task.equals omits the status fields)
DEFINITION_FIELDS = ("taskQueueId", "schedulerId", "projectId", "taskGroupId", "dependencies", "requires", "routes",
                     "priority", "retries", "created", "deadline", "expires", "scopes", "payload", "metadata",
                     "tags", "extra")


class QueueError(Exception):
    """An error the queue reports with res.reportError(code, message, details)."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


def split_task_queue_id(task_queue_id: str) -> tuple[str, str]:
    p, _, w = task_queue_id.partition("/")
    return p, w


def slugid_from(seed: str) -> str:
    """A 'nice' slugid (v4 UUID, first bit clear) derived from `seed`: deterministic ids for the
    simulation's own tasks."""
    b = bytearray(hashlib.sha256(seed.encode("utf-8")).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    b[0] &= 0x7F  # slugid.nice(): never starts with '-'
    return base64.urlsafe_b64encode(bytes(b)).decode("ascii").rstrip("=")


@dataclass
class Run:
    state: str
    reason_created: str
    scheduled: dt.datetime
    reason_resolved: str | None = None
    worker_group: str | None = None
    worker_id: str | None = None
    taken_until: dt.datetime | None = None
    started: dt.datetime | None = None
    resolved: dt.datetime | None = None
    # simulation: when (simulated seconds) a worker may claim it, when it finishes, and, for a run
    # whose worker vanished, when its claim expires
    claimable_at: float = 0.0
    finish_at: float | None = None
    outcome: tuple | None = None  # ("completed"|"failed"|"exception", reasonResolved)
    claim_expires_at: float | None = None

    def view(self, run_id: int) -> dict:
        out = {"runId": run_id, "state": self.state, "reasonCreated": self.reason_created}
        if self.reason_resolved is not None:
            out["reasonResolved"] = self.reason_resolved
        if self.worker_group is not None:
            out["workerGroup"] = self.worker_group
            out["workerId"] = self.worker_id
        if self.taken_until is not None:
            out["takenUntil"] = iso(self.taken_until)
        out["scheduled"] = iso(self.scheduled)
        if self.started is not None:
            out["started"] = iso(self.started)
        if self.resolved is not None:
            out["resolved"] = iso(self.resolved)
        return out


@dataclass
class Task:
    task_id: str
    definition: dict  # DEFINITION_FIELDS, dates as Date.toJSON() strings
    retries_left: int
    runs: list = field(default_factory=list)
    blocked_on: set = field(default_factory=set)  # dependencies not yet satisfied
    forced_outcome: tuple | None = None  # set by the control API
    log: list = field(default_factory=list)  # what the simulation did with it (children, errors)

    @property
    def deadline(self) -> dt.datetime:
        return parse_date(self.definition["deadline"])

    @property
    def expires(self) -> dt.datetime:
        return parse_date(self.definition["expires"])

    def state(self) -> str:
        return self.runs[-1].state if self.runs else "unscheduled"

    def definition_view(self) -> dict:
        d = self.definition
        p, w = split_task_queue_id(d["taskQueueId"])
        return {
            "provisionerId": p, "workerType": w, "taskQueueId": d["taskQueueId"], "schedulerId": d["schedulerId"],
            "projectId": d["projectId"], "taskGroupId": d["taskGroupId"],
            "dependencies": copy.deepcopy(d["dependencies"]), "requires": d["requires"],
            "routes": copy.deepcopy(d["routes"]), "priority": d["priority"], "retries": d["retries"],
            "created": d["created"], "deadline": d["deadline"], "expires": d["expires"],
            "scopes": copy.deepcopy(d["scopes"]), "payload": copy.deepcopy(d["payload"]),
            "metadata": copy.deepcopy(d["metadata"]), "tags": copy.deepcopy(d["tags"]),
            "extra": copy.deepcopy(d["extra"]),
        }

    def status(self) -> dict:
        d = self.definition
        p, w = split_task_queue_id(d["taskQueueId"])
        return {
            "taskId": self.task_id, "provisionerId": p, "workerType": w, "taskQueueId": d["taskQueueId"],
            "schedulerId": d["schedulerId"], "projectId": d["projectId"], "taskGroupId": d["taskGroupId"],
            "deadline": d["deadline"], "expires": d["expires"], "retriesLeft": self.retries_left,
            "state": self.state(), "runs": [r.view(i) for i, r in enumerate(self.runs)],
        }


@dataclass
class TaskGroup:
    task_group_id: str
    scheduler_id: str
    expires: dt.datetime

    def view(self) -> dict:
        return {"taskGroupId": self.task_group_id, "schedulerId": self.scheduler_id, "expires": iso(self.expires)}


@dataclass
class QueueWorker:
    """The queue's record of a worker that called claimWork (queue_workers)."""
    task_queue_id: str
    worker_group: str
    worker_id: str
    first_claim: dt.datetime
    last_date_active: dt.datetime
    expires: dt.datetime
    quarantine_until: dt.datetime
    recent_tasks: list = field(default_factory=list)  # [{taskId, runId}], oldest first

    def seen(self, now: dt.datetime):
        self.last_date_active = now
        self.expires = max(self.expires, now + QUEUE_WORKER_LIFETIME)

    def task_seen(self, task_id: str, run_id: int):
        self.recent_tasks = (self.recent_tasks + [{"taskId": task_id, "runId": run_id}])[-RECENT_TASKS_LIMIT:]


def _to_json_date(s: str) -> str:
    return iso(parse_date(s))


class Queue:
    """Task operations on the emulator's store. Callers hold the emulator lock."""

    def __init__(self, emulator):
        self.em = emulator

    @property
    def store(self):
        return self.em.store

    # ------------------------------------------------------------------ createTask

    def create_task(self, task_id: str, body: dict, authorize) -> dict:
        """createTask after input validation (with schema defaults applied): returns the status.
        `authorize(params)` raises when the caller's scopes do not satisfy the template. Like the
        real handler, it patches `body` in place (an error's requestInfo shows the patched body)."""
        task_def = body
        p, w, tq = task_def.get("provisionerId"), task_def.get("workerType"), task_def.get("taskQueueId")
        if p and w and tq:
            if f"{p}/{w}" != tq:
                raise QueueError("InputError", 'taskQueueId must match "provisionerId/workerType"',
                                 {"provisionerId": p, "workerType": w, "taskQueueId": tq})
        elif p and w:
            task_def["taskQueueId"] = f"{p}/{w}"
        elif tq:
            task_def["provisionerId"], task_def["workerType"] = split_task_queue_id(tq)
        else:
            raise QueueError("InputError",
                             'at least a provisionerId and a workerType or a taskQueueId must be provided"', {})
        if not task_def.get("projectId"):
            task_def["projectId"] = "none"

        priority = "lowest" if task_def["priority"] == "normal" else task_def["priority"]
        authorize({
            "taskId": task_id,
            "priorities": PRIORITY_LEVELS[:PRIORITY_LEVELS.index(priority) + 1],
            "routes": task_def["routes"], "scopes": task_def["scopes"], "schedulerId": task_def["schedulerId"],
            "projectId": task_def["projectId"], "taskGroupId": task_def.get("taskGroupId") or task_id,
            "provisionerId": task_def["provisionerId"], "workerType": task_def["workerType"],
            "taskQueueId": task_def["taskQueueId"],
        })

        self._patch_and_validate(task_id, task_def)
        if any(s.endswith("**") for s in task_def["scopes"]):
            raise QueueError("InputError", "scopes must not end with `**`", {})

        self._ensure_task_group(task_def)

        definition = {k: copy.deepcopy(task_def[k]) for k in DEFINITION_FIELDS}
        existing = self.store.tasks.get(task_id)
        if existing is not None:
            if not all(jsonb_equal(existing.definition[k], definition[k]) for k in DEFINITION_FIELDS):
                raise QueueError("RequestConflict", "taskId `{{taskId}}` already used by another task.\n"
                                 "This could be the result of faulty idempotency!", {"taskId": task_id})
            task = existing
        else:
            task = Task(task_id, definition, definition["retries"])
            self.store.tasks[task_id] = task

        if not definition["dependencies"]:
            self.schedule(task)
        else:
            self._track_dependencies(task, is_new=existing is None)
        return task.status()

    def _patch_and_validate(self, task_id: str, task_def: dict):
        if not task_def.get("taskGroupId"):
            task_def["taskGroupId"] = task_id
        now = utcnow()
        created, deadline = parse_date(task_def["created"]), parse_date(task_def["deadline"])
        if created < now - MAX_DRIFT:
            raise QueueError("InputError", "`created` cannot be in the past (max 15min drift)",
                             {"created": task_def["created"]})
        if created > now + MAX_DRIFT:
            raise QueueError("InputError", "`created` cannot be in the future (max 15min drift)",
                             {"created": task_def["created"]})
        if created > deadline:
            raise QueueError("InputError", "`deadline` cannot be later than `created`",
                             {"created": task_def["created"], "deadline": task_def["deadline"]})
        if deadline < now:
            raise QueueError("InputError", "`deadline` cannot be in the past", {"deadline": task_def["deadline"]})
        if deadline - now > MAX_DEADLINE + MAX_DRIFT:
            raise QueueError("InputError", "`deadline` cannot be more than 5 days into the future",
                             {"deadline": task_def["deadline"]})
        if not task_def.get("expires"):
            try:
                expires = deadline.replace(year=deadline.year + 1)
            except ValueError:  # 29 February: Date.setFullYear rolls over to 1 March
                expires = deadline.replace(year=deadline.year + 1, month=3, day=1)
            task_def["expires"] = iso(expires)
        if deadline > parse_date(task_def["expires"]):
            raise QueueError("InputError", "`expires` cannot be before `deadline`",
                             {"deadline": task_def["deadline"], "expires": task_def["expires"]})
        for k in ("created", "deadline", "expires"):
            task_def[k] = _to_json_date(task_def[k])
        if task_def["priority"] == "normal":
            task_def["priority"] = "lowest"

    def _ensure_task_group(self, task_def: dict):
        tgid, sched = task_def["taskGroupId"], task_def["schedulerId"]
        expires = parse_date(task_def["expires"])
        group = self.store.task_groups.get(tgid)
        if group is None:
            self.store.task_groups[tgid] = TaskGroup(tgid, sched, expires)
        elif group.scheduler_id != sched:
            raise QueueError("RequestConflict", "Task group `{{taskGroupId}}` contains tasks with a schedulerId other\n"
                             "than `{{schedulerId}}`. All tasks in the same task-group must have\n"
                             "the same schedulerId.", {"taskGroupId": tgid, "schedulerId": sched})
        else:
            group.expires = max(group.expires, expires)

    def _track_dependencies(self, task: Task, is_new: bool):
        deps = task.definition["dependencies"]
        missing = [d for d in deps if d not in self.store.tasks]
        expiring = [] if missing else [d for d in deps if task.deadline > self.store.tasks[d].expires]
        if missing or expiring:
            msg = ""
            if missing:
                msg += "`task.dependencies` references non-existing tasks: \n"
                msg += "\n".join(" * " + t for t in missing) + "\n"
                msg += "All taskIds in `task.dependencies` **must** exist\nbefore the task is created.\n"
            if expiring:
                msg += "`task.dependencies` references tasks that expires\n"
                msg += "before `task.deadline` this is not allowed, see tasks: \n"
                msg += "\n".join(" * " + t + "," for t in expiring) + "\n"
                msg += "All taskIds in `task.dependencies` **must** have\n"
                msg += "`task.expires` greater than the `deadline` for this task.\n"
            self.store.tasks.pop(task.task_id, None)  # remove_task
            raise QueueError("InputError", msg, {"dependencies": deps, "missingTaskDependencies": missing,
                                                 "expiringTaskDependencies": expiring})
        if is_new:
            task.blocked_on = set(deps)
        for d in deps:
            state = self.store.tasks[d].state()
            if state == "completed" or (task.definition["requires"] == "all-resolved" and state in ("exception", "failed")):
                task.blocked_on.discard(d)
        if not task.blocked_on:
            self.schedule(task)

    # ------------------------------------------------------------------ run transitions

    def schedule(self, task: Task, reason: str = "scheduled") -> None:
        """schedule_task: add a pending first run unless the task has runs."""
        if task.runs or task.deadline < utcnow():
            return
        task.runs.append(self._pending_run(reason))

    def _pending_run(self, reason: str) -> Run:
        sim = self.em.sim
        return Run("pending", reason, utcnow(), claimable_at=sim.now + sim.cfg["claimDelaySecs"])

    def cancel(self, task: Task) -> None:
        """cancel_task: resolve the current run (or a new one) as exception/canceled."""
        now = utcnow()
        if not task.runs:
            task.runs.append(Run("exception", "exception", now, reason_resolved="canceled", resolved=now))
        else:
            run = task.runs[-1]
            if run.state not in ("pending", "running"):
                return
            self._release_worker(task, run)
            run.state, run.reason_resolved, run.resolved = "exception", "canceled", now
        self.resolved(task, "exception")

    def resolve(self, task: Task, state: str, reason: str, retry_reason: str | None = None) -> None:
        """resolve_task for the current run; an exception with a retry reason adds a new pending run
        while retries are left."""
        run = task.runs[-1]
        now = utcnow()
        self._release_worker(task, run)
        run.state, run.reason_resolved, run.resolved = state, reason, now
        if state == "exception" and retry_reason and task.retries_left > 0:
            task.retries_left -= 1
            task.runs.append(self._pending_run(retry_reason))
            return
        self.resolved(task, state)

    def _release_worker(self, task: Task, run: Run):
        if run.worker_id is None:
            return
        w = self.store.workers.get((task.definition["taskQueueId"], run.worker_group, run.worker_id))
        run_id = next(i for i, r in enumerate(task.runs) if r is run)
        if w is not None and w.task == (task.task_id, run_id):
            w.task = None
            w.idle_since = self.em.sim.now

    def resolved(self, task: Task, resolution: str) -> None:
        """dependencyTracker.resolveTask: unblock the tasks that depend on this one."""
        for dep in self.store.tasks.values():
            if task.task_id in dep.blocked_on:
                if resolution != "completed" and dep.definition["requires"] != "all-resolved":
                    continue
                dep.blocked_on.discard(task.task_id)
                if not dep.blocked_on:
                    self.schedule(dep)

    def resolve_at_deadline(self, task: Task) -> None:
        now = utcnow()
        if not task.runs:
            task.runs.append(Run("exception", "exception", now, reason_resolved="deadline-exceeded", resolved=now))
        elif task.runs[-1].state in ("pending", "running"):
            run = task.runs[-1]
            self._release_worker(task, run)
            run.state, run.reason_resolved, run.resolved = "exception", "deadline-exceeded", now
        else:
            return
        self.resolved(task, "exception")

    # ------------------------------------------------------------------ queries

    def group_tasks(self, task_group_id: str) -> list:
        return sorted((t for t in self.store.tasks.values() if t.definition["taskGroupId"] == task_group_id),
                      key=lambda t: t.task_id)

    def queue_worker_seen(self, task_queue_id: str, worker_group: str, worker_id: str) -> QueueWorker:
        key = (task_queue_id, worker_group, worker_id)
        now = utcnow()
        qw = self.store.queue_workers.get(key)
        if qw is None:
            qw = QueueWorker(task_queue_id, worker_group, worker_id, first_claim=now, last_date_active=now,
                             expires=now + QUEUE_WORKER_LIFETIME, quarantine_until=now)
            self.store.queue_workers[key] = qw
        else:
            qw.seen(now)
        return qw
