"""Tests of the Taskcluster emulator (sandbox/tc_emulator.py) against the real-service transcripts.

Run: $(scripts/ensure-venv) -m pytest sandbox/tests/test_tc_emulator.py

The emulator runs as a subprocess on a free port with a temporary seed. Requests go through the
official `taskcluster` Python client (real Hawk signatures, made by mohawk) or raw `requests`
signed with mohawk, so the emulator's own Hawk code is not used to sign what it verifies.
Expected error texts are copied from the transcripts in ../shared/taskcluster-api/real-service/.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import mohawk
import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterAuthFailure, TaskclusterRestFailure

SANDBOX = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(SANDBOX)
sys.path.insert(0, SANDBOX)

from tc_emulator_lib import jsjson  # noqa: E402
from tc_emulator_lib import scopes as scopelib  # noqa: E402
from tc_emulator_lib.store import launch_config_id  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared", "taskcluster-api")

CLIENTS = {
    "static/tester/root": ("root-token", ["*"]),
    "static/tester/limited": ("limited-token", ["worker-manager:get-worker-pool:*"]),
    "tc-ami-admin": ("admin-token", ["worker-manager:*", "secrets:*"]),
    "tc-ami-readonly": ("readonly-token", ["worker-manager:get-worker-pool:*", "worker-manager:list-worker-pools"]),
    "issuer": ("issuer-token", ["worker-manager:*", "auth:create-client:named-temp"]),
    "queue-creator": ("creator-token", ["queue:create-task:high:proj-servo/*", "queue:scheduler-id:-",
                                        "queue:create-task:project:none", "queue:get-task:*", "queue:status:*",
                                        "queue:list-task-group:*", "queue:route:index.servo.*"]),
    "queue-reader": ("reader-token", ["queue:get-task:*", "queue:status:*", "worker-manager:list-workers:*"]),
}

# exp1.txt: the create body of the transcripts' pool
EXP1_BODY = {"providerId": "aws", "description": "test", "owner": "me@example.com", "emailOnError": False, "config": {
    "minCapacity": 0, "maxCapacity": 5, "launchConfigs": [
        {"region": "us-east-1", "launchConfig": {"ImageId": "ami-0000000000000000a", "InstanceType": "m5.large"},
         "workerConfig": {"genericWorker": {"config": {"deploymentId": "dep-123"}}}},
        {"region": "us-west-2", "launchConfig": {"ImageId": "ami-0000000000000000b", "InstanceType": "m5.large"},
         "workerManager": {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1}, "workerConfig": {}}]}}

NINE = ["currentCapacity", "requestedCount", "runningCount", "stoppingCount", "stoppedCount",
        "requestedCapacity", "runningCapacity", "stoppingCapacity", "stoppedCapacity"]


def servo_pool(wpid):
    lc = lambda region, itype, ami: {  # noqa: E731
        "region": region,
        "launchConfig": {"ImageId": ami, "InstanceType": itype, "SubnetId": f"subnet-{region}",
                         "InstanceMarketOptions": {"MarketType": "spot"}},
        "workerConfig": {"genericWorker": {"config": {"deploymentId": "d-1", "wstAudience": "communitytc"}}}}
    return {"workerPoolId": wpid, "providerId": "aws", "description": "servo", "owner": "servo@example.com",
            "emailOnError": False, "config": {"minCapacity": 0, "maxCapacity": 8, "launchConfigs": [
                lc("us-west-2", "c5.4xlarge", "ami-000000000000000w1"),
                lc("us-east-1", "c5.4xlarge", "ami-000000000000000e1")]}}


SEED = {
    "clients": [{"clientId": c, "accessToken": t, "scopes": s} for c, (t, s) in CLIENTS.items()],
    "providers": {"aws": {"setup": "ok"}, "aws-broken": {"providerType": "aws", "setup": "failed"},
                  "null-provider": {"providerType": "null"}},
    "workerPools": [servo_pool("proj-servo/win2016")],
    "secrets": {"live": {"secret": {"a": 1}, "expires": "3000-01-01T00:00:00.000Z"},
                "old": {"secret": {"a": 2}, "expires": "2020-01-01T00:00:00.000Z"}},
    # the simulated clock is frozen: tests move it with /_emulator/advance (or set a time scale)
    "simulation": {"timeScale": 0},
}

TAIL = re.compile(r"\n\n---\n\n\* method:     (\w+)\n\* errorCode:  (\w+)\n\* statusCode: (\d+)\n"
                  r"\* time:       (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)$")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tc")
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
    assert proc.stdout.read() == "", "only the READY line goes to stdout"
    assert "Traceback" not in (tmp / "stderr.log").read_text()


@pytest.fixture(autouse=True)
def fresh(request):
    if "emulator" in request.fixturenames:
        root = request.getfixturevalue("emulator")
        assert requests.post(root + "/_emulator/reset").status_code == 200


def wm(root, client="static/tester/root", **options):
    creds = {"clientId": client, "accessToken": CLIENTS[client][0]} if client else {}
    return taskcluster.WorkerManager({"rootUrl": root, "credentials": creds, **options})


def secrets_client(root, client="tc-ami-admin"):
    return taskcluster.Secrets({"rootUrl": root, "credentials": {"clientId": client, "accessToken": CLIENTS[client][0]}})


def call(root, method, path, body=None, client="static/tester/root", sign_url=None, ts=None, send_body=None,
         headers=None, token=None):
    """A raw request signed with mohawk (independent of the emulator's Hawk code)."""
    url = root + path
    content = json.dumps(body) if body is not None else ""
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    if client:
        sender = mohawk.Sender({"id": client, "key": token or CLIENTS[client][0], "algorithm": "sha256"},
                               sign_url or url, method, content=content,
                               content_type=hdrs.get("Content-Type", ""), _timestamp=ts)
        hdrs["Authorization"] = sender.request_header
    hdrs.update(headers or {})
    return requests.request(method, url, data=send_body if send_body is not None else (content or None),
                            headers=hdrs)


def split_message(message, method, code, status):
    m = TAIL.search(message)
    assert m, f"no lib-api tail in {message!r}"
    assert m.groups()[:3] == (method, code, str(status))
    return message[:m.start()], m.group(4)


def assert_error(resp, status, code, method, message, params=None, payload=None, request_info=True):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert list(body) == (["code", "message", "requestInfo"] if request_info else ["code", "message"])
    assert body["code"] == code
    head, t = split_message(body["message"], method, code, status)
    assert head == message
    if request_info:
        ri = body["requestInfo"]
        assert list(ri) == ["method", "params", "payload", "time"]
        assert ri["method"] == method and ri["time"] == t
        if params is not None:
            assert ri["params"] == params
        if payload is not None:
            assert ri["payload"] == payload
    return body


def keys_deep(v):
    """Key order, recursively: what a textual comparison with a transcript would see."""
    if isinstance(v, dict):
        return [(k, keys_deep(x)) for k, x in v.items()]
    if isinstance(v, list):
        return [keys_deep(x) for x in v]
    return None


def transcript(name):
    path = os.path.join(SHARED, "real-service", name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    with open(path) as f:
        return f.read()


def transcript_json_after(name, marker):
    """The pretty-printed JSON body that follows `marker` (and its `<<< status` line)."""
    text = transcript(name)
    start = text.index(marker)
    start = text.index("\n{", start) + 1
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0) if text[i] in "{}" else 0
        if depth == 0:
            return json.loads(text[start:i + 1])
    raise AssertionError("unterminated JSON")


def create_exp1(root):
    return wm(root).createWorkerPool("proj-test/aws-pool", copy.deepcopy(EXP1_BODY))


def strip_nine(pool):
    return {k: v for k, v in pool.items() if k not in NINE}


# ---------------------------------------------------------------------------- pure rules


def test_launch_config_ids_match_the_transcripts():
    get1 = json.loads(transcript("get1.json"))
    for lc in get1["config"]["launchConfigs"]:
        explicit = lc["workerManager"]["launchConfigId"]
        assert launch_config_id(get1["workerPoolId"], lc) == explicit
    east = get1["config"]["launchConfigs"][0]
    assert launch_config_id("proj-test/aws-pool", {k: v for k, v in east.items() if k != "workerManager"}) \
        == "lc-3a9787fd2a3dc809c0fb"
    # exp2 c): ImageId a -> c
    changed = copy.deepcopy(east)
    changed["launchConfig"]["ImageId"] = "ami-0000000000000000c"
    del changed["workerManager"]
    assert launch_config_id("proj-test/aws-pool", changed) == "lc-59aec129c4a506605084"
    # exp5 Q7 (pools proj-test/q7a.., reconstructed): key order and whitespace do not matter
    assert launch_config_id("proj-test/q7a", {"workerConfig": {"genericWorker": {"config": {"deploymentId": "abc"}}},
                                              "launchConfig": {"ImageId": "ami-1"}, "region": "us-east-1"}) \
        == "lc-e3fef347d72c695e43c2"
    assert launch_config_id("proj-test/q7b", {"region": "us-east-1", "launchConfig": {"ImageId": "not-an-ami"}}) \
        == "lc-548d252f643ff67ea21b"
    assert launch_config_id("proj-test/q7c", {"region": "us-east-1", "launchConfig": {"ImageId": ""}}) \
        == "lc-86e3150e251c206c22ec"
    assert launch_config_id("proj-test/q7g", {"region": "us-east-1", "launchConfig": {"UserData": "x", "ImageId": "ami-1"}}) \
        == "lc-c32e43b1424049fc4dd3"


def test_json_semantics_of_node_and_postgres():
    assert jsjson.jsonb_text({"workerConfig": {}, "region": "r", "launchConfig": {"b": [1, 2.5], "a": True}}) \
        == '{"region": "r", "launchConfig": {"a": true, "b": [1, 2.5]}, "workerConfig": {}}'
    assert [jsjson.js_number(x) for x in (1.0, 1e21, 1e-7, 0.1, 12345678901234567890, -0.0)] \
        == ["1", "1e+21", "1e-7", "0.1", "12345678901234567000", "0"]
    assert jsjson.jsonb_text(jsjson.parse('{"n": 1e21, "m": 1.50}')) == '{"m": 1.5, "n": 1000000000000000000000}'
    assert list(jsjson.js_key_order({"b": 1, "10": 2, "a": 3, "2": 4})) == ["2", "10", "b", "a"]
    for text, msg in [
        ('{"a":1', "Expected ',' or '}' after property value in JSON at position 6 (line 1 column 7)"),
        ("{", "Expected property name or '}' in JSON at position 1 (line 1 column 2)"),
        ('{"a":}', "Unexpected token '}', \"{\"a\":}\" is not valid JSON"),
        ("[1,]", "Unexpected token ']', \"[1,]\" is not valid JSON"),
        ('{"a":1,}', "Expected double-quoted property name in JSON at position 7 (line 1 column 8)"),
        ('{"a":1} x', "Unexpected non-whitespace character after JSON at position 8 (line 1 column 9)"),
        ("[", "Unexpected end of JSON input"),
        ("NaN", '"NaN" is not valid JSON'),
    ]:
        with pytest.raises(jsjson.JSONParseError) as e:
            jsjson.parse(text)
        assert str(e.value) == msg


def test_vendored_schemas_are_the_official_ones():
    from tc_emulator_lib.validation import SERVICES
    ours = os.path.join(SANDBOX, "tc_emulator_lib", "generated")
    theirs = os.path.join(SHARED, "generated")
    if not os.path.isdir(theirs):
        pytest.skip("../shared/taskcluster-api/generated not available")
    vendored = set()
    for d, _, files in os.walk(ours):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), ours)
            vendored.add(rel)
            with open(os.path.join(theirs, rel), "rb") as a, open(os.path.join(ours, rel), "rb") as b:
                assert a.read() == b.read(), rel
    # every service the emulator serves comes whole: its reference and all its schemas
    for svc in SERVICES:
        for d, _, files in os.walk(os.path.join(theirs, "schemas", svc)):
            for f in files:
                assert os.path.relpath(os.path.join(d, f), theirs) in vendored, f
        assert os.path.join("references", svc, "v1", "api.json") in vendored


def test_sandbox_seed_loads_and_is_realistic():
    from tc_emulator_lib.server import Emulator
    em = Emulator(os.path.join(SANDBOX, "seed", "taskcluster.json"))
    assert set(em.store.clients) == {"project/servo/tc-ami", "tc-ami-admin", "tc-ami-readonly"}
    assert em.store.clients["tc-ami-admin"]["scopes"] == ["worker-manager:*", "secrets:*", "queue:*"]
    # The operator holds what a Servo project administrator holds on the community deployment:
    # project-admin:servo, and the anonymous role every client gets; and the scheduler id every
    # login identity holds there (config/grants.yml), which createTask needs for `tc-ami try`.
    assert em.store.clients["project/servo/tc-ami"]["scopes"] == ["assume:project-admin:servo", "queue:scheduler-id:-"]
    operator = em.store.expand(["assume:project-admin:servo", "assume:anonymous"])
    for needed in ["worker-manager:get-worker-pool:proj-servo/win2016", "worker-manager:list-worker-pools",
                   "worker-manager:manage-worker-pool:proj-servo/win2016",
                   "worker-manager:provider:community-tc-workers-aws",
                   "secrets:get:project/servo/tc-ami/deployments/proj-servo/win2016",
                   "secrets:set:project/servo/tc-ami/deployments/proj-servo/win2016",
                   "secrets:set:project/servo/windows-administrator/servo-win2016/ami-0123"]:
        assert scopelib.satisfies(operator, needed), needed
    for not_granted in ["worker-manager:manage-worker-pool:proj-other/win", "worker-manager:provider:aws",
                        "secrets:get:tc-ami/deployments/proj-servo/win2016", "secrets:set:project/other/x"]:
        assert not scopelib.satisfies(operator, not_granted), not_granted
    assert em.sim.cfg["timeScale"] == 0.001 and em.store.workers == {} and em.store.tasks == {}
    for wpid in ("proj-servo/win2016", "proj-servo/win2016-staging"):
        view = em.store.pools[wpid].view()
        assert view["providerId"] == "community-tc-workers-aws"
        assert (view["config"]["minCapacity"], view["config"]["maxCapacity"]) == (0, 8)
        lcs = view["config"]["launchConfigs"]
        assert {lc["region"] for lc in lcs} == {"us-west-2", "us-east-1"}
        deployments = {lc["workerConfig"]["genericWorker"]["config"]["deploymentId"] for lc in lcs}
        assert len(deployments) == 1 and all(lc["launchConfig"]["ImageId"].startswith("ami-") for lc in lcs)
    assert len(em.store.pools["proj-servo/win2016"].view()["config"]["launchConfigs"]) == 4


# ---------------------------------------------------------------------------- transcripts, via the official client


def test_create_and_get_reproduce_the_transcript(emulator):
    created = create_exp1(emulator)
    got = wm(emulator).workerPool("proj-test/aws-pool")
    expected = json.loads(transcript("get1.json"))
    for v in (created, got):
        assert v["created"] == v["lastModified"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", v["created"])
        v = {**v, "created": expected["created"], "lastModified": expected["lastModified"]}
        assert v == expected
        assert keys_deep(v) == keys_deep(expected)  # jsonb key order, injected ids, the nine counts


def test_posting_the_get_response_back_is_refused_naming_the_nine_fields(emulator):
    create_exp1(emulator)
    got = wm(emulator).workerPool("proj-test/aws-pool")
    with pytest.raises(TaskclusterRestFailure) as e:
        wm(emulator).updateWorkerPool("proj-test/aws-pool", got)
    assert e.value.status_code == 400
    body = e.value.body
    expected = transcript_json_after("exp1.txt", "######## Q2 POST GET-response back unchanged")
    head, _ = split_message(body["message"], "updateWorkerPool", "InputValidationError", 400)
    exp_head, _ = split_message(expected["message"], "updateWorkerPool", "InputValidationError", 400)
    assert head == exp_head.replace("http://127.0.0.1:8080", emulator)
    assert body["requestInfo"]["params"] == {"workerPoolId": "proj-test/aws-pool"}
    assert body["requestInfo"]["payload"] == {**got}
    for f in NINE:
        assert f'data must NOT have additional properties: "{f}"' in body["message"]


def test_update_without_counts_then_new_image_gets_new_id_and_archives_old(emulator):
    create_exp1(emulator)
    client = wm(emulator)
    got = client.workerPool("proj-test/aws-pool")
    same = client.updateWorkerPool("proj-test/aws-pool", strip_nine(got))  # a) accepted, nothing changes
    assert same["config"] == got["config"]
    body = strip_nine(got)
    east = body["config"]["launchConfigs"][0]
    east["launchConfig"]["ImageId"] = "ami-0000000000000000c"
    del east["workerManager"]  # drop the injected id
    updated = client.updateWorkerPool("proj-test/aws-pool", body)
    # exp2 c): the server returns the kept config first, the new one (new id) after it
    assert [(lc["launchConfig"]["ImageId"], lc["workerManager"]) for lc in updated["config"]["launchConfigs"]] == [
        ("ami-0000000000000000b", {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1}),
        ("ami-0000000000000000c", {"launchConfigId": "lc-59aec129c4a506605084"})]
    assert updated["lastModified"] >= got["lastModified"]
    active = client.listWorkerPoolLaunchConfigs("proj-test/aws-pool")["workerPoolLaunchConfigs"]
    assert [lc["launchConfigId"] for lc in active] == ["lc-59aec129c4a506605084", "lc-explicit-1"]
    everything = client.listWorkerPoolLaunchConfigs("proj-test/aws-pool", query={"includeArchived": "true"})
    rows = {lc["launchConfigId"]: lc for lc in everything["workerPoolLaunchConfigs"]}
    assert list(rows) == ["lc-3a9787fd2a3dc809c0fb", "lc-59aec129c4a506605084", "lc-explicit-1"]
    assert [rows[i]["isArchived"] for i in rows] == [True, False, False]
    assert list(rows["lc-3a9787fd2a3dc809c0fb"]) == ["launchConfigId", "workerPoolId", "isArchived",
                                                     "configuration", "created", "lastModified"]
    assert rows["lc-3a9787fd2a3dc809c0fb"]["configuration"]["launchConfig"]["ImageId"] == "ami-0000000000000000a"
    # exp3 h): changing it back re-activates the old id (and it comes back last)
    back = strip_nine(client.workerPool("proj-test/aws-pool"))
    east = back["config"]["launchConfigs"][1]
    east["launchConfig"]["ImageId"] = "ami-0000000000000000a"
    del east["workerManager"]
    again = client.updateWorkerPool("proj-test/aws-pool", back)
    assert [lc["workerManager"]["launchConfigId"] for lc in again["config"]["launchConfigs"]] == [
        "lc-explicit-1", "lc-3a9787fd2a3dc809c0fb"]
    rows = {lc["launchConfigId"]: lc["isArchived"] for lc in client.listWorkerPoolLaunchConfigs(
        "proj-test/aws-pool", query={"includeArchived": "true"})["workerPoolLaunchConfigs"]}
    assert rows == {"lc-3a9787fd2a3dc809c0fb": False, "lc-59aec129c4a506605084": True, "lc-explicit-1": False}


def test_the_transcript_sequence_a_to_h(emulator):
    """exp2/exp3 step by step: launch config order, ids, archiving and lastModified of each row."""
    create_exp1(emulator)
    client = wm(emulator)
    wpid = "proj-test/aws-pool"

    def rows():
        out = client.listWorkerPoolLaunchConfigs(wpid, query={"includeArchived": "true"})["workerPoolLaunchConfigs"]
        return {r["launchConfigId"]: r for r in out}

    def order(pool):
        return [(lc["launchConfig"]["ImageId"][-1], lc["workerManager"]) for lc in pool["config"]["launchConfigs"]]

    created = rows()
    a = client.updateWorkerPool(wpid, strip_nine(client.workerPool(wpid)))  # a) ids kept: accepted
    assert order(a) == [("a", {"launchConfigId": "lc-3a9787fd2a3dc809c0fb"}),
                        ("b", {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1})]
    after_a = rows()
    assert after_a["lc-3a9787fd2a3dc809c0fb"]["configuration"]["workerManager"] == {
        "launchConfigId": "lc-3a9787fd2a3dc809c0fb"}  # stored as posted
    assert after_a["lc-3a9787fd2a3dc809c0fb"]["created"] == created["lc-3a9787fd2a3dc809c0fb"]["created"]
    b_body = {**copy.deepcopy(EXP1_BODY), "workerPoolId": wpid}
    b = client.updateWorkerPool(wpid, b_body)  # b) the original body again
    assert order(b) == order(a)
    assert "workerManager" not in rows()["lc-3a9787fd2a3dc809c0fb"]["configuration"]
    b_time = b["lastModified"]
    c_body = copy.deepcopy(b_body)
    c_body["config"]["launchConfigs"][0]["launchConfig"]["ImageId"] = "ami-0000000000000000c"
    c = client.updateWorkerPool(wpid, c_body)  # c) new content without id
    assert order(c) == [("b", {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1}),
                        ("c", {"launchConfigId": "lc-59aec129c4a506605084"})]
    after_c = rows()
    assert after_c["lc-3a9787fd2a3dc809c0fb"]["isArchived"] is True
    assert after_c["lc-3a9787fd2a3dc809c0fb"]["lastModified"] == b_time  # archiving leaves lastModified alone
    assert after_c["lc-explicit-1"]["lastModified"] == c["lastModified"]
    assert after_c["lc-59aec129c4a506605084"]["created"] == c["lastModified"]
    d_body = copy.deepcopy(c_body)
    d_body["config"]["launchConfigs"][1]["launchConfig"]["ImageId"] = "ami-0000000000000000d"
    with pytest.raises(TaskclusterRestFailure) as e:  # d) explicit id kept, content changed
        client.updateWorkerPool(wpid, d_body)
    assert e.value.status_code == 409
    e_body = strip_nine(client.workerPool(wpid))
    e_body["config"]["launchConfigs"][1]["launchConfig"]["ImageId"] = "ami-0000000000000000e"
    with pytest.raises(TaskclusterRestFailure) as e:  # e) injected id kept, content changed
        client.updateWorkerPool(wpid, e_body)
    assert "`lc-59aec129c4a506605084` already exists with different configuration" in e.value.body["message"]
    assert rows() == after_c  # refused updates change nothing
    g_body = strip_nine(client.workerPool(wpid))
    g_body["config"]["launchConfigs"][0]["workerManager"]["capacityPerInstance"] = 2
    g = client.updateWorkerPool(wpid, g_body)  # g) workerManager-only change under the same id
    assert order(g) == [("b", {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 2}),
                        ("c", {"launchConfigId": "lc-59aec129c4a506605084"})]
    h_body = copy.deepcopy(g_body)
    h_body["config"]["launchConfigs"][1] = copy.deepcopy(EXP1_BODY["config"]["launchConfigs"][0])  # back to a
    h = client.updateWorkerPool(wpid, h_body)  # h) the archived content again: re-activated, comes last
    assert order(h) == [("b", {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 2}),
                        ("a", {"launchConfigId": "lc-3a9787fd2a3dc809c0fb"})]
    after_h = rows()
    assert [(i, r["isArchived"]) for i, r in after_h.items()] == [
        ("lc-3a9787fd2a3dc809c0fb", False), ("lc-59aec129c4a506605084", True), ("lc-explicit-1", False)]
    assert after_h["lc-59aec129c4a506605084"]["lastModified"] == g["lastModified"]
    assert after_h["lc-3a9787fd2a3dc809c0fb"]["lastModified"] == h["lastModified"]
    # exp4 Q5: the list shows the same order
    listed = [p for p in client.listWorkerPools()["workerPools"] if p["workerPoolId"] == wpid]
    assert listed == [h]


def test_changed_content_under_a_kept_id_is_a_conflict(emulator):
    create_exp1(emulator)
    client = wm(emulator)
    body = strip_nine(client.workerPool("proj-test/aws-pool"))
    body["config"]["launchConfigs"][1]["launchConfig"]["ImageId"] = "ami-0000000000000000d"  # lc-explicit-1
    with pytest.raises(TaskclusterRestFailure) as e:
        client.updateWorkerPool("proj-test/aws-pool", body)
    assert e.value.status_code == 409
    expected = transcript("exp2.txt")
    exp_msg = re.search(r"'message': '(Launch config with ID .*?CODE: 23505)", expected).group(1)
    exp_msg = exp_msg.encode().decode("unicode_escape")
    head, _ = split_message(e.value.body["message"], "updateWorkerPool", "RequestConflict", 409)
    assert head == exp_msg
    # the injected id of a generated launch config counts too (exp3 e); workerManager-only changes do not (g)
    body = strip_nine(client.workerPool("proj-test/aws-pool"))
    body["config"]["launchConfigs"][0]["launchConfig"]["ImageId"] = "ami-0000000000000000e"
    with pytest.raises(TaskclusterRestFailure) as e:
        client.updateWorkerPool("proj-test/aws-pool", body)
    assert "Launch config with ID `lc-3a9787fd2a3dc809c0fb` already exists" in e.value.body["message"]
    body = strip_nine(client.workerPool("proj-test/aws-pool"))
    body["config"]["launchConfigs"][1]["workerManager"]["capacityPerInstance"] = 2
    ok = client.updateWorkerPool("proj-test/aws-pool", body)
    assert ok["config"]["launchConfigs"][1]["workerManager"] == {"launchConfigId": "lc-explicit-1",
                                                                 "capacityPerInstance": 2}


def test_secrets_set_get_list_remove(emulator):
    s = secrets_client(emulator)
    assert s.set("project/servo/pw", {"secret": {"password": "p", "b": 1}, "expires": "2030-01-01T01:00:00+01:00"}) == {}
    got = s.get("project/servo/pw")
    assert got == {"secret": {"password": "p", "b": 1}, "expires": "2030-01-01T00:00:00.000Z"}
    assert list(got) == ["secret", "expires"]
    assert s.list()["secrets"] == ["live", "project/servo/pw"]  # the expired one is not listed
    with pytest.raises(TaskclusterRestFailure) as e:
        s.get("old")  # expired: the database returns nothing for it
    assert_error(_resp_of(e), 404, "ResourceNotFound", "get", "Secret not found")
    s.remove("project/servo/pw")
    s.remove("project/servo/pw")  # succeeds whether or not the secret exists
    with pytest.raises(TaskclusterRestFailure) as e:
        s.get("project/servo/pw")
    assert e.value.status_code == 404
    r = call(emulator, "PUT", "/api/secrets/v1/secret/x", {"secret": {"k": "v"}, "expires": "nope"},
             client="tc-ami-admin")
    body = assert_error(r, 400, "InputValidationError", "set",
                        "\nSchema Validation Failed!\nRejecting Schema: " + emulator
                        + "/schemas/secrets/v1/secret.json#\nErrors:\n  * data/expires must match format \"date-time\"")
    assert body["requestInfo"]["payload"] == {"secret": "(OMITTED)", "expires": "nope"}


def _resp_of(exc_info):
    """A requests.Response-like view of a client exception, for assert_error."""
    class R:
        status_code = exc_info.value.status_code
        text = json.dumps(exc_info.value.body)

        def json(self):
            return exc_info.value.body
    return R()


# ---------------------------------------------------------------------------- Hawk


WP = "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016"


def test_bad_mac_unknown_client_and_stale_timestamp(emulator):
    r = call(emulator, "GET", WP, token="wrong-key")
    assert r.headers["www-authenticate"] == "hawk"
    assert_error(r, 401, "AuthenticationFailed", "workerPool", "Unauthorized: Bad mac",
                 params={"workerPoolId": "proj-servo/win2016"}, payload={})
    r = call(emulator, "GET", WP, client="static/tester/ghost", token="x")
    assert_error(r, 401, "AuthenticationFailed", "workerPool", "Client with clientId 'static/tester/ghost' not found")
    assert r.headers["www-authenticate"] == "hawk"
    r = call(emulator, "GET", WP, ts=int(time.time()) - 16 * 60)
    assert_error(r, 401, "AuthenticationFailed", "workerPool", "Unauthorized: Stale timestamp")
    assert call(emulator, "GET", WP, ts=int(time.time()) + 14 * 60).status_code == 200
    # a bad MAC is refused even where no scopes are needed
    r = call(emulator, "GET", "/api/worker-manager/v1/ping", token="wrong-key")
    assert_error(r, 401, "AuthenticationFailed", "ping", "Unauthorized: Bad mac")


def test_mac_is_over_path_with_query_and_host_port(emulator):
    # Q5b: signed over the path alone (as the Rust crate does), sent with ?limit=1
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pools?limit=1",
             sign_url=emulator + "/api/worker-manager/v1/worker-pools")
    assert_error(r, 401, "AuthenticationFailed", "listWorkerPools", "Unauthorized: Bad mac", params={}, payload={})
    # Q5c: the same without a query succeeds; Q5a: signed with the query succeeds
    assert call(emulator, "GET", "/api/worker-manager/v1/worker-pools",
                sign_url=emulator + "/api/worker-manager/v1/worker-pools").status_code == 200
    assert call(emulator, "GET", "/api/worker-manager/v1/worker-pools?limit=1").status_code == 200
    # the MAC formula of the contract, computed here by hand: host and port from the Host header
    port = urlsplit(emulator).port
    ts, nonce, path = str(int(time.time())), "abc123", WP
    normalized = f"hawk.1.header\n{ts}\n{nonce}\nGET\n{path}\n127.0.0.1\n{port}\n\n\n"
    mac = base64.b64encode(hmac.new(b"root-token", normalized.encode(), hashlib.sha256).digest()).decode()
    auth = f'Hawk id="static/tester/root", ts="{ts}", nonce="{nonce}", mac="{mac}"'
    assert requests.get(emulator + path, headers={"Authorization": auth}).status_code == 200
    r = requests.get(emulator + path, headers={"Authorization": auth, "Host": f"127.0.0.1:{port + 1}"})
    assert r.status_code == 401


def test_payload_hash_checked_only_when_sent(emulator):
    body = servo_pool("proj-servo/win2016")
    del body["workerPoolId"]
    other = {**body, "description": "tampered"}
    r = call(emulator, "POST", WP, body, send_body=json.dumps(other))
    resp = r.json()
    assert r.status_code == 401 and resp["code"] == "AuthenticationFailed"
    assert resp["message"].startswith("Invalid payload hash: {{hash}}\nComputed payload hash: ")
    assert "This happens when your request carries a signed hash of the payload" in resp["message"]
    # no hash attribute at all: the body is not checked
    port = urlsplit(emulator).port
    ts = str(int(time.time()))
    normalized = f"hawk.1.header\n{ts}\nn1\nPOST\n{WP}\n127.0.0.1\n{port}\n\n\n"
    mac = base64.b64encode(hmac.new(b"root-token", normalized.encode(), hashlib.sha256).digest()).decode()
    r = requests.post(emulator + WP, data=json.dumps(other), headers={
        "Content-Type": "application/json", "Authorization": f'Hawk id="static/tester/root", ts="{ts}", nonce="n1", mac="{mac}"'})
    assert r.status_code == 200 and r.json()["description"] == "tampered"


def test_temporary_credentials_and_authorized_scopes(emulator):
    now = datetime.datetime.now(datetime.timezone.utc)
    temp = taskcluster.createTemporaryCredentials("issuer", CLIENTS["issuer"][0], now - datetime.timedelta(minutes=1),
                                                  now + datetime.timedelta(hours=1),
                                                  ["worker-manager:get-worker-pool:proj-servo/*"])
    client = taskcluster.WorkerManager({"rootUrl": emulator, "credentials": temp})
    assert client.workerPool("proj-servo/win2016")["workerPoolId"] == "proj-servo/win2016"
    with pytest.raises(TaskclusterRestFailure) as e:
        client.listWorkerPools()
    assert e.value.status_code == 403
    # named temporary credentials need auth:create-client:<name> on the issuer
    named = taskcluster.createTemporaryCredentials("issuer", CLIENTS["issuer"][0], now, now + datetime.timedelta(hours=1),
                                                   ["worker-manager:list-worker-pools"], name="named-temp")
    assert taskcluster.WorkerManager({"rootUrl": emulator, "credentials": named}).listWorkerPools()["workerPools"]
    bad = taskcluster.createTemporaryCredentials("issuer", CLIENTS["issuer"][0], now, now + datetime.timedelta(hours=1),
                                                 ["worker-manager:list-worker-pools"], name="other")
    with pytest.raises(TaskclusterAuthFailure) as e:
        taskcluster.WorkerManager({"rootUrl": emulator, "credentials": bad}).listWorkerPools()
    assert "doesn't have `auth:create-client:other` for supplied clientId" in e.value.body["message"]
    forged = dict(temp, accessToken="forged")
    with pytest.raises(TaskclusterAuthFailure):
        taskcluster.WorkerManager({"rootUrl": emulator, "credentials": forged}).workerPool("proj-servo/win2016")
    # authorizedScopes restrict a permanent client
    restricted = wm(emulator, "tc-ami-admin", authorizedScopes=["worker-manager:get-worker-pool:proj-servo/win2016"])
    assert restricted.workerPool("proj-servo/win2016")
    with pytest.raises(TaskclusterRestFailure) as e:
        restricted.listWorkerPools()
    assert e.value.status_code == 403
    with pytest.raises(TaskclusterAuthFailure) as e:
        wm(emulator, "tc-ami-readonly", authorizedScopes=["secrets:get:x"]).workerPool("proj-servo/win2016")
    assert e.value.body["message"].startswith("Supplied credentials do not satisfy authorizedScopes")


# ---------------------------------------------------------------------------- scopes


def test_no_credentials_message_has_no_request_info(emulator):
    body = {"providerId": "aws", "description": "", "owner": "me@example.com", "emailOnError": False,
            "config": {"minCapacity": 0, "maxCapacity": 1, "launchConfigs": []}}
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-test%2Fnoauth", body, client=None)
    expected = transcript_json_after("exp6.txt", "#### no Authorization header on scoped endpoint (PUT)")
    got = assert_error(r, 403, "InsufficientScopes", "createWorkerPool",
                       split_message(expected["message"], "createWorkerPool", "InsufficientScopes", 403)[0],
                       request_info=False)
    assert list(got) == list(expected)
    assert wm(emulator, client=None).ping()["alive"] is True  # no scopes needed: fine without credentials


def test_missing_scopes_messages(emulator):
    body = {"providerId": "aws", "description": "", "owner": "me@example.com", "emailOnError": False,
            "config": {"minCapacity": 0, "maxCapacity": 1, "launchConfigs": []}}
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-test%2Fother", body, client="static/tester/limited")
    expected = transcript_json_after("exp4.txt", "######## Q6 403 missing scope")
    assert_error(r, 403, "InsufficientScopes", "createWorkerPool",
                 split_message(expected["message"], "createWorkerPool", "InsufficientScopes", 403)[0],
                 params=expected["requestInfo"]["params"], payload=expected["requestInfo"]["payload"])
    # the read-only client updating: the official client surfaces the same 403
    ro = wm(emulator, "tc-ami-readonly")
    pool = strip_nine(ro.workerPool("proj-servo/win2016"))
    with pytest.raises(TaskclusterRestFailure) as e:
        ro.updateWorkerPool("proj-servo/win2016", pool)
    assert e.value.status_code == 403
    assert e.value.body["message"].startswith(
        "Client ID tc-ami-readonly does not have sufficient scopes and is missing the following scopes:\n\n```\n"
        '{\n  "AllOf": [\n    "worker-manager:manage-worker-pool:proj-servo/win2016",\n'
        '    "worker-manager:provider:aws"\n  ]\n}\n```')
    # only part missing: the missing scope alone, as a bare string
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pools", client="static/tester/limited")
    assert_error(r, 403, "InsufficientScopes", "listWorkerPools",
                 "Client ID static/tester/limited does not have sufficient scopes and is missing the following "
                 "scopes:\n\n```\nworker-manager:list-worker-pools\n```\n\nThis request requires the client to "
                 "satisfy the following scope expression:\n\n```\nworker-manager:list-worker-pools\n```")


# ---------------------------------------------------------------------------- routes and validation


def test_raw_slash_and_percent_encoded_ids_route_alike(emulator):
    a = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    b = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-servo/win2016")
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    c = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-servo/win2016/launch-configs")
    assert c.status_code == 200 and len(c.json()["workerPoolLaunchConfigs"]) == 2
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/NoSlash")
    assert_error(r, 400, "InvalidRequestArguments", "workerPool",
                 "Invalid URL patterns:\nURL parameter 'workerPoolId' given as 'NoSlash' must match regular "
                 "expression: '/^[a-zA-Z0-9-_]{1,38}\\/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$/'")


def test_schema_violations(emulator):
    client = wm(emulator)
    rejecting = "\nSchema Validation Failed!\nRejecting Schema: " + emulator + "/schemas/worker-manager/v1/"
    # exp5: API-level errors, ajv order (required before properties)
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-test%2Fbad1",
             {"providerId": "aws", "description": "", "emailOnError": "no", "config": {}})
    assert_error(r, 400, "InputValidationError", "createWorkerPool",
                 rejecting + "create-worker-pool-request.json#\nErrors:\n  * data must have required property "
                 "'owner'\n  * data/emailOnError must be boolean")
    # exp6: a provider-level error, the whole body
    exp6 = {"providerId": "aws", "description": "", "owner": "me@example.com", "emailOnError": False, "config": {
        "minCapacity": 0, "maxCapacity": 1, "launchConfigs": [{"region": "us-east-1", "launchConfig": {"ImageId": 123}}]}}
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-test%2Fq7x", exp6)
    expected = transcript_json_after("exp6.txt", "#### provider-level 400 full body")
    got = r.json()
    for v in (got, expected):
        v["message"] = split_message(v["message"], "createWorkerPool", "InputValidationError", 400)[0]
        del v["requestInfo"]["time"]
    expected["message"] = expected["message"].replace("http://127.0.0.1:8080", emulator)
    assert r.status_code == 400 and got == expected and keys_deep(got) == keys_deep(expected)
    base = strip_nine(client.workerPool("proj-servo/win2016"))

    def update_error(mutate):
        body = copy.deepcopy(base)
        mutate(body)
        r = call(emulator, "POST", WP, body)
        assert r.status_code == 400, r.text
        return split_message(r.json()["message"], "updateWorkerPool", r.json()["code"], 400)[0]

    lc0 = lambda b: b["config"]["launchConfigs"][0]  # noqa: E731
    assert update_error(lambda b: lc0(b)["launchConfig"].pop("ImageId")) == rejecting + \
        "config-aws.json#\nErrors:\n  * data/launchConfigs/0/launchConfig must have required property 'ImageId'"
    assert update_error(lambda b: lc0(b)["launchConfig"].update(
        IamInstanceProfile={"Arn": "x"}, UserData="x", MinCount=1, MaxCount=1)) == rejecting + \
        "config-aws.json#\nErrors:\n  * data/launchConfigs/0/launchConfig must NOT be valid"
    assert update_error(lambda b: lc0(b).update(bogus=1)) == rejecting + \
        "config-aws.json#\nErrors:\n  * data/launchConfigs/0 must NOT have additional properties: \"bogus\""
    assert update_error(lambda b: lc0(b)["workerManager"].update(launchConfigId="bad id!")) == rejecting + \
        "config-aws.json#\nErrors:\n  * data/launchConfigs/0/workerManager/launchConfigId must match pattern " \
        "\"^([a-zA-Z0-9-_]*)$\""
    assert update_error(lambda b: b.update(workerPoolId="Bad/Id")) == rejecting + \
        "update-worker-pool-request.json#\nErrors:\n  * data/workerPoolId must match pattern " \
        "\"^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$\""
    assert update_error(lambda b: b.update(workerPoolId="proj-servo/other")) == "Incorrect workerPoolId in request body"
    assert update_error(lambda b: b.update(extra=True)) == rejecting + \
        "update-worker-pool-request.json#\nErrors:\n  * data must NOT have additional properties: \"extra\""
    # accepted: UserData alone, any ImageId string, deploymentId in workerConfig
    body = copy.deepcopy(base)
    lc0(body)["launchConfig"].update(UserData="eA==", ImageId="")
    del lc0(body)["workerManager"]  # changed content: drop the injected id
    assert client.updateWorkerPool("proj-servo/win2016", body)["config"]["launchConfigs"]
    # malformed JSON and the wrong content type
    r = call(emulator, "POST", WP, base, send_body='{"providerId": "aws",')
    assert r.status_code == 400
    assert r.json()["code"] == "MalformedPayload"
    assert r.json()["message"].startswith("Failed to parse JSON: Expected double-quoted property name in JSON at "
                                          "position 21 (line 1 column 22)")
    assert r.json()["requestInfo"]["payload"] == '{"providerId": "aws",'


def test_schema_defaults_fill_in_lifecycle_as_ajv_usedefaults_does(emulator):
    client = wm(emulator)
    body = strip_nine(client.workerPool("proj-servo/win2016"))
    body["config"]["lifecycle"] = {"registrationTimeout": 1800}
    got = client.updateWorkerPool("proj-servo/win2016", body)
    assert got["config"]["lifecycle"] == {"registrationTimeout": 1800, "reregistrationTimeout": 345600,
                                          "queueInactivityTimeout": 7200}
    assert list(got["config"]) == ["lifecycle", "maxCapacity", "minCapacity", "launchConfigs"]  # jsonb order


def test_providers_conflicts_not_found_and_null_provider(emulator):
    client = wm(emulator)
    body = servo_pool("proj-servo/win2016")
    del body["workerPoolId"]
    with pytest.raises(TaskclusterRestFailure) as e:
        client.createWorkerPool("proj-servo/win2016", body)
    assert e.value.status_code == 409 and e.value.body["message"].startswith("Worker pool already exists\n\n---")
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-servo%2Fbroken", {**body, "providerId": "aws-broken"})
    assert_error(r, 503, "ProviderSetupFailed", "createWorkerPool", "Provider backend may be down or misconfigured")
    r = call(emulator, "PUT", "/api/worker-manager/v1/worker-pool/proj-servo%2Fnope", {**body, "providerId": "gcp"})
    assert_error(r, 400, "InputError", "createWorkerPool", "Invalid Provider")
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-test%2Fdoes-not-exist")
    assert_error(r, 404, "ResourceNotFound", "workerPool", "Worker pool does not exist",
                 params={"workerPoolId": "proj-test/does-not-exist"}, payload={})
    upd = {"providerId": "aws", "description": "", "owner": "me@example.com", "emailOnError": False,
           "config": {"minCapacity": 0, "maxCapacity": 1, "launchConfigs": []}}
    r = call(emulator, "POST", "/api/worker-manager/v1/worker-pool/proj-test%2Fdoes-not-exist", upd)
    assert_error(r, 404, "ResourceNotFound", "updateWorkerPool", "Worker pool does not exist", payload=upd)
    # providerId null-provider means delete: every launch config is archived
    pool = strip_nine(client.workerPool("proj-servo/win2016"))
    gone = client.updateWorkerPool("proj-servo/win2016", {**pool, "providerId": "null-provider"})
    assert gone["providerId"] == "null-provider" and "launchConfigs" not in gone["config"]
    lcs = client.listWorkerPoolLaunchConfigs("proj-servo/win2016", query={"includeArchived": "true"})
    assert all(lc["isArchived"] for lc in lcs["workerPoolLaunchConfigs"]) and len(lcs["workerPoolLaunchConfigs"]) == 2
    assert client.deleteWorkerPool("proj-servo/win2016")["providerId"] == "null-provider"
    assert requests.post(emulator + "/_emulator/expire").json()["workerPools"] == ["proj-servo/win2016"]
    with pytest.raises(TaskclusterRestFailure) as e:
        client.workerPool("proj-servo/win2016")
    assert e.value.status_code == 404


def test_list_worker_pools_pages_with_continuation_tokens(emulator):
    client = wm(emulator)
    for i in range(3):
        body = servo_pool(f"proj-servo/extra-{i}")
        del body["workerPoolId"]
        client.createWorkerPool(f"proj-servo/extra-{i}", body)
    first = client.listWorkerPools(query={"limit": 2})
    assert [p["workerPoolId"] for p in first["workerPools"]] == ["proj-servo/extra-0", "proj-servo/extra-1"]
    assert first["continuationToken"] == "jGzmdv8vpK"  # hashids('salt', 10) of offset 2, as lib-api makes it
    seen = []
    client.listWorkerPools(query={"limit": 2}, paginationHandler=lambda r: seen.extend(
        p["workerPoolId"] for p in r["workerPools"]))
    assert seen == ["proj-servo/extra-0", "proj-servo/extra-1", "proj-servo/extra-2", "proj-servo/win2016"]
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pools?bogus=1")
    assert_error(r, 400, "InvalidRequestArguments", "listWorkerPools", "Query-string parameter: bogus is not supported!")


# ---------------------------------------------------------------------------- control API


def test_fault_injection_503_burst_then_success_with_client_retries(emulator):
    r = requests.post(emulator + "/_emulator/faults", json={"fail": {"status": 503, "count": 3}})
    assert r.json()["fail"]["remaining"] == 3
    pool = wm(emulator).workerPool("proj-servo/win2016")  # the client retries 5xx
    assert pool["workerPoolId"] == "proj-servo/win2016"
    log = requests.get(emulator + "/_emulator/state").json()["requests"]
    assert [(e["status"], e["injectedFault"]) for e in log] == [(503, True)] * 3 + [(200, False)]
    assert all(e["clientId"] == "static/tester/root" and "token" not in json.dumps(e) for e in log)
    requests.post(emulator + "/_emulator/faults", json={"fail": {"status": 500, "count": 1}, "latency_ms": 50})
    started = time.monotonic()
    r = call(emulator, "GET", WP)
    assert time.monotonic() - started >= 0.05
    assert r.status_code == 500 and list(r.json()) == ["code", "message", "requestInfo"]
    head, _ = split_message(r.json()["message"], "workerPool", "InternalServerError", 500)
    assert re.fullmatch(r"Internal Server Error, incidentId [0-9a-f-]{36}\.", head)
    assert call(emulator, "GET", WP).status_code == 200


def test_concurrent_change_is_visible_after_k_requests(emulator):
    client = wm(emulator)
    before = client.workerPool("proj-servo/win2016")
    lcid = before["config"]["launchConfigs"][0]["workerManager"]["launchConfigId"]
    r = requests.post(emulator + "/_emulator/concurrent-change", json={
        "workerPoolId": "proj-servo/win2016", "after_requests": 1,
        "patch": {"description": "changed by someone else",
                  "config": {"launchConfigs": {lcid: {"launchConfig": {"InstanceType": "c5.9xlarge"}}}}}})
    assert r.json()["pending"] is True
    seen_by_diff = client.workerPool("proj-servo/win2016")  # request 1: still the old definition
    assert seen_by_diff == before
    time.sleep(0.002)
    at_push = client.workerPool("proj-servo/win2016")  # after it: someone else's change
    assert at_push["description"] == "changed by someone else"
    assert at_push["lastModified"] > before["lastModified"]
    changed = [lc for lc in at_push["config"]["launchConfigs"] if lc["launchConfig"]["InstanceType"] == "c5.9xlarge"]
    assert len(changed) == 1 and changed[0]["workerManager"]["launchConfigId"] != lcid  # a new id, as a client must
    state = requests.get(emulator + "/_emulator/state").json()
    assert state["concurrentChanges"]["applied"][0]["result"] == "applied"
    archived = [lc for lc in state["workerPools"]["proj-servo/win2016"]["launchConfigs"] if lc["isArchived"]]
    assert [lc["launchConfigId"] for lc in archived] == [lcid]
    assert requests.post(emulator + "/_emulator/concurrent-change", json={
        "workerPoolId": "proj-servo/nope", "patch": {}}).status_code == 404


# ---------------------------------------------------------------------------- the queue

SOURCE = "https://github.com/servo/servo"
QWP = "proj-servo/win2016"


def queue(root, client="static/tester/root"):
    creds = {"clientId": client, "accessToken": CLIENTS[client][0]} if client else {}
    return taskcluster.Queue({"rootUrl": root, "credentials": creds})


def task_def(**over):
    now = datetime.datetime.now(datetime.timezone.utc)
    d = {"taskQueueId": QWP, "created": now.isoformat(), "deadline": (now + datetime.timedelta(hours=2)).isoformat(),
         "metadata": {"name": "build", "description": "a test task", "owner": "servo@example.com", "source": SOURCE},
         "payload": {"command": ["git --version"], "maxRunTime": 600}}
    d.update(over)
    return d


def ctl(root, method, path, body=None):
    r = requests.request(method, root + "/_emulator/" + path, json=body)
    return r.status_code, r.json()


def advance(root, seconds):
    status, body = ctl(root, "POST", "advance", {"seconds": seconds})
    assert status == 200, body
    return body


def error_of(call_):
    with pytest.raises(TaskclusterRestFailure) as e:
        call_()
    return e.value


def new_pool(root, wpid, min_cap=0, max_cap=4, images=("ami-000000000000000a1",), check_secs=300, **gw):
    lcs = [{"region": "us-west-2", "launchConfig": {"ImageId": ami, "InstanceType": "c5.4xlarge"},
            "workerConfig": {"genericWorker": {"config": {"checkForNewDeploymentEverySecs": check_secs, **gw}}}}
           for ami in images]
    return wm(root).createWorkerPool(wpid, {"providerId": "aws", "description": "test", "owner": "o@example.com",
                                            "emailOnError": False, "config": {"minCapacity": min_cap,
                                                                              "maxCapacity": max_cap,
                                                                              "launchConfigs": lcs}})


def test_create_task_fills_defaults_and_is_idempotent(emulator):
    q = queue(emulator)
    tid = taskcluster.slugId()
    body = task_def()
    status = q.createTask(tid, body)["status"]
    assert status["state"] == "pending" and status["taskGroupId"] == tid and status["retriesLeft"] == 5
    assert list(status) == ["taskId", "provisionerId", "workerType", "taskQueueId", "schedulerId", "projectId",
                            "taskGroupId", "deadline", "expires", "retriesLeft", "state", "runs"]
    assert [list(r) for r in status["runs"]] == [["runId", "state", "reasonCreated", "scheduled"]]
    t = q.task(tid)
    assert list(t) == ["provisionerId", "workerType", "taskQueueId", "schedulerId", "projectId", "taskGroupId",
                       "dependencies", "requires", "routes", "priority", "retries", "created", "deadline", "expires",
                       "scopes", "payload", "metadata", "tags", "extra"]
    assert (t["provisionerId"], t["workerType"], t["schedulerId"], t["projectId"], t["priority"], t["requires"]) == \
        ("proj-servo", "win2016", "-", "none", "lowest", "all-completed")
    deadline = datetime.datetime.fromisoformat(t["deadline"].replace("Z", "+00:00"))
    assert t["expires"] == deadline.replace(year=deadline.year + 1).strftime("%Y-%m-%dT%H:%M:%S.") + t["deadline"][20:]
    # the same definition again: the same task (createTask is idempotent)
    assert q.createTask(tid, body)["status"] == q.status(tid)["status"]
    # provisionerId/workerType instead of taskQueueId: the same definition
    alt = {k: v for k, v in body.items() if k != "taskQueueId"}
    assert q.createTask(tid, {**alt, "provisionerId": "proj-servo", "workerType": "win2016"})["status"]["taskId"] == tid
    e = error_of(lambda: q.createTask(tid, {**body, "payload": {"maxRunTime": 601}}))
    assert e.status_code == 409 and e.body["code"] == "RequestConflict"
    head, _ = split_message(e.body["message"], "createTask", "RequestConflict", 409)
    assert head == f"taskId `{tid}` already used by another task.\nThis could be the result of faulty idempotency!"


def test_create_task_scopes(emulator):
    body = task_def(priority="high", routes=["index.servo.latest"], scopes=["secrets:get:project/servo/x"])
    tid = taskcluster.slugId()
    r = call(emulator, "PUT", f"/api/queue/v1/task/{tid}", body, client="queue-creator")
    required = {"AllOf": ["secrets:get:project/servo/x", "queue:route:index.servo.latest",
                          "queue:create-task:project:none", "queue:scheduler-id:-",
                          {"AnyOf": [f"queue:create-task:{p}:{QWP}" for p in ("highest", "very-high", "high")]}]}
    message = MISSING_SCOPES_TEXT("queue-creator", "secrets:get:project/servo/x", required)
    payload = {**body, "dependencies": [], "extra": {}, "projectId": "none", "requires": "all-completed",
               "retries": 5, "schedulerId": "-", "tags": {}, "provisionerId": "proj-servo", "workerType": "win2016"}
    assert_error(r, 403, "InsufficientScopes", "createTask", message, params={"taskId": tid}, payload=payload)
    # `high` scopes satisfy a lower priority; the task's own scopes are needed
    q = queue(emulator, "queue-creator")
    assert q.createTask(taskcluster.slugId(), task_def(priority="low", routes=["index.servo.latest"]))
    e = error_of(lambda: q.createTask(taskcluster.slugId(), task_def(priority="very-high")))
    assert e.status_code == 403
    assert '"queue:create-task:highest:proj-servo/win2016",\n        "queue:create-task:very-high:' in e.body["message"]
    # no credentials at all
    r = call(emulator, "PUT", f"/api/queue/v1/task/{tid}", task_def(), client=None)
    assert r.status_code == 403 and "requestInfo" not in r.json()
    assert r.json()["message"].startswith("This request requires Taskcluster credentials that satisfy the following "
                                          "scope expression:\n\n```\n{\n  \"AllOf\": [\n    \"queue:create-task:project:none\"")
    # reading needs queue:get-task:<taskId>
    r = call(emulator, "GET", f"/api/queue/v1/task/{tid}", client="tc-ami-admin")
    assert_error(r, 403, "InsufficientScopes", "task",
                 MISSING_SCOPES_TEXT("tc-ami-admin", f"queue:get-task:{tid}", f"queue:get-task:{tid}"))


def MISSING_SCOPES_TEXT(client, unsatisfied, required):
    js = lambda v: json.dumps(v, indent=2)  # noqa: E731
    return (f"Client ID {client} does not have sufficient scopes and is missing the following scopes:\n\n```\n"
            f"{unsatisfied if isinstance(unsatisfied, str) else js(unsatisfied)}\n```\n\n"
            "This request requires the client to satisfy the following scope expression:\n\n```\n"
            f"{required if isinstance(required, str) else js(required)}\n```")


def test_create_task_input_errors(emulator):
    q = queue(emulator)
    tid = taskcluster.slugId()
    body = task_def()
    del body["metadata"]
    r = call(emulator, "PUT", f"/api/queue/v1/task/{tid}", body)
    assert_error(r, 400, "InputValidationError", "createTask",
                 f"\nSchema Validation Failed!\nRejecting Schema: {emulator}/schemas/queue/v1/create-task-request.json#"
                 "\nErrors:\n  * data must have required property 'metadata'")
    r = call(emulator, "PUT", f"/api/queue/v1/task/{tid}",
             task_def(metadata={"name": "x", "description": "", "owner": "o", "source": "file:nope"}))
    assert_error(r, 400, "InputValidationError", "createTask",
                 f"\nSchema Validation Failed!\nRejecting Schema: {emulator}/schemas/queue/v1/create-task-request.json#"
                 "\nErrors:\n  * data/metadata/source must match pattern \"^(https?://|ssh://|git@)\"")
    now = datetime.datetime.now(datetime.timezone.utc)
    cases = [
        (task_def(created=(now - datetime.timedelta(minutes=2)).isoformat(),
                  deadline=(now - datetime.timedelta(minutes=1)).isoformat()), "`deadline` cannot be in the past"),
        (task_def(deadline=(now - datetime.timedelta(minutes=1)).isoformat()),
         "`deadline` cannot be later than `created`"),  # sic: the real message, for a deadline before created
        (task_def(created=(now + datetime.timedelta(minutes=20)).isoformat()),
         "`created` cannot be in the future (max 15min drift)"),
        (task_def(created=(now - datetime.timedelta(minutes=20)).isoformat()),
         "`created` cannot be in the past (max 15min drift)"),
        (task_def(deadline=(now + datetime.timedelta(days=6)).isoformat()),
         "`deadline` cannot be more than 5 days into the future"),
        (task_def(expires=(now + datetime.timedelta(minutes=30)).isoformat()), "`expires` cannot be before `deadline`"),
        (task_def(provisionerId="proj-servo", workerType="other"), 'taskQueueId must match "provisionerId/workerType"'),
        ({k: v for k, v in task_def().items() if k != "taskQueueId"},
         'at least a provisionerId and a workerType or a taskQueueId must be provided"'),
        (task_def(scopes=["queue:**"]), "scopes must not end with `**`"),
    ]
    for body, message in cases:
        e = error_of(lambda: q.createTask(taskcluster.slugId(), body))
        assert (e.status_code, e.body["code"]) == (400, "InputError"), message
        assert split_message(e.body["message"], "createTask", "InputError", 400)[0] == message
    missing = taskcluster.slugId()
    e = error_of(lambda: q.createTask(tid, task_def(dependencies=[missing])))
    assert split_message(e.body["message"], "createTask", "InputError", 400)[0] == (
        f"`task.dependencies` references non-existing tasks: \n * {missing}\n"
        "All taskIds in `task.dependencies` **must** exist\nbefore the task is created.\n")
    assert error_of(lambda: q.task(tid)).status_code == 404  # removed again
    r = call(emulator, "PUT", "/api/queue/v1/task/not-a-slug", task_def())
    assert_error(r, 400, "InvalidRequestArguments", "createTask",
                 "Invalid URL patterns:\nURL parameter 'taskId' given as 'not-a-slug' must match regular expression: "
                 "'/^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$/'")
    # one task group, one schedulerId
    group = taskcluster.slugId()
    q.createTask(taskcluster.slugId(), task_def(taskGroupId=group))
    e = error_of(lambda: q.createTask(taskcluster.slugId(), task_def(taskGroupId=group, schedulerId="other")))
    assert e.status_code == 409 and split_message(e.body["message"], "createTask", "RequestConflict", 409)[0] == (
        f"Task group `{group}` contains tasks with a schedulerId other\nthan `other`. All tasks in the same "
        "task-group must have\nthe same schedulerId.")


def test_queue_not_found(emulator):
    tid = taskcluster.slugId()
    for method, path, name, message in [
        ("GET", f"/task/{tid}", "task",
         f"`{tid}` does not correspond to a task that exists.\nAre you sure this task has already been submitted?"),
        ("GET", f"/task/{tid}/status", "status",
         f"`{tid}` does not correspond to a task that exists.\nAre you sure this task exists?"),
        ("POST", f"/task/{tid}/cancel", "cancelTask", f"Task `{tid}` not found. Are you sure it was created?"),
        ("GET", f"/task-group/{tid}/list", "listTaskGroup", f"No task-group with taskGroupId: `{tid}`"),
        ("GET", "/provisioners/proj-servo/worker-types/win2016/workers/us-west-2/i-1", "getWorker",
         "Worker with workerId `i-1`, workerGroup `us-west-2`,worker-type `win2016` and provisionerId `proj-servo` "
         "not found. Are you sure it was created?"),
    ]:
        r = call(emulator, method, "/api/queue/v1" + path)
        assert_error(r, 404, "ResourceNotFound", name, message)
    r = call(emulator, "GET", f"/api/queue/v1/task-group/{tid}/list?limit=x")
    assert_error(r, 400, "InvalidRequestArguments", "listTaskGroup",
                 'Query-string parameter: limit="x" does not match expression: /^[0-9]+$/')


def test_list_task_group_pages(emulator):
    q = queue(emulator, "queue-creator")
    group = taskcluster.slugId()
    ids = sorted(taskcluster.slugId() for _ in range(3))
    for tid in ids:
        q.createTask(tid, task_def(taskGroupId=group))
    first = q.listTaskGroup(group, query={"limit": 2})
    assert [t["status"]["taskId"] for t in first["tasks"]] == ids[:2]
    assert first["continuationToken"] == "jGzmdv8vpK"  # lib-api's paginateResults: hashids of offset 2
    assert (first["taskGroupId"], first["schedulerId"]) == (group, "-")
    assert list(first) == ["taskGroupId", "schedulerId", "expires", "tasks", "continuationToken"]
    assert list(first["tasks"][0]) == ["status", "task"]
    seen = []
    q.listTaskGroup(group, query={"limit": 2}, paginationHandler=lambda r: seen.extend(
        t["status"]["taskId"] for t in r["tasks"]))
    assert seen == ids
    r = call(emulator, "GET", f"/api/queue/v1/task-group/{group}/list", client="queue-reader")
    assert_error(r, 403, "InsufficientScopes", "listTaskGroup",
                 MISSING_SCOPES_TEXT("queue-reader", f"queue:list-task-group:{group}",
                                     f"queue:list-task-group:{group}"))


def test_cancel_task(emulator):
    q = queue(emulator)
    first, second = taskcluster.slugId(), taskcluster.slugId()
    q.createTask(first, task_def())
    q.createTask(second, task_def(dependencies=[first], taskGroupId=first))
    assert q.status(second)["status"]["state"] == "unscheduled"
    # cancelling needs one of three scope sets; the task's ids fill them in
    r = call(emulator, "POST", f"/api/queue/v1/task/{second}/cancel", client="queue-creator")
    required = {"AnyOf": [f"queue:cancel-task:-/{first}/{second}", "queue:cancel-task-in-project:none",
                          {"AllOf": ["queue:cancel-task", f"assume:scheduler-id:-/{first}"]}]}
    assert_error(r, 403, "InsufficientScopes", "cancelTask", MISSING_SCOPES_TEXT("queue-creator", required, required))
    # an unscheduled task gets a run, resolved at once
    s = q.cancelTask(second)["status"]
    assert s["state"] == "exception"
    assert [(r["state"], r["reasonCreated"], r["reasonResolved"]) for r in s["runs"]] == \
        [("exception", "exception", "canceled")]
    s = q.cancelTask(first)["status"]
    assert [(r["state"], r["reasonCreated"], r["reasonResolved"]) for r in s["runs"]] == \
        [("exception", "scheduled", "canceled")]
    assert q.cancelTask(first)["status"] == s  # resolved: nothing changes


def test_dependencies_schedule_when_resolved(emulator):
    q = queue(emulator)
    new_pool(emulator, "proj-servo/deps", max_cap=2)
    a, b, c = taskcluster.slugId(), taskcluster.slugId(), taskcluster.slugId()
    q.createTask(a, task_def(taskQueueId="proj-servo/deps"))
    q.createTask(b, task_def(taskQueueId="proj-servo/deps", dependencies=[a], taskGroupId=a))
    q.createTask(c, task_def(taskQueueId="proj-servo/deps", dependencies=[a], requires="all-resolved", taskGroupId=a))
    ctl(emulator, "POST", "task-outcome", {"taskId": a, "outcome": "failed"})
    advance(emulator, 60 + 5 + 600)
    assert q.status(a)["status"]["state"] == "failed"
    assert q.status(b)["status"]["state"] == "unscheduled"  # all-completed: stays blocked
    assert q.status(c)["status"]["state"] in ("pending", "running")  # all-resolved: scheduled


# ---------------------------------------------------------------------------- simulated workers and tasks


def test_task_runs_on_a_simulated_worker(emulator):
    q, client = queue(emulator), wm(emulator)
    new_pool(emulator, "proj-servo/sim", min_cap=0, max_cap=3)
    assert client.listWorkersForWorkerPool("proj-servo/sim") == {"workers": []}
    tid = taskcluster.slugId()
    q.createTask(tid, task_def(taskQueueId="proj-servo/sim"))
    advance(emulator, 1)
    [w] = client.listWorkersForWorkerPool("proj-servo/sim")["workers"]  # one pending task: one worker requested
    assert list(w) == ["workerPoolId", "workerGroup", "workerId", "providerId", "created", "expires", "lastModified",
                       "lastChecked", "capacity", "state", "launchConfigId"]
    lcid = client.workerPool("proj-servo/sim")["config"]["launchConfigs"][0]["workerManager"]["launchConfigId"]
    assert (w["state"], w["workerGroup"], w["providerId"], w["capacity"], w["launchConfigId"]) == \
        ("requested", "us-west-2", "aws", 1, lcid)
    assert re.fullmatch(r"i-[0-9a-f]{17}", w["workerId"])
    assert queue(emulator).listWorkers("proj-servo", "sim") == {"workers": []}  # not seen by the queue yet
    advance(emulator, 59)  # booted 60 s after it was requested: running, claims the pending task at once
    assert client.worker("proj-servo/sim", "us-west-2", w["workerId"])["state"] == "running"
    s = q.status(tid)["status"]
    assert s["state"] == "running" and s["runs"][0]["workerId"] == w["workerId"]
    assert list(s["runs"][0]) == ["runId", "state", "reasonCreated", "workerGroup", "workerId", "takenUntil",
                                  "scheduled", "started"]
    [qw] = q.listWorkers("proj-servo", "sim")["workers"]
    assert list(qw) == ["workerGroup", "workerId", "firstClaim", "lastDateActive", "latestTask"]
    assert qw["latestTask"] == {"taskId": tid, "runId": 0}
    full = q.getWorker("proj-servo", "sim", "us-west-2", w["workerId"])
    assert full["recentTasks"] == [{"taskId": tid, "runId": 0}] and full["taskQueueId"] == "proj-servo/sim"
    wml = client.listWorkers("proj-servo", "sim")["workers"]
    assert [(x["state"], x["launchConfigId"], x["latestTask"]["taskId"]) for x in wml] == [("running", lcid, tid)]
    advance(emulator, 599)
    assert q.status(tid)["status"]["state"] == "running"
    advance(emulator, 1)  # maxRunTime 600 after the claim
    s = q.status(tid)["status"]
    assert s["state"] == "completed" and s["runs"][0]["reasonResolved"] == "completed"
    assert list(s["runs"][0])[-1] == "resolved"


def test_forced_outcomes_and_malformed_payloads(emulator):
    q = queue(emulator)
    new_pool(emulator, "proj-servo/out", max_cap=4)
    failed, retried, malformed = taskcluster.slugId(), taskcluster.slugId(), taskcluster.slugId()
    q.createTask(failed, task_def(taskQueueId="proj-servo/out"))
    q.createTask(retried, task_def(taskQueueId="proj-servo/out", retries=1))
    q.createTask(malformed, task_def(taskQueueId="proj-servo/out", payload={"command": ["true"]}))
    assert ctl(emulator, "POST", "task-outcome", {"taskId": failed, "outcome": "failed"})[0] == 200
    assert ctl(emulator, "POST", "task-outcome", {"taskId": retried, "outcome": "exception",
                                                  "reason": "worker-shutdown"})[0] == 200
    advance(emulator, 65)
    assert q.status(malformed)["status"]["runs"][0]["reasonResolved"] == "malformed-payload"
    advance(emulator, 600)
    assert q.status(failed)["status"]["runs"][0]["state"] == "failed"
    runs = q.status(retried)["status"]["runs"]
    assert [(r["state"], r["reasonCreated"], r.get("reasonResolved")) for r in runs][:2] == \
        [("exception", "scheduled", "worker-shutdown"), (runs[1]["state"], "retry", runs[1].get("reasonResolved"))]
    assert q.status(retried)["status"]["retriesLeft"] == 0
    tasks = {t["taskId"]: t for t in ctl(emulator, "GET", "tasks")[1]["tasks"]}
    assert "maxRunTime must be an integer from 1 to 86400" in tasks[malformed]["log"][0]
    assert ctl(emulator, "POST", "task-outcome", {"taskId": failed, "outcome": "completed"})[0] == 409
    assert ctl(emulator, "POST", "task-outcome", {"taskId": retried, "outcome": "maybe"})[0] == 400


def test_decision_task_creates_its_children_in_its_group(emulator):
    q = queue(emulator)
    new_pool(emulator, "proj-servo/dec", max_cap=3)
    decision = taskcluster.slugId()
    child_a = taskcluster.slugId()
    children = [{"taskId": child_a, "payload": {"maxRunTime": 100}},
                {"dependencies": [child_a], "payload": {"maxRunTime": 50}, "metadata": {
                    "name": "tests", "description": "", "owner": "servo@example.com", "source": SOURCE}}]
    scopes = ["queue:create-task:highest:proj-servo/dec", "queue:scheduler-id:-", "queue:create-task:project:none"]
    q.createTask(decision, task_def(taskQueueId="proj-servo/dec", scopes=scopes, payload={
        "maxRunTime": 30, "env": {"TC_AMI_SANDBOX_CHILDREN": json.dumps(children)}}))
    advance(emulator, 65)
    group = q.listTaskGroup(decision)["tasks"]
    assert len(group) == 3 and {t["task"]["taskGroupId"] for t in group} == {decision}
    second = next(t for t in group if t["task"]["dependencies"] == [child_a])
    assert second["task"]["metadata"]["name"] == "tests" and second["status"]["state"] == "unscheduled"
    assert q.task(child_a)["metadata"]["name"] == "build / child 0"
    advance(emulator, 60 + 5 + 100 + 5 + 50)
    states = {t["status"]["taskId"]: t["status"]["state"] for t in q.listTaskGroup(decision)["tasks"]}
    assert set(states.values()) == {"completed"}, states
    # a decision task whose scopes do not cover its children fails, and says why
    poor = taskcluster.slugId()
    q.createTask(poor, task_def(taskQueueId="proj-servo/dec", payload={
        "maxRunTime": 30, "env": {"TC_AMI_SANDBOX_CHILDREN": json.dumps([{}])}}))
    advance(emulator, 5 + 30)
    assert q.status(poor)["status"]["state"] == "failed"
    log = next(t for t in ctl(emulator, "GET", "tasks")[1]["tasks"] if t["taskId"] == poor)["log"]
    assert "refused: InsufficientScopes" in log[0] and len(q.listTaskGroup(poor)["tasks"]) == 1


def test_archived_launch_config_workers_stop_once_idle(emulator):
    client = wm(emulator)
    pool = new_pool(emulator, "proj-servo/roll", min_cap=2, max_cap=4, check_secs=300)
    old = pool["config"]["launchConfigs"][0]["workerManager"]["launchConfigId"]
    advance(emulator, 60)
    added = ctl(emulator, "POST", "workers", {"workerPoolId": "proj-servo/roll", "workers": [
        {"state": "running", "workerId": "i-busy", "taskMaxRunTime": 3000}]})[1]["workers"]
    assert added[0]["task"] is not None
    ws = client.listWorkersForWorkerPool("proj-servo/roll")["workers"]
    assert sorted(w["state"] for w in ws) == ["running"] * 3
    # a deploy: a new image, a new launch config id, the old one archived
    body = strip_nine(client.workerPool("proj-servo/roll"))
    lc = body["config"]["launchConfigs"][0]
    del lc["workerManager"]
    lc["launchConfig"]["ImageId"] = "ami-000000000000000b2"
    new = client.updateWorkerPool("proj-servo/roll", body)["config"]["launchConfigs"][0]["workerManager"]["launchConfigId"]
    assert new != old
    advance(emulator, 299)
    assert {w["state"] for w in client.listWorkersForWorkerPool("proj-servo/roll")["workers"]} == {"running"}
    advance(emulator, 1)  # the deployment check of the two booted at the same time
    by_id = {w["workerId"]: w for w in client.listWorkersForWorkerPool("proj-servo/roll")["workers"]}
    assert by_id["i-busy"]["state"] == "running"
    idle_old = [w for w in by_id.values() if w["launchConfigId"] == old and w["workerId"] != "i-busy"]
    assert [w["state"] for w in idle_old] == ["stopping", "stopping"]
    advance(emulator, 30)
    assert {w["state"] for w in client.listWorkersForWorkerPool("proj-servo/roll", query={
        "launchConfigId": old})["workers"] if w["workerId"] != "i-busy"} == {"stopped"}
    advance(emulator, 60)  # a replacement on the new launch config: minCapacity counts the busy old worker
    running_new = client.listWorkersForWorkerPool("proj-servo/roll", query={"launchConfigId": new, "state": "running"})
    assert len(running_new["workers"]) == 1
    advance(emulator, 3000)  # the busy worker finishes its task, then goes at its next check
    advance(emulator, 300 + 30)
    assert client.worker("proj-servo/roll", "us-west-2", "i-busy")["state"] == "stopped"
    advance(emulator, 60)
    running_new = client.listWorkersForWorkerPool("proj-servo/roll", query={"launchConfigId": new, "state": "running"})
    assert len(running_new["workers"]) == 2
    busy_task = added[0]["task"]["taskId"]
    assert queue(emulator).status(busy_task)["status"]["state"] == "completed"


def test_worker_endpoints_paging_scopes_and_removal(emulator):
    client = wm(emulator)
    new_pool(emulator, "proj-servo/many", max_cap=10)
    ids = [f"i-{n:017x}" for n in range(5)]
    status, body = ctl(emulator, "POST", "workers", {"workerPoolId": "proj-servo/many", "workers": [
        {"state": s, "workerId": i} for s, i in zip(["running", "running", "requested", "stopping", "stopped"], ids)]})
    assert status == 200, body
    page = client.listWorkersForWorkerPool("proj-servo/many", query={"limit": 2})
    assert [w["workerId"] for w in page["workers"]] == ids[:2] and page["continuationToken"] == "jGzmdv8vpK"
    seen = []
    client.listWorkersForWorkerPool("proj-servo/many", query={"limit": 2}, paginationHandler=lambda r: seen.extend(
        w["workerId"] for w in r["workers"]))
    assert seen == ids
    assert [w["state"] for w in client.listWorkersForWorkerPool(
        "proj-servo/many", query={"state": "stopping"})["workers"]] == ["stopping"]
    r = call(emulator, "GET", "/api/worker-manager/v1/workers/proj-servo%2Fnope")
    assert_error(r, 404, "ResourceNotFound", "listWorkersForWorkerPool", "Worker Pool does not exist")
    r = call(emulator, "GET", "/api/worker-manager/v1/workers/proj-servo%2Fmany/us-west-2/i-nope")
    assert_error(r, 404, "ResourceNotFound", "worker", "Worker not found",
                 params={"workerPoolId": "proj-servo/many", "workerGroup": "us-west-2", "workerId": "i-nope"})
    r = call(emulator, "GET", "/api/worker-manager/v1/workers/proj-servo%2Fmany", client="static/tester/limited")
    assert_error(r, 403, "InsufficientScopes", "listWorkersForWorkerPool", MISSING_SCOPES_TEXT(
        "static/tester/limited", "worker-manager:list-workers:proj-servo/many",
        "worker-manager:list-workers:proj-servo/many"))
    # the queue knows the workers that ran (from their first claimWork), worker-manager all of them
    q = queue(emulator)
    page = q.listWorkers("proj-servo", "many", query={"limit": 2})
    assert [w["workerId"] for w in page["workers"]] == ids[:2] and page["continuationToken"] == "jGzmdv8vpK"
    seen = []
    q.listWorkers("proj-servo", "many", query={"limit": 2, "quarantined": "false"},
                  paginationHandler=lambda r: seen.extend(w["workerId"] for w in r["workers"]))
    assert seen == [ids[0], ids[1], ids[3], ids[4]]  # the requested one never claimed
    assert q.listWorkers("proj-servo", "many", query={"quarantined": "true"}) == {"workers": []}
    wml = client.listWorkers("proj-servo", "many", query={"workerState": "running"})["workers"]
    assert [(w["workerId"], w["state"]) for w in wml] == [(ids[0], "running"), (ids[1], "running")]
    r = call(emulator, "GET", "/api/queue/v1/provisioners/proj-servo/worker-types/many/workers", client="queue-reader")
    assert_error(r, 403, "InsufficientScopes", "listWorkers", MISSING_SCOPES_TEXT(
        "queue-reader", "queue:list-workers:proj-servo/many", "queue:list-workers:proj-servo/many"))
    path = f"/api/worker-manager/v1/workers/proj-servo%2Fmany/us-west-2/{ids[0]}"
    r = call(emulator, "DELETE", path, client="queue-reader")
    scope = f"worker-manager:remove-worker:proj-servo/many/us-west-2/{ids[0]}"
    assert_error(r, 403, "InsufficientScopes", "removeWorker", MISSING_SCOPES_TEXT("queue-reader", scope, scope))
    assert client.removeWorker("proj-servo/many", "us-west-2", ids[0]) == {}
    assert client.worker("proj-servo/many", "us-west-2", ids[0])["state"] == "stopping"
    advance(emulator, 30)
    assert client.worker("proj-servo/many", "us-west-2", ids[0])["state"] == "stopped"
    # removing a busy worker: its run is lost; the queue retries it when the claim expires
    busy = ctl(emulator, "POST", "workers", {"workerPoolId": "proj-servo/many", "workers": [
        {"state": "running", "workerId": "i-busy", "taskMaxRunTime": 3600}]})[1]["workers"][0]
    client.removeWorker("proj-servo/many", "us-west-2", "i-busy")
    advance(emulator, 1200)
    runs = queue(emulator).status(busy["task"]["taskId"])["status"]["runs"]
    assert (runs[0]["state"], runs[0]["reasonResolved"], runs[1]["reasonCreated"]) == \
        ("exception", "claim-expired", "retry")


def test_delete_worker_pool_waits_for_its_workers(emulator):
    client = wm(emulator)
    new_pool(emulator, "proj-servo/tmp-try", min_cap=1, check_secs=1800)
    advance(emulator, 60)
    [w] = client.listWorkersForWorkerPool("proj-servo/tmp-try")["workers"]
    assert w["state"] == "running"
    gone = client.deleteWorkerPool("proj-servo/tmp-try")
    assert gone["providerId"] == "null-provider" and "launchConfigs" not in gone["config"]
    assert "proj-servo/tmp-try" in [p["workerPoolId"] for p in client.listWorkerPools()["workerPools"]]
    advance(emulator, 600)  # the pool-expiry job ran (every 600 s), but the worker is still running
    assert client.workerPool("proj-servo/tmp-try")["providerId"] == "null-provider"
    assert client.worker("proj-servo/tmp-try", w["workerGroup"], w["workerId"])["state"] == "running"
    advance(emulator, 1800)  # its deployment check (every 1800 s): it stops; the next expiry removes the pool
    r = call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-servo%2Ftmp-try")
    assert_error(r, 404, "ResourceNotFound", "workerPool", "Worker pool does not exist")


def test_control_endpoints_validate_and_the_clock_runs(emulator):
    assert ctl(emulator, "POST", "workers", {"workerPoolId": "proj-servo/nope", "workers": [{}]})[0] == 404
    for bad in [{"workerPoolId": QWP, "workers": []},
                {"workerPoolId": QWP, "workers": [{"state": "sleeping"}]},
                {"workerPoolId": QWP, "workers": [{"launchConfigId": "lc-unknown"}]},
                {"workerPoolId": QWP, "workers": [{"state": "requested", "taskMaxRunTime": 5}]},
                {"workerPoolId": QWP, "workers": [{"workerId": "bad/id"}]}]:
        assert ctl(emulator, "POST", "workers", bad)[0] == 400, bad
    assert ctl(emulator, "POST", "time-scale", {"timeScale": -1})[0] == 400
    assert ctl(emulator, "POST", "advance", {"seconds": "1"})[0] == 400
    assert ctl(emulator, "GET", "workers")[1]["workers"] == []
    # the real clock: 1 simulated second per real millisecond
    assert ctl(emulator, "POST", "time-scale", {"timeScale": 0.001})[1]["timeScale"] == 0.001
    tid = taskcluster.slugId()
    queue(emulator).createTask(tid, task_def(payload={"maxRunTime": 60}))
    deadline = time.monotonic() + 30
    while queue(emulator).status(tid)["status"]["state"] != "completed":
        assert time.monotonic() < deadline, "the simulated clock did not run"
        time.sleep(0.05)
    workers = ctl(emulator, "GET", "workers")[1]["workers"]
    assert workers[0]["queue"]["recentTasks"] == [{"taskId": tid, "runId": 0}]


@pytest.fixture
def emulator_with_ec2(tmp_path):
    """The EC2 sandbox and an emulator that checks worker images there (--ec2-url)."""
    procs = []
    with open(tmp_path / "ec2.log", "w") as err:
        ec2p = subprocess.Popen([sys.executable, os.path.join(SANDBOX, "ec2_sandbox.py"), "--port", "0",
                                 "--parent-pid", str(os.getpid())], stdout=subprocess.PIPE, stderr=err, text=True)
    procs.append(ec2p)
    try:
        line = ec2p.stdout.readline()
        assert line.startswith("READY "), (line, (tmp_path / "ec2.log").read_text())
        ec2_url = line.split()[1]
        (tmp_path / "seed.json").write_text(json.dumps({**SEED, "workerPools": []}))
        with open(tmp_path / "tc.log", "w") as err:
            tcp = subprocess.Popen([sys.executable, os.path.join(SANDBOX, "tc_emulator.py"), "--seed",
                                    str(tmp_path / "seed.json"), "--ec2-url", ec2_url, "--quiet"],
                                   stdout=subprocess.PIPE, stderr=err, text=True)
        procs.append(tcp)
        line = tcp.stdout.readline()
        assert line.startswith("READY "), (line, (tmp_path / "tc.log").read_text())
        yield line.split()[1], ec2_url
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0
    assert "Traceback" not in (tmp_path / "tc.log").read_text()


def test_worker_images_are_checked_in_the_ec2_sandbox(emulator_with_ec2):
    import boto3
    root, ec2_url = emulator_with_ec2
    available, pending, missing = "ami-debb7b63493b4360c", "ami-bbc33a8682d2d1a1d", "ami-0000000000000bad0"
    assert ctl(root, "GET", "state")[1]["simulation"]["ec2Url"] == ec2_url
    for name, ami in (("good", available), ("pending", pending), ("missing", missing)):
        new_pool(root, f"proj-servo/{name}", images=(ami,))
    q = queue(root)
    tasks = {name: taskcluster.slugId() for name in ("good", "pending", "missing")}
    for name, tid in tasks.items():
        q.createTask(tid, task_def(taskQueueId=f"proj-servo/{name}"))
    advance(root, 60 + 600)
    assert q.status(tasks["good"])["status"]["state"] == "completed"
    for name in ("pending", "missing"):  # no usable image: no worker, the task waits
        assert q.status(tasks[name])["status"]["state"] == "pending"
        assert wm(root).listWorkersForWorkerPool(f"proj-servo/{name}")["workers"] == []
    # the outcome marker: a tag on the image, in the launch config's region
    ec2 = boto3.client("ec2", region_name="us-west-2", endpoint_url=ec2_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    ec2.create_tags(Resources=[available], Tags=[{"Key": "sandbox:task-outcome", "Value": "failed"}])
    time.sleep(1.1)  # the emulator caches DescribeImages answers for a second
    failing = taskcluster.slugId()
    q.createTask(failing, task_def(taskQueueId="proj-servo/good"))
    advance(root, 5 + 600)
    s = q.status(failing)["status"]
    assert (s["state"], s["runs"][0]["reasonResolved"]) == ("failed", "failed")
    log = next(t for t in ctl(root, "GET", "tasks")[1]["tasks"] if t["taskId"] == failing)["log"]
    assert log == [f"run 0: image {available} carries sandbox:task-outcome=failed"]
