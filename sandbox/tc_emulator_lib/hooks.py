"""The Hooks service: hook definitions, their last fires, and triggerHook creating tasks in the queue.

Sources (taskcluster/taskcluster): services/hooks/src/api.js (the handlers: checks, their order,
messages and replies; triggerHookCommon's error mapping), taskcreator.js (the JSON-e context
`{now, taskId, firedBy, payload, clientId}`, the defaults for `created`/`deadline`/`expires`/
`taskGroupId`, the queue call with `authorizedScopes: ['assume:hook-id:<group>/<id>']`, the
LastFire rows), utils.js (the definition's key order), nextdate.js (via cron.py),
trigger-schema.js / api.js (ajv 8 with ajv-formats for triggerSchema).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field

import jsone
import slugid

from . import cron
from .jsjson import jsonb_equal, jsonb_order, stringify
from .queue import QueueError
from .store import iso, utcnow
from .validation import AdhocSchema, meta_schema_errors, strict_mode_error

HOOKS_CLIENT_ID = "static/taskcluster/hooks"  # the hooks service's static client on a deployment
LAST_FIRE_ERROR_LIMIT = 256 * 1024 // 2  # taskcreator.js truncates the stored error text


def nice_slugid() -> str:
    """taskcluster.slugid() (clients/client/src/utils.js): slugid.nice()."""
    return slugid.nice()


def js_falsy(v) -> bool:
    return v is None or v is False or v == "" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0)


@dataclass
class Hook:
    hook_group_id: str
    hook_id: str
    metadata: dict
    task: dict
    bindings: list
    schedule: list
    trigger_schema: dict
    next_scheduled_date: dt.datetime
    last_fires: list = field(default_factory=list)  # dicts: firedBy, taskId, taskCreateTime, result, error

    def definition(self) -> dict:
        """utils.js hookUtils.definition, the jsonb columns in PostgreSQL's key order."""
        return {"hookId": self.hook_id, "hookGroupId": self.hook_group_id, "bindings": jsonb_order(self.bindings),
                "metadata": jsonb_order(self.metadata), "task": jsonb_order(self.task),
                "schedule": list(self.schedule), "triggerSchema": jsonb_order(self.trigger_schema)}


def hook_key(group: str, hook_id: str) -> tuple[str, str]:
    return (group, hook_id)


class HooksError(Exception):
    """res.reportError(code, message, details) in a hooks handler."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


def _schedule_errors(schedule) -> None:
    for element in schedule:
        try:
            cron.parse(element)
        except cron.CronError as e:
            raise HooksError("InputError", "{{message}} in {{schedElement}}", {"message": str(e), "schedElement": element})


def _trigger_schema_errors(trigger_schema) -> None:
    errors = meta_schema_errors(trigger_schema)
    if errors:
        # api.js prints ajv 6's `dataPath`, which ajv 8 errors no longer have
        lines = [" * Property " + "undefined" + " " + msg for _path, msg in errors]
        raise HooksError("InputError", "{{message}}",
                         {"message": "triggerSchema is not a valid JSON schema:\n" + "\n".join(lines)})


def _check_ids(ctx) -> tuple[str, str]:
    group, hook_id, body = ctx.params["hookGroupId"], ctx.params["hookId"], ctx.body
    if body.get("hookGroupId") and body["hookGroupId"] != group:
        raise HooksError("InputError", "Hook Group Ids do not match")
    if body.get("hookId") and body["hookId"] != hook_id:
        raise HooksError("InputError", "Hook Ids do not match")
    body["hookGroupId"] = group  # the handler sets them on req.body (error bodies show them)
    body["hookId"] = hook_id
    return group, hook_id


class HooksService:
    """The handlers; `api` is the emulator's Api (store, queue, createTask)."""

    def __init__(self, api):
        self.api = api

    @property
    def store(self):
        return self.api.em.store

    def handlers(self) -> dict:
        return {
            "listHookGroups": self.list_hook_groups, "listHooks": self.list_hooks, "hook": self.hook,
            "getHookStatus": self.get_hook_status, "createHook": self.create_hook, "updateHook": self.update_hook,
            "removeHook": self.remove_hook, "triggerHook": self.trigger_hook,
        }

    def _hook_or_404(self, ctx) -> Hook:
        hook = self.store.hooks.get(hook_key(ctx.params["hookGroupId"], ctx.params["hookId"]))
        if hook is None:
            raise HooksError("ResourceNotFound", "No such hook")
        return hook

    # ------------------------------------------------------------------ reads

    def list_hook_groups(self, ctx):
        return {"groups": sorted({g for g, _h in self.store.hooks})}

    def list_hooks(self, ctx):
        group = ctx.params["hookGroupId"]
        hooks = [self.store.hooks[k].definition() for k in sorted(self.store.hooks) if k[0] == group]
        if not hooks:
            raise HooksError("ResourceNotFound", "No such group")
        return {"hooks": hooks}

    def hook(self, ctx):
        return self._hook_or_404(ctx).definition()

    def get_hook_status(self, ctx):
        hook = self._hook_or_404(ctx)
        latest = max(hook.last_fires, key=lambda f: f["taskCreateTime"], default=None)
        if latest is None:
            reply = {"lastFire": {"result": "no-fire"}}
        elif latest["result"] == "success":
            reply = {"lastFire": {"result": "success", "taskId": latest["taskId"], "time": iso(latest["taskCreateTime"])}}
        else:
            try:
                error = json.loads(latest["error"])
            except ValueError:
                error = {"message": latest["error"]}
            reply = {"lastFire": {"result": latest["result"], "error": error, "time": iso(latest["taskCreateTime"])}}
        if hook.schedule:
            reply["nextScheduledDate"] = iso(self._next_scheduled_date(hook))
        return reply

    def _next_scheduled_date(self, hook: Hook) -> dt.datetime:
        """Schedules never fire here; a date that has passed moves on to the next occurrence, as
        the real scheduler's bookkeeping would have moved it."""
        now = utcnow()
        if hook.next_scheduled_date <= now:
            hook.next_scheduled_date = cron.next_date(hook.schedule, now)
        return hook.next_scheduled_date

    # ------------------------------------------------------------------ writes

    def create_hook(self, ctx):
        group, hook_id = _check_ids(ctx)
        hook_def = ctx.body
        schedule = hook_def.get("schedule")
        if not isinstance(schedule, list):  # without schema defaults: `for (... of undefined)` throws
            raise TypeError("hookDef.schedule is not iterable")
        _schedule_errors(schedule)
        _trigger_schema_errors(hook_def.get("triggerSchema"))
        key = hook_key(group, hook_id)
        existing = self.store.hooks.get(key)
        if existing is not None:
            if not jsonb_equal(hook_def, existing.definition()):
                raise HooksError("RequestConflict", "hook `" + group + "/" + hook_id + "` already exists.")
            return hook_def
        self.store.hooks[key] = Hook(
            group, hook_id, copy.deepcopy(hook_def["metadata"]), copy.deepcopy(hook_def["task"]),
            copy.deepcopy(hook_def.get("bindings", [])), list(schedule), copy.deepcopy(hook_def.get("triggerSchema")),
            cron.next_date(schedule, utcnow()))
        return hook_def

    def update_hook(self, ctx):
        group, hook_id = _check_ids(ctx)
        hook_def = ctx.body
        hook = self._hook_or_404(ctx)
        _trigger_schema_errors(hook_def.get("triggerSchema"))
        schedule = hook_def.get("schedule") or []
        _schedule_errors(schedule)
        if hook_def.get("bindings") is None:
            hook_def["bindings"] = hook.bindings
        hook.metadata = copy.deepcopy(hook_def["metadata"])
        hook.bindings = copy.deepcopy(hook_def["bindings"])
        hook.task = copy.deepcopy(hook_def["task"])
        hook.trigger_schema = copy.deepcopy(hook_def.get("triggerSchema"))
        hook.schedule = list(schedule)
        hook.next_scheduled_date = cron.next_date(schedule, utcnow())
        return hook.definition()

    def remove_hook(self, ctx):
        self.store.hooks.pop(hook_key(ctx.params["hookGroupId"], ctx.params["hookId"]), None)
        return {}  # res.status(200).json({}): no output schema

    # ------------------------------------------------------------------ triggerHook

    def trigger_hook(self, ctx):
        hook = self._hook_or_404(ctx)
        client_id = ctx.auth.client_id if ctx.auth is not None and ctx.auth.status == "auth-success" else None
        return self.fire(hook, ctx.body, "triggerHook", client_id)

    def fire(self, hook: Hook, payload, fired_by: str, client_id: str | None) -> dict:
        """triggerHookCommon: validate the payload, render the task, create it in the queue."""
        strict = strict_mode_error(hook.trigger_schema)
        if strict:  # ajv.compile throws: the handler fails with a 500
            raise RuntimeError(strict)
        errors = AdhocSchema(hook.trigger_schema).ajv_errors(payload)
        if errors:
            raise HooksError("InputError", "{{message}}", {"message": "; ".join(errors)})
        context = {"firedBy": fired_by, "payload": payload}
        if client_id:
            context["clientId"] = client_id

        task_id, created = nice_slugid(), utcnow()
        last_fire = {"firedBy": fired_by, "taskId": task_id, "taskCreateTime": utcnow(), "result": "error", "error": ""}
        try:
            task = self.task_for_hook(hook, context, task_id, created)
        except Exception as e:  # taskForHook threw: recorded, then reported as 'While firing hook'
            last_fire["error"] = _error_string(e)
            hook.last_fires.append(last_fire)
            raise HooksError("InputError", "While firing hook:\n\n{{error}}", {"error": _error_string(e)})
        if js_falsy(task):
            return {}  # the template declined to create a task: no LastFire row
        scopes = self.store.expand(sorted({"assume:hook-id:" + hook.hook_group_id + "/" + hook.hook_id,
                                           "assume:anonymous"}))
        try:
            self.api.create_task_as(task_id, task, scopes, HOOKS_CLIENT_ID)
        except QueueError as e:
            body = self.api.queue_error_body(e, task_id)
            status = body.pop("_status")
            last_fire["error"] = json.dumps({"body": body, "code": e.code, "statusCode": status},
                                            indent=2)[:LAST_FIRE_ERROR_LIMIT]
            hook.last_fires.append(last_fire)
            info = body["requestInfo"]
            if e.code == "InsufficientScopes":
                raise HooksError("InsufficientScopes",
                                 f"The role `hook-id:{hook.hook_group_id}/{hook.hook_id}` does not have sufficient "
                                 f"scopes to create the task:\n\n{body['message']}", {"createTask": info})
            raise HooksError("InputError", "While calling {{method}}: {{code}}\n\n{{message}}",
                             {"code": body["code"], "method": info["method"], "message": body["message"]})
        last_fire["result"] = "success"
        hook.last_fires.append(last_fire)
        return {"taskId": task_id, "status": {"taskId": task_id}}

    @staticmethod
    def task_for_hook(hook: Hook, context: dict, task_id: str, now: dt.datetime):
        """taskcreator.js taskForHook: render the template with `now` and `taskId` in the context
        (they win over the caller's keys), then fill in what the template left unset."""
        full = {"now": iso(now), "taskId": task_id}
        full.update({k: v for k, v in context.items() if k not in full})
        task = jsone.render(copy.deepcopy(hook.task), full)
        if js_falsy(task):
            return task
        if isinstance(task, (str, int, float, bool)):
            kind = {str: "string", bool: "boolean"}.get(type(task), "number")
            raise TypeError(f"Cannot create property 'created' on {kind} '{_js_string(task)}'")
        if isinstance(task, list):
            return task  # JS sets the fields as properties the JSON body does not carry
        if js_falsy(task.get("created")):
            task["created"] = iso(now)
        if js_falsy(task.get("deadline")):
            task["deadline"] = iso(now + dt.timedelta(days=1))
        if js_falsy(task.get("expires")):
            task["expires"] = iso(_add_month(now))
        if js_falsy(task.get("taskGroupId")):
            task["taskGroupId"] = task_id
        return task


def _add_month(t: dt.datetime) -> dt.datetime:
    """taskcluster.fromNowJSON('1 month'): 30 days, as the client's fromNow counts a month."""
    return t + dt.timedelta(days=30)


def _js_string(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return stringify(v)


def _error_string(e: Exception) -> str:
    """err.toString() as the JS code would print it (json-e's errors print alike in both
    implementations: 'TemplateError at template.x: message')."""
    if isinstance(e, jsone.shared.JSONTemplateError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def load_seed_hooks(emulator, store, path: str, hooks: list) -> None:
    """Seed `hooks`: each a createHook body plus hookGroupId and hookId, created as createHook creates it."""
    from .store import SeedError
    for i, h in enumerate(hooks):
        where = f"seed {path}: hooks[{i}]"
        if not isinstance(h, dict) or not isinstance(h.get("hookGroupId"), str) or not isinstance(h.get("hookId"), str):
            raise SeedError(f"{where} needs string hookGroupId and hookId")
        where += f" ({h['hookGroupId']}/{h['hookId']})"
        body = copy.deepcopy(h)
        if store.options.get("applySchemaDefaults", True):
            emulator.schemas.apply_defaults("hooks", "v1/create-hook-request.json#", body)
        msg = emulator.schemas.message("hooks", "v1/create-hook-request.json#", body, emulator.root_url)
        if msg:
            raise SeedError(f"{where} is invalid:{msg}")
        key = hook_key(body["hookGroupId"], body["hookId"])
        if key in store.hooks:
            raise SeedError(f"{where}: duplicate hook")
        try:
            _schedule_errors(body.get("schedule", []))
            _trigger_schema_errors(body.get("triggerSchema"))
        except HooksError as e:
            raise SeedError(f"{where}: " + e.message.replace("{{message}}", str(e.details.get("message", "")))
                            .replace("{{schedElement}}", str(e.details.get("schedElement", ""))))
        store.hooks[key] = Hook(body["hookGroupId"], body["hookId"], body["metadata"], body["task"],
                                body.get("bindings", []), list(body.get("schedule", [])), body.get("triggerSchema"),
                                cron.next_date(body.get("schedule", []), utcnow()))


__all__ = ["Hook", "HooksError", "HooksService", "load_seed_hooks", "nice_slugid"]
