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
from tc_emulator_lib.store import launch_config_id  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared", "taskcluster-api")

CLIENTS = {
    "static/tester/root": ("root-token", ["*"]),
    "static/tester/limited": ("limited-token", ["worker-manager:get-worker-pool:*"]),
    "tc-ami-admin": ("admin-token", ["worker-manager:*", "secrets:*"]),
    "tc-ami-readonly": ("readonly-token", ["worker-manager:get-worker-pool:*", "worker-manager:list-worker-pools"]),
    "issuer": ("issuer-token", ["worker-manager:*", "auth:create-client:named-temp"]),
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
    ours = os.path.join(SANDBOX, "tc_emulator_lib", "generated")
    theirs = os.path.join(SHARED, "generated")
    if not os.path.isdir(theirs):
        pytest.skip("../shared/taskcluster-api/generated not available")
    for d, _, files in os.walk(theirs):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), theirs)
            with open(os.path.join(theirs, rel), "rb") as a, open(os.path.join(ours, rel), "rb") as b:
                assert a.read() == b.read(), rel


def test_sandbox_seed_loads_and_is_realistic():
    from tc_emulator_lib.server import Emulator
    em = Emulator(os.path.join(SANDBOX, "seed", "taskcluster.json"))
    assert set(em.store.clients) == {"tc-ami-admin", "tc-ami-readonly"}
    assert em.store.clients["tc-ami-admin"]["scopes"] == ["worker-manager:*", "secrets:*"]
    for wpid in ("proj-servo/win2016", "proj-servo/win2016-staging"):
        view = em.store.pools[wpid].view()
        assert view["providerId"] == "aws"
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
