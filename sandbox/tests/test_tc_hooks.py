"""Tests of the emulator's Hooks service, driven with the official Python client (taskcluster.Hooks).

Run: $(scripts/ensure-venv) -m pytest sandbox/tests/test_tc_hooks.py

The emulator runs as a subprocess with a seed that adds hook clients, roles and one seeded hook
to test_tc_emulator's seed. Expected texts come from services/hooks/src/api.js and the sources
TASKCLUSTER.md cites for each behaviour.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import requests
import taskcluster

import test_tc_emulator as base

SANDBOX = base.SANDBOX
sys.path.insert(0, SANDBOX)

from tc_emulator_lib import cron  # noqa: E402

HOOK_CLIENTS = {
    "hooks-admin": ("hooks-admin-token", ["hooks:*", "assume:hook-id:proj-servo/*", "queue:get-task:*",
                                          "queue:status:*"]),
    "hooks-no-role": ("no-role-token", ["hooks:modify-hook:proj-servo/*"]),
    "role-user": ("role-user-token", ["assume:hook-id:proj-servo/nightly-x"]),
    "hooks-reader": ("hooks-reader-token", ["hooks:get:proj-servo:*", "hooks:list-hooks:proj-servo",
                                            "hooks:trigger-hook:proj-servo/nightly-win2016"]),
}
CLIENTS = {**base.CLIENTS, **HOOK_CLIENTS}
ROLES = [
    # every proj-servo hook may schedule into its project; `<..>` is the rest of the hook id
    {"roleId": "hook-id:proj-servo/*", "scopes": ["queue:scheduler-id:-", "queue:create-task:project:none",
                                                  "queue:route:index.servo.hooks.*",
                                                  "secrets:get:project/servo/hooks/<..>"]},
    # only the nightly hooks may create tasks in the staging pool
    {"roleId": "hook-id:proj-servo/nightly-*", "scopes": ["queue:create-task:highest:proj-servo/win2016"]},
]
SOURCE = "https://github.com/servo/servo"


def hook_def(**over):
    d = {
        "metadata": {"name": "nightly", "description": "tc-ami auto", "owner": "servo-ops@example.com",
                     "emailOnError": False},
        "schedule": ["0 0 3 * * *"],
        "task": {
            "taskQueueId": "proj-servo/win2016",
            "schedulerId": "-",
            "created": {"$fromNow": "0 seconds"},
            "deadline": {"$fromNow": "2 hours"},
            "scopes": ["secrets:get:project/servo/hooks/nightly-win2016"],
            "routes": ["index.servo.hooks.${firedBy}"],
            "metadata": {"name": "tc-ami auto ${payload.worker}", "description": "fired by ${clientId}",
                         "owner": "servo-ops@example.com", "source": SOURCE},
            "payload": {"maxRunTime": 600, "command": [{"$eval": "'tc-ami auto -w ' + payload.worker"}],
                        "env": {"TASK_ID": {"$eval": "taskId"}}},
        },
        "triggerSchema": {"type": "object", "properties": {"worker": {"type": "string"}}, "required": ["worker"],
                          "additionalProperties": False},
    }
    d.update(over)
    return d


SEED = copy.deepcopy(base.SEED)
SEED["clients"] = [{"clientId": c, "accessToken": t, "scopes": s} for c, (t, s) in CLIENTS.items()]
SEED["roles"] = ROLES
SEED["hooks"] = [{"hookGroupId": "proj-servo", "hookId": "seeded", **hook_def(schedule=[])}]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tc-hooks")
    seed = tmp / "seed.json"
    seed.write_text(json.dumps(SEED))
    with open(tmp / "stderr.log", "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(SANDBOX, "tc_emulator.py"), "--port", "0",
                                 "--seed", str(seed), "--quiet"], stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    m = re.fullmatch(r"READY (http://127\.0\.0\.1:\d+)\n", line)
    assert m, f"bad READY line {line!r}; stderr: {(tmp / 'stderr.log').read_text()}"
    yield m.group(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "Traceback" not in (tmp / "stderr.log").read_text()


@pytest.fixture(autouse=True)
def fresh(emulator):
    assert requests.post(emulator + "/_emulator/reset").status_code == 200


def hooks(root, client="hooks-admin"):
    creds = {"clientId": client, "accessToken": CLIENTS[client][0]} if client else {}
    return taskcluster.Hooks({"rootUrl": root, "credentials": creds})


def queue(root, client="hooks-admin"):
    return taskcluster.Queue({"rootUrl": root, "credentials": {"clientId": client, "accessToken": CLIENTS[client][0]}})


def failure(call_):
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as e:
        call_()
    return e.value


def head(body):
    """The message without lib-api's `---` block; checks the block names the body's code."""
    message, sep, tail = body["message"].partition("\n\n---\n\n")
    assert sep and f"* errorCode:  {body['code']}" in tail, body["message"]
    return message


def test_cron_patterns_as_cron_parser_reads_them():
    ref = datetime.datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc)

    def nxt(p):
        return cron.next_date([p], ref).strftime("%Y-%m-%dT%H:%M:%S")
    assert nxt("0 0 3 * * *") == nxt("0 3 * * *") == "2026-12-01T03:00:00"  # 5 fields: seconds are 0
    assert nxt("*/15 * * * *") == "2026-11-30T12:45:00"
    assert nxt("@daily") == "2026-12-01T00:00:00"
    assert nxt("0 0 9 * * mon") == "2026-12-07T09:00:00"
    assert nxt("0 0 0 L * *") == "2026-12-31T00:00:00"
    assert nxt("0 0 0 * * 5L") == "2026-12-25T00:00:00"  # the last Friday
    assert nxt("0 0 0 * * 1#2") == "2026-12-14T00:00:00"  # the second Monday
    assert nxt("0 0 0 29 2 *") == "2028-02-29T00:00:00"
    assert nxt("0 0 0 1,15 * 1") == "2026-12-01T00:00:00"  # day of month OR day of week
    assert cron.next_date(["0 0 3 * * *", "0 30 1 * * *"], ref).hour == 1  # the earliest of the patterns
    assert cron.next_date([], ref) == datetime.datetime(4000, 2, 1, tzinfo=datetime.timezone.utc)
    errors = {
        "61 * * * *": "Constraint error, got value 61 expected range 0-59",
        "* * * * * * *": "Invalid cron expression, too many fields",
        "*/0 * * * *": "Constraint error, cannot repeat at every 0 time.",
        "5-1 * * * *": "Invalid range: 5-1, min(5) > max(1)",
        "0 0 0 * * 1#6": "Constraint error, invalid dayOfWeek occurrence number (#)",
        "0 0 0 * * 1,2#3": "Constraint error, invalid dayOfWeek `#` and `,` special characters are incompatible",
        "0 0 0 1,1 * *": "CronDayOfMonth Validation error, duplicate values found: 1",
        "0 0 0 * foo *": 'Validation error, cannot resolve alias "foo"',
        "0 0 ? * * *": "Invalid characters, got value: ?",
        ",1 * * * *": "Invalid list value format",
        "1//2 * * * *": "Invalid repeat: 1//2",
    }
    for pattern, message in errors.items():
        with pytest.raises(cron.CronError) as e:
            cron.parse(pattern)
        assert str(e.value) == message, pattern


def test_create_get_update_list_and_remove(emulator):
    h = hooks(emulator)
    created = h.createHook("proj-servo", "nightly-win2016", hook_def())
    # the reply is the body with the ids and the schema defaults (bindings stay absent)
    assert created == {**hook_def(), "hookGroupId": "proj-servo", "hookId": "nightly-win2016"}
    got = h.hook("proj-servo", "nightly-win2016")
    assert list(got) == ["hookId", "hookGroupId", "bindings", "metadata", "task", "schedule", "triggerSchema"]
    assert got == {**created, "bindings": []}
    # creating it again: the same definition (as `hook` returns it) is accepted, another one is 409
    assert h.createHook("proj-servo", "nightly-win2016", {**hook_def(), "bindings": []})
    e = failure(lambda: h.createHook("proj-servo", "nightly-win2016", hook_def()))  # no bindings: not equal
    assert (e.status_code, e.body["code"]) == (409, "RequestConflict")
    assert head(e.body) == "hook `proj-servo/nightly-win2016` already exists."
    status = h.getHookStatus("proj-servo", "nightly-win2016")
    assert status["lastFire"] == {"result": "no-fire"}
    now = datetime.datetime.now(datetime.timezone.utc)
    assert status["nextScheduledDate"] == cron.next_date(["0 0 3 * * *"], now).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # update: a full replacement; bindings kept when the body has none; a new schedule
    updated = h.updateHook("proj-servo", "nightly-win2016", hook_def(schedule=["0 0 4 * * *", "0 30 1 * * *"],
                                                                   metadata={**hook_def()["metadata"],
                                                                             "description": "v2"}))
    assert updated["metadata"]["description"] == "v2" and updated["bindings"] == []
    assert updated["schedule"] == ["0 0 4 * * *", "0 30 1 * * *"]
    assert h.getHookStatus("proj-servo", "nightly-win2016")["nextScheduledDate"] == cron.next_date(
        ["0 0 4 * * *", "0 30 1 * * *"], now).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # the earlier of the two
    nosched = h.updateHook("proj-servo", "nightly-win2016", hook_def(schedule=[]))
    assert "nextScheduledDate" not in h.getHookStatus("proj-servo", "nightly-win2016") and nosched["schedule"] == []
    # lists: the seeded hook is there too
    assert h.listHookGroups() == {"groups": ["proj-servo"]}
    assert [x["hookId"] for x in h.listHooks("proj-servo")["hooks"]] == ["nightly-win2016", "seeded"]
    assert h.removeHook("proj-servo", "nightly-win2016") == {}
    assert h.removeHook("proj-servo", "nightly-win2016") == {}  # removing a missing hook succeeds
    assert [x["hookId"] for x in h.listHooks("proj-servo")["hooks"]] == ["seeded"]


def test_not_found_and_input_errors(emulator):
    h = hooks(emulator)
    for call_ in (lambda: h.hook("proj-servo", "nope"), lambda: h.getHookStatus("proj-servo", "nope"),
                  lambda: h.updateHook("proj-servo", "nope", hook_def()),
                  lambda: h.triggerHook("proj-servo", "nope", {"worker": "x"})):
        e = failure(call_)
        assert (e.status_code, e.body["code"], head(e.body)) == (404, "ResourceNotFound", "No such hook")
    e = failure(lambda: h.listHooks("nogroup"))
    assert (e.status_code, head(e.body)) == (404, "No such group")
    # the request schema (ajv's wording, lib-validate's message)
    bad = hook_def(metadata={"name": "n", "description": "d", "owner": "not an email"})
    e = failure(lambda: h.createHook("proj-servo", "bad", bad))
    assert (e.status_code, e.body["code"]) == (400, "InputValidationError")
    assert head(e.body) == ("\nSchema Validation Failed!\nRejecting Schema: "
                            f"{emulator}/schemas/hooks/v1/create-hook-request.json#\nErrors:\n"
                            '  * data/metadata/owner must match format "email"')
    e = failure(lambda: h.createHook("proj-servo", "bad", {"metadata": hook_def()["metadata"]}))
    assert "data must have required property 'task'" in head(e.body)
    # the handler's own checks, in its order
    e = failure(lambda: h.createHook("proj-servo", "bad", {**hook_def(), "hookId": "other"}))
    assert (e.status_code, e.body["code"], head(e.body)) == (400, "InputError", "Hook Ids do not match")
    e = failure(lambda: h.createHook("proj-servo", "bad", hook_def(schedule=["0 0 3 * * *", "61 * * * *"])))
    assert head(e.body) == "Constraint error, got value 61 expected range 0-59 in 61 * * * *"
    assert e.body["requestInfo"]["payload"]["hookId"] == "bad"  # the handler set the ids on the body
    e = failure(lambda: h.createHook("proj-servo", "bad", hook_def(triggerSchema={"type": "foo"})))
    assert head(e.body) == ("triggerSchema is not a valid JSON schema:\n"
                            " * Property undefined must be equal to one of the allowed values\n"
                            " * Property undefined must be array\n"
                            " * Property undefined must match a schema in anyOf")
    # URL parameters
    r = base.call(emulator, "GET", "/api/hooks/v1/hooks/proj-servo/a%20b", client="hooks-admin",
                  token=CLIENTS["hooks-admin"][0])
    assert r.status_code == 400 and r.json()["code"] == "InvalidRequestArguments"
    assert "URL parameter 'hookId' given as 'a b' must match regular expression: " \
           "'/^[a-zA-Z0-9-_\\/]{1,1000}$/'" in r.json()["message"]
    assert hooks(emulator).hook("proj-servo", "seeded")["hookId"] == "seeded"  # ids with %2F are decoded
    e = failure(lambda: h.hook("proj-servo", "nested/id"))
    assert head(e.body) == "No such hook" and e.body["requestInfo"]["params"]["hookId"] == "nested/id"


def test_scopes_as_the_reference_gives_them(emulator):
    # createHook needs the hook's role as well as modify-hook
    e = failure(lambda: hooks(emulator, "hooks-no-role").createHook("proj-servo", "x", hook_def()))
    assert (e.status_code, e.body["code"]) == (403, "InsufficientScopes")
    assert head(e.body) == base.MISSING_SCOPES_TEXT(
        "hooks-no-role", "assume:hook-id:proj-servo/x",
        {"AllOf": ["hooks:modify-hook:proj-servo/x", "assume:hook-id:proj-servo/x"]})
    reader = hooks(emulator, "hooks-reader")
    assert reader.hook("proj-servo", "seeded")["hookId"] == "seeded"  # hooks:get:<group>:<id> (a colon)
    e = failure(lambda: reader.getHookStatus("proj-servo", "seeded"))
    assert head(e.body) == base.MISSING_SCOPES_TEXT("hooks-reader", "hooks:status:proj-servo/seeded",
                                                    "hooks:status:proj-servo/seeded")
    e = failure(lambda: reader.listHookGroups())
    assert head(e.body) == base.MISSING_SCOPES_TEXT("hooks-reader", "hooks:list-hooks:", "hooks:list-hooks:")
    e = failure(lambda: reader.removeHook("proj-servo", "seeded"))
    assert e.status_code == 403
    e = failure(lambda: reader.triggerHook("proj-servo", "seeded", {"worker": "x"}))
    assert head(e.body) == base.MISSING_SCOPES_TEXT("hooks-reader", "hooks:trigger-hook:proj-servo/seeded",
                                                    "hooks:trigger-hook:proj-servo/seeded")
    e = failure(lambda: hooks(emulator, None).hook("proj-servo", "seeded"))
    assert e.status_code == 403 and "requestInfo" not in e.body


def test_trigger_creates_the_rendered_task_with_the_hooks_role(emulator):
    h = hooks(emulator)
    h.createHook("proj-servo", "nightly-win2016", hook_def())
    reply = h.triggerHook("proj-servo", "nightly-win2016", {"worker": "win2016"})
    task_id = reply["taskId"]
    assert reply == {"taskId": task_id, "status": {"taskId": task_id}}
    task = queue(emulator).task(task_id)
    assert task["taskGroupId"] == task_id  # the template set none: a task group of its own
    assert task["metadata"]["name"] == "tc-ami auto win2016"
    assert task["metadata"]["description"] == "fired by hooks-admin"  # context.clientId
    assert task["routes"] == ["index.servo.hooks.triggerHook"]  # context.firedBy
    assert task["payload"] == {"maxRunTime": 600, "command": ["tc-ami auto -w win2016"], "env": {"TASK_ID": task_id}}
    assert task["scopes"] == ["secrets:get:project/servo/hooks/nightly-win2016"]  # granted through the role's <..>
    created, deadline, expires = (datetime.datetime.fromisoformat(task[k].replace("Z", "+00:00"))
                                  for k in ("created", "deadline", "expires"))
    assert deadline - created == datetime.timedelta(hours=2)  # $fromNow against the context's `now`
    assert expires - created == datetime.timedelta(days=30)  # taskcreator's default, '1 month'
    assert queue(emulator).status(task_id)["status"]["state"] == "pending"
    last = h.getHookStatus("proj-servo", "nightly-win2016")["lastFire"]
    assert (last["result"], last["taskId"]) == ("success", task_id)
    # the caller needs only hooks:trigger-hook; the task is created with the hook's role
    other = hooks(emulator, "hooks-reader").triggerHook("proj-servo", "nightly-win2016", {"worker": "x"})
    assert queue(emulator).task(other["taskId"])["metadata"]["description"] == "fired by hooks-reader"
    # defaults for what the template leaves out
    bare = hook_def(task={"taskQueueId": "proj-servo/win2016", "metadata": hook_def()["task"]["metadata"],
                          "payload": {}}, triggerSchema={"type": "object"})
    h.createHook("proj-servo", "nightly-bare", bare)
    t = queue(emulator).task(h.triggerHook("proj-servo", "nightly-bare", {"worker": "w"})["taskId"])
    created, deadline = (datetime.datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("created", "deadline"))
    assert deadline - created == datetime.timedelta(days=1)
    # a template that renders to nothing creates no task
    h.createHook("proj-servo", "nightly-none", hook_def(task={"$if": "payload.worker == 'yes'",
                                                              "then": {**hook_def()["task"], "scopes": []}}))
    assert h.triggerHook("proj-servo", "nightly-none", {"worker": "yes"})["taskId"]
    assert h.triggerHook("proj-servo", "nightly-none", {"worker": "no"}) == {}


def test_trigger_errors(emulator):
    h = hooks(emulator)
    h.createHook("proj-servo", "nightly-win2016", hook_def())
    # the payload must match the triggerSchema (ajv's errorsText)
    e = failure(lambda: h.triggerHook("proj-servo", "nightly-win2016", {"worker": 1, "x": 2}))
    assert (e.status_code, e.body["code"]) == (400, "InputError")
    assert head(e.body) == "data must NOT have additional properties; data/worker must be string"
    # a role without the queue's scopes: 403 with the queue's message inside
    h.createHook("proj-servo", "weak", hook_def())
    e = failure(lambda: h.triggerHook("proj-servo", "weak", {"worker": "w"}))
    assert (e.status_code, e.body["code"]) == (403, "InsufficientScopes")
    assert e.body["requestInfo"]["method"] == "triggerHook"
    message = e.body["message"].rpartition("\n\n---\n\n")[0]  # without the hooks service's own block
    prefix = "The role `hook-id:proj-servo/weak` does not have sufficient scopes to create the task:\n\n"
    assert message.startswith(prefix)
    queue_message, _, queue_tail = message[len(prefix):].partition("\n\n---\n\n")
    assert queue_message.startswith("Client ID static/taskcluster/hooks does not have sufficient scopes and is "
                                    "missing the following scopes:\n\n```\n{\n  \"AllOf\": [\n")
    assert '"secrets:get:project/servo/hooks/nightly-win2016"' in queue_message  # the <..> of `weak` differs
    assert '"queue:create-task:highest:proj-servo/win2016"' in queue_message
    assert queue_tail.startswith("* method:     createTask\n* errorCode:  InsufficientScopes\n* statusCode: 403")
    last = h.getHookStatus("proj-servo", "weak")["lastFire"]
    assert last["result"] == "error" and last["error"]["body"]["code"] == "InsufficientScopes"
    # the queue refusing the rendered task for another reason
    h.createHook("proj-servo", "nightly-invalid", hook_def(task={**hook_def()["task"], "priority": "urgent"}))
    e = failure(lambda: h.triggerHook("proj-servo", "nightly-invalid", {"worker": "w"}))
    assert (e.status_code, e.body["code"]) == (400, "InputError")
    assert head(e.body).startswith("While calling createTask: InputValidationError\n\n\nSchema Validation Failed!")
    # a template that fails to render
    h.createHook("proj-servo", "nightly-broken", hook_def(task={"$eval": "nosuch"}))
    e = failure(lambda: h.triggerHook("proj-servo", "nightly-broken", {"worker": "w"}))
    assert head(e.body).startswith("While firing hook:\n\nInterpreterError")
    last = h.getHookStatus("proj-servo", "nightly-broken")["lastFire"]
    assert last["result"] == "error" and last["error"]["message"].startswith("InterpreterError")


def test_roles_expand_a_clients_scopes_and_an_empty_authorized_scopes_restricts(emulator):
    task = {**base.task_def(), "routes": ["index.servo.hooks.x"], "scopes": ["secrets:get:project/servo/hooks/nightly-x"]}
    # assume:hook-id:proj-servo/nightly-x brings both roles, `<..>` = nightly-x
    assert queue(emulator, "role-user").createTask(taskcluster.slugId(), task)["status"]["state"] == "pending"
    e = failure(lambda: queue(emulator, "role-user").createTask(
        taskcluster.slugId(), {**task, "scopes": ["secrets:get:project/servo/hooks/nightly-y"]}))
    assert e.status_code == 403
    # authorizedScopes: [] is a restriction to nothing (JavaScript truthiness), not "no restriction"
    creds = {"clientId": "role-user", "accessToken": CLIENTS["role-user"][0]}
    q = taskcluster.Queue({"rootUrl": emulator, "credentials": creds, "authorizedScopes": []})
    e = failure(lambda: q.createTask(taskcluster.slugId(), task))
    assert e.status_code == 403 and e.body["code"] == "InsufficientScopes"
