"""Tests of the taskcluster-proxy stand-in (sandbox/tc_proxy.py) in front of the emulator.

Run: $(scripts/ensure-venv) -m pytest sandbox/tests/test_tc_proxy.py

The official Python client is pointed at the proxy with no credentials at all, as a task's code
would be; the proxy signs with the client it was started with.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
import taskcluster

import test_tc_emulator as base
import test_tc_hooks as hooks_tests

SANDBOX = base.SANDBOX
PROXY_CLIENT = ("proxy-client", "proxy-client-token", [
    "worker-manager:get-worker-pool:*", "worker-manager:list-worker-pools", "secrets:get:live",
    "secrets:set:from-proxy", "queue:*", "hooks:*", "assume:hook-id:proj-servo/*"])
SEED = json.loads(json.dumps(hooks_tests.SEED))
SEED["clients"].append({"clientId": PROXY_CLIENT[0], "accessToken": PROXY_CLIENT[1], "scopes": PROXY_CLIENT[2]})
SEED["secrets"]["live"] = {"secret": {"password": "p"}, "expires": "3000-01-01T00:00:00.000Z"}
SEED["workerPools"].append(base.servo_pool("proj-servo/win2016-staging"))
SEED["workerPools"].append(base.servo_pool("proj-servo/win2019"))


def start(args, tmp, name, env=None):
    err = open(tmp / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=err, text=True,
                            env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    m = re.fullmatch(r"READY (http://127\.0\.0\.1:\d+)\n", line)
    assert m, f"bad READY line {line!r}; stderr: {(tmp / f'{name}.log').read_text()}"
    return proc, m.group(1)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stdout.read() == "", "only the READY line goes to stdout"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tc-proxy")
    (tmp / "seed.json").write_text(json.dumps(SEED))
    proc, root = start([os.path.join(SANDBOX, "tc_emulator.py"), "--port", "0", "--seed", str(tmp / "seed.json"),
                        "--quiet"], tmp, "emulator")
    yield root
    stop(proc)


@pytest.fixture(autouse=True)
def fresh(emulator):
    assert requests.post(emulator + "/_emulator/reset").status_code == 200


@pytest.fixture
def proxy(emulator, tmp_path):
    """proxy(scopes=(), client=PROXY_CLIENT[:2], extra=()) -> URL of a proxy signing as that client."""
    started = []

    def make(scopes=(), client=PROXY_CLIENT[:2], extra=(), root=None, certificate=None):
        env = {"TASKCLUSTER_CLIENT_ID": client[0], "TASKCLUSTER_ACCESS_TOKEN": client[1]}
        if certificate is not None:
            env["TASKCLUSTER_CERTIFICATE"] = certificate
        proc, url = start([os.path.join(SANDBOX, "tc_proxy.py"), "--port", "0", "--root-url", root or emulator,
                           "--parent-pid", str(os.getpid()), *extra, *scopes], tmp_path, f"proxy{len(started)}", env)
        started.append(proc)
        return url
    yield make
    for proc in started:
        stop(proc)
    for log in tmp_path.glob("proxy*.log"):
        assert PROXY_CLIENT[1] not in log.read_text(), "the access token never appears in the logs"


def unsigned(cls, url):
    return cls({"rootUrl": url})  # no credentials: the proxy signs


def failure(call_):
    with pytest.raises(taskcluster.exceptions.TaskclusterFailure) as e:
        call_()
    return e.value


def test_the_official_client_without_credentials_reaches_every_service(emulator, proxy):
    url = proxy()
    wm = unsigned(taskcluster.WorkerManager, url)
    assert wm.workerPool("proj-servo/win2016")["workerPoolId"] == "proj-servo/win2016"
    # the query string is signed with the path: paging works
    page = wm.listWorkerPools(query={"limit": 1})
    assert len(page["workerPools"]) == 1 and page["continuationToken"]
    seen = []
    wm.listWorkerPools(query={"limit": 1}, paginationHandler=lambda r: seen.extend(
        p["workerPoolId"] for p in r["workerPools"]))
    assert seen == ["proj-servo/win2016", "proj-servo/win2016-staging", "proj-servo/win2019"]
    assert unsigned(taskcluster.Secrets, url).get("live")["secret"] == {"password": "p"}
    q = unsigned(taskcluster.Queue, url)
    tid = taskcluster.slugId()
    assert q.createTask(tid, base.task_def())["status"]["taskId"] == tid
    assert q.task(tid)["metadata"]["name"] == "build"
    h = unsigned(taskcluster.Hooks, url)
    h.createHook("proj-servo", "nightly-win2016", hooks_tests.hook_def())
    fired = h.triggerHook("proj-servo", "nightly-win2016", {"worker": "win2016"})
    assert q.task(fired["taskId"])["metadata"]["description"] == "fired by proxy-client"
    # the emulator saw the proxy's client, signed (its request log)
    log = requests.get(emulator + "/_emulator/state").json()["requests"]
    assert {(r["clientId"], r["authenticated"]) for r in log} == {("proxy-client", True)}
    assert any(r["path"] == "/api/worker-manager/v1/worker-pools?limit=1" for r in log)


def test_answers_pass_through_unchanged(emulator, proxy):
    url = proxy()
    # a scope the client lacks: the emulator's 403, body and status as they are
    e = failure(lambda: unsigned(taskcluster.Secrets, url).get("other"))
    assert (e.status_code, e.body["code"]) == (403, "InsufficientScopes")
    message = e.body["message"].partition("\n\n---\n\n")[0]
    assert message == base.MISSING_SCOPES_TEXT("proxy-client", "secrets:get:other", "secrets:get:other")
    r = requests.get(url + "/api/worker-manager/v1/worker-pool/proj-servo%2Fnope")
    direct = base.call(emulator, "GET", "/api/worker-manager/v1/worker-pool/proj-servo%2Fnope",
                       client="static/tester/root")
    assert (r.status_code, r.json()["code"]) == (direct.status_code, direct.json()["code"]) == (404, "ResourceNotFound")
    assert r.headers["Content-Type"] == direct.headers["Content-Type"]
    assert r.headers["X-Taskcluster-Endpoint"] == emulator + "/api/worker-manager/v1/worker-pool/proj-servo%2Fnope"
    assert r.headers["X-Taskcluster-Proxy-Perm-ClientId"] == "proxy-client"
    # a body without a Content-Type gets application/json (routes.go, #3521)
    r = requests.put(url + "/api/secrets/v1/secret/from-proxy",
                     data=json.dumps({"secret": {"a": 1}, "expires": "3000-01-01T00:00:00.000Z"}))
    assert r.status_code == 200, r.text
    state = requests.get(emulator + "/_emulator/state").json()
    assert state["secrets"]["from-proxy"]["secret"] == {"a": 1}
    # the legacy form /<service>/<version>/<path>
    r = requests.get(url + "/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    assert r.status_code == 200 and r.json()["workerPoolId"] == "proj-servo/win2016"
    # the proxy's own errors (plain text)
    r = requests.get(url + "/api/queue")
    assert (r.status_code, r.text) == (404, "invalid /api path")
    r = requests.get(url + "/not_a_host/v1/ping")
    assert (r.status_code, r.text) == (404, "Unkown taskcluster service: not_a_host is not a valid taskcluster service")


def test_authorized_scopes_restrict_the_client(proxy):
    url = proxy(scopes=["worker-manager:get-worker-pool:proj-servo/win2016"])
    wm = unsigned(taskcluster.WorkerManager, url)
    assert wm.workerPool("proj-servo/win2016")
    e = failure(lambda: wm.listWorkerPools())
    assert e.status_code == 403
    assert e.body["message"].startswith("Client ID proxy-client does not have sufficient scopes")
    r = requests.get(url + "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    assert r.headers["X-Taskcluster-Authorized-Scopes"] == '["worker-manager:get-worker-pool:proj-servo/win2016"]'
    # scopes the client does not have cannot be authorized
    url = proxy(scopes=["secrets:get:other"])
    e = failure(lambda: unsigned(taskcluster.Secrets, url).get("live"))
    assert e.status_code == 401 and "Supplied credentials do not satisfy authorizedScopes" in e.body["message"]


def test_temporary_credentials_and_a_credentials_update(proxy):
    tmp = taskcluster.createTemporaryCredentials(
        PROXY_CLIENT[0], PROXY_CLIENT[1], taskcluster.fromNow("-5 minutes"), taskcluster.fromNow("1 hour"),
        ["worker-manager:get-worker-pool:proj-servo/*"])
    url = proxy(client=(tmp["clientId"], tmp["accessToken"]), certificate=tmp["certificate"])
    wm = unsigned(taskcluster.WorkerManager, url)
    assert wm.workerPool("proj-servo/win2016")
    assert failure(lambda: wm.listWorkerPools()).status_code == 403
    r = requests.get(url + "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    assert r.headers["X-Taskcluster-Proxy-Temp-ClientId"] == "proxy-client"
    assert json.loads(r.headers["X-Taskcluster-Proxy-Temp-Scopes"]) == ["worker-manager:get-worker-pool:proj-servo/*"]
    # PUT /credentials swaps them (the worker does when it reclaims a task)
    assert requests.get(url + "/credentials").status_code == 405
    assert requests.put(url + "/credentials", data="{").status_code == 400
    r = requests.put(url + "/credentials", json={"clientId": PROXY_CLIENT[0], "accessToken": PROXY_CLIENT[1]})
    assert r.status_code == 200
    assert wm.listWorkerPools()["workerPools"]


def test_retries_like_httpbackoff(emulator, proxy, tmp_path):
    url = proxy()
    # two 503s, then the answer: the proxy retries by itself
    requests.post(emulator + "/_emulator/faults", json={"fail": {"status": 503, "count": 2}})
    r = requests.get(url + "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    assert r.status_code == 200
    assert [e["status"] for e in requests.get(emulator + "/_emulator/state").json()["requests"]] == [503, 503, 200]
    # with no time left to retry, the upstream's 5xx comes back as it is
    quick = proxy(extra=["--retry-max-elapsed", "0"])
    requests.post(emulator + "/_emulator/faults", json={"fail": {"status": 500, "count": 1}})
    r = requests.get(quick + "/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016")
    assert (r.status_code, r.json()["code"]) == (500, "InternalServerError")
    # nothing listening: 500 from the proxy itself
    closed = proxy(root="http://127.0.0.1:9", extra=["--retry-max-elapsed", "0"])
    r = requests.get(closed + "/api/queue/v1/ping")
    assert r.status_code == 500 and r.text.startswith("Failed during proxy request: ")


def test_command_line(tmp_path):
    proxy_py = os.path.join(SANDBOX, "tc_proxy.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    r = subprocess.run([sys.executable, proxy_py, "--root-url", "http://127.0.0.1:9"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "tc-proxy: no client id: set --client-id or TASKCLUSTER_CLIENT_ID"
    r = subprocess.run([sys.executable, proxy_py, "--root-url", "http://127.0.0.1:9", "--client-id", "c",
                        "--certificate", "{nope"], env={**env, "TASKCLUSTER_ACCESS_TOKEN": "t"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("tc-proxy: the certificate is not JSON")
    # --parent-pid: the proxy goes when its parent does
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc, _url = start([proxy_py, "--port", "0", "--root-url", "http://127.0.0.1:9", "--parent-pid", str(parent.pid)],
                       tmp_path, "orphan", {"TASKCLUSTER_CLIENT_ID": "c", "TASKCLUSTER_ACCESS_TOKEN": "t"})
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() == 0
