"""Tests of the EC2 sandbox (sandbox/ec2_sandbox.py), driven with boto3 the way
tc-ami drives EC2.

    .venv/bin/python -m pytest sandbox/tests/test_ec2_sandbox.py -q

One sandbox process serves the whole module; each test starts with
POST /_sandbox/reset and short (sub-second) delays.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "ec2_sandbox.py")

PATTERN = "Windows_Server-2016-English-Full-Base-*"
NEWEST_AVAILABLE = "Windows_Server-2016-English-Full-Base-2024.04.10"
NEWEST_PENDING = "Windows_Server-2016-English-Full-Base-2024.05.15"
AMAZON = "801119661308"
BUILD_TAG = "tc-ami:build-id"
SCRIPT_TEXT = "Write-Host 'first boot'\r\n# install things\r\nStop-Computer -Force\r\n"

# Delays used by the tests (seconds).
FAST = {
    "instance_boot_seconds": 0.3,
    "password_delay_seconds": 0.3,
    "guest": {"mode": "stop", "shutdown_after_seconds": 0.8},
    "image_pending_seconds": 0.4,
    "copy_pending_seconds": 0.4,
    "instance_stop_seconds": 0.2,
    "instance_terminate_seconds": 0.2,
}
TOLERANCE = 0.1  # transitions must happen within ~100 ms of their scheduled time


class Sandbox:
    def __init__(self, url: str, proc: subprocess.Popen, log_path: str):
        self.url = url
        self.proc = proc
        self.log_path = log_path

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, body
        return body

    def post(self, path: str, body: Any = None) -> Any:
        status, out = self.call("POST", path, body if body is not None else {})
        assert status == 200, out
        return out

    def state(self, **q: str) -> dict[str, Any]:
        qs = "&".join(f"{k}={v}" for k, v in q.items())
        return self.get("/_sandbox/state" + (f"?{qs}" if qs else ""))

    def ec2(self, region: str = "us-west-2", retries: int | None = None) -> Any:
        cfg = BotoConfig(retries={"total_max_attempts": retries, "mode": "standard"}) if retries else None
        return boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=cfg,
        )


def sandbox_process(tmp_path_factory: Any, config: dict[str, Any]) -> Any:
    """Starts a sandbox process with `config`; yields it; stops it and checks how it ended."""
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    log_path = str(tmp_path_factory.mktemp("ec2-sandbox") / "stderr.log")
    with open(log_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, SCRIPT, "--port", "0", "--config", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    if not line or not line[0].startswith("READY "):
        proc.kill()
        raise AssertionError(f"no READY line: {line!r}\n{open(log_path).read()}")
    first = line[0]
    assert first.endswith("\n") and first.count("\n") == 1
    url = first.split()[1]
    assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
    sb = Sandbox(url, proc, log_path)
    yield sb
    proc.terminate()
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    rest = proc.stdout.read()
    assert rc == 0, open(log_path).read()[-3000:]
    assert rest == "", f"stdout must hold only the READY line, got {rest!r}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: Any) -> Any:
    yield from sandbox_process(tmp_path_factory, FAST)


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.post("/_sandbox/reset")
    return sandbox


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(0.02)


def instance(ec2: Any, iid: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def image(ec2: Any, ami: str) -> dict[str, Any]:
    return ec2.describe_images(ImageIds=[ami])["Images"][0]


def base_ami(ec2: Any) -> dict[str, Any]:
    """The chooser tc-ami needs: newest available Amazon image matching the pattern."""
    imgs = ec2.describe_images(
        Owners=["amazon"],
        Filters=[{"Name": "name", "Values": [PATTERN]}, {"Name": "state", "Values": ["available"]}],
    )["Images"]
    return max(imgs, key=lambda i: i["CreationDate"])


def launch(ec2: Any, key_name: str, sg_id: str | None = None, user_data: str | None = None, build_id: str = "b1", **kw: Any) -> str:
    args: dict[str, Any] = dict(
        ImageId=base_ami(ec2)["ImageId"],
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.large",
        KeyName=key_name,
        UserData=user_data if user_data is not None else f"<powershell>{SCRIPT_TEXT}</powershell>",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": BUILD_TAG, "Value": build_id}]}],
    )
    if sg_id:
        args["SecurityGroupIds"] = [sg_id]
    args.update(kw)
    return ec2.run_instances(**args)["Instances"][0]["InstanceId"]


def sim_instance(sb: Sandbox, iid: str, region: str = "us-west-2") -> dict[str, Any]:
    return next(i for i in sb.state()["regions"][region]["instances"] if i["id"] == iid)


def events_of(sb: Sandbox, rid: str) -> list[dict[str, Any]]:
    return [e for e in sb.state()["events"] if e["id"] == rid]


def decrypt(private_pem: bytes, password_data: str) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.decrypt(base64.b64decode(password_data), padding.PKCS1v15()).decode()


# ----------------------------------------------------------------------------


def test_ready_and_control_api(sb: Sandbox) -> None:
    assert sb.get("/_sandbox/health") == {"ok": True}
    cfg = sb.get("/_sandbox/config")
    assert (cfg["guest"]["mode"], cfg["guest"]["shutdown_after_seconds"]) == ("stop", 0.8)
    assert cfg["first_boot_script"] is None and cfg["faults"]["rate"] == 0
    new = sb.post("/_sandbox/config", {"guest": {"mode": "never"}})
    assert new["guest"] == dict(cfg["guest"], mode="never")  # deep merge: only the mode changed
    assert sb.call("POST", "/_sandbox/config", {"guest": {"mood": "x"}})[0] == 400
    assert sb.call("POST", "/_sandbox/config", {"guest": {"mode": "sleep"}})[0] == 400
    assert sb.call("POST", "/_sandbox/config", {"faults": {"rate": 2}})[0] == 400
    assert sb.call("POST", "/_sandbox/config", {"first_boot_script": "/nonexistent/x.ps1"})[0] == 400
    assert sb.call("GET", "/_sandbox/nope")[0] == 404
    assert sb.call("GET", "/_sandbox/reset")[0] == 405
    # reset restores the start-up config
    assert sb.post("/_sandbox/reset")["config"]["guest"]["mode"] == "stop"


def test_seed_images(sb: Sandbox) -> None:
    for region in ("us-west-2", "us-east-1", "eu-central-1"):
        ec2 = sb.ec2(region)
        matching = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [PATTERN]}])["Images"]
        by_name = {i["Name"]: i for i in matching}
        assert all(i["OwnerId"] == AMAZON and i["Platform"] == "windows" for i in matching)
        assert len(matching) == 5, sorted(by_name)
        assert by_name[NEWEST_PENDING]["State"] == "pending"
        newest = max(matching, key=lambda i: i["CreationDate"])
        assert newest["Name"] == NEWEST_PENDING  # the newest one is not available yet
        chosen = base_ami(ec2)
        assert chosen["Name"] == NEWEST_AVAILABLE
        assert chosen["CreationDate"] == "2024-04-10T08:13:37.000Z"
        dates = sorted(i["CreationDate"] for i in matching if i["State"] == "available")
        assert len(set(dates)) == 4 and dates[-1] == chosen["CreationDate"]
        # images that must not match the pattern exist, some newer than the chosen one
        amazon = ec2.describe_images(Owners=["amazon"])["Images"]
        others = [i for i in amazon if not i["Name"].startswith("Windows_Server-2016-English-Full-Base-")]
        names = {i["Name"] for i in others}
        assert any(n.startswith("Windows_Server-2016-English-Core-Base-") for n in names)
        assert any(n.startswith("Windows_Server-2019-English-Full-Base-") for n in names)
        assert any(n.startswith("Windows_Server-2016-German-Full-Base-") for n in names)
        assert any(i["CreationDate"] > chosen["CreationDate"] for i in others)
        linux = [i for i in amazon if "Platform" not in i]
        assert linux, "Amazon Linux seed image"
        # a look-alike with a matching name exists, but not from Amazon
        all_matching = ec2.describe_images(Filters=[{"Name": "name", "Values": [PATTERN]}])["Images"]
        lookalike = [i for i in all_matching if i["OwnerId"] != AMAZON]
        assert len(lookalike) == 1 and "ImageOwnerAlias" not in lookalike[0]
        # ids look like real ones
        assert all(len(i["ImageId"]) == 21 and i["ImageId"].startswith("ami-") for i in amazon)
    # the dump leaves seed images out unless asked
    assert sb.state()["regions"] == {}
    seeded = sb.state(seeded="1", all_regions="1")["regions"]["us-west-2"]["images"]
    assert seeded and all(i["seeded"] for i in seeded)


def test_whole_build_lifecycle(sb: Sandbox) -> None:
    ec2 = sb.ec2("us-west-2")
    ec2_east = sb.ec2("us-east-1")
    kp = ec2.create_key_pair(KeyName="tc-ami-b1", TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": BUILD_TAG, "Value": "b1"}]}])
    sg = ec2.create_security_group(GroupName="tc-ami-b1", Description="tc-ami build b1")["GroupId"]
    t0 = time.time()
    iid = launch(ec2, "tc-ami-b1", sg)

    # pending for instance_boot_seconds, then running
    assert instance(ec2, iid)["State"]["Name"] == "pending"
    assert ec2.get_password_data(InstanceId=iid)["PasswordData"] == ""
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "running", what="running")
    ev = events_of(sb, iid)
    assert [(e["from"], e["to"]) for e in ev[:2]] == [(None, "pending"), ("pending", "running")]
    assert abs((ev[1]["t"] - ev[0]["t"]) - FAST["instance_boot_seconds"]) < TOLERANCE

    # password data: empty, then decryptable with the key pair's private key
    pw = wait_for(lambda: ec2.get_password_data(InstanceId=iid)["PasswordData"], what="password data")
    plain = decrypt(kp["KeyMaterial"].encode(), pw)
    st = sim_instance(sb, iid)
    assert plain == st["password"] and len(plain) >= 30 and plain.isprintable()
    assert st["user_data_ok"] is True and st["user_data_error"] is None
    assert st["tags"][BUILD_TAG] == "b1" and st["security_group_ids"] == [sg] and st["key_name"] == "tc-ami-b1"

    # the guest stops itself, as Windows does after first-boot.ps1's shutdown
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "stopping", what="stopping")
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "stopped", what="stopped")
    desc = instance(ec2, iid)
    assert desc["StateReason"] == {
        "Code": "Client.InstanceInitiatedShutdown",
        "Message": "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
    }
    ev = events_of(sb, iid)
    stopping = next(e for e in ev if e["to"] == "stopping")
    running = next(e for e in ev if e["to"] == "running")
    assert abs((stopping["t"] - running["t"]) - FAST["guest"]["shutdown_after_seconds"]) < TOLERANCE
    assert stopping["cause"] == "guest-shutdown"
    # the password stays retrievable after the stop
    assert ec2.get_password_data(InstanceId=iid)["PasswordData"] == pw

    # image: pending, then available
    ami = ec2.create_image(
        InstanceId=iid,
        Name="tc-ami-b1",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": BUILD_TAG, "Value": "b1"}]}],
    )["ImageId"]
    assert image(ec2, ami)["State"] == "pending"
    with pytest.raises(ClientError) as e:  # EC2 image names are unique per region
        ec2.create_image(InstanceId=iid, Name="tc-ami-b1")
    assert e.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"
    with pytest.raises(ClientError) as e:  # cannot copy before available
        ec2_east.copy_image(SourceImageId=ami, SourceRegion="us-west-2", Name="tc-ami-b1")
    assert e.value.response["Error"]["Code"] == "IncorrectState"
    wait_for(lambda: image(ec2, ami)["State"] == "available", what="image available")
    snap = image(ec2, ami)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    snapshot = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert snapshot["State"] == "completed"
    assert snapshot["VolumeId"] == instance(ec2, iid)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]

    # copy to another region: pending, then available there (only)
    copy = ec2_east.copy_image(
        SourceImageId=ami,
        SourceRegion="us-west-2",
        Name="tc-ami-b1",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": BUILD_TAG, "Value": "b1"}]}],
    )["ImageId"]
    c = image(ec2_east, copy)
    assert c["State"] == "pending" and c["Tags"] == [{"Key": BUILD_TAG, "Value": "b1"}]
    wait_for(lambda: image(ec2_east, copy)["State"] == "available", what="copy available")
    ev = events_of(sb, copy)
    assert [(e["from"], e["to"]) for e in ev] == [(None, "pending"), ("pending", "available")]
    assert abs((ev[1]["t"] - ev[0]["t"]) - FAST["copy_pending_seconds"]) < TOLERANCE
    copy_snap = image(ec2_east, copy)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]

    # cleanup, as tc-ami does it
    with pytest.raises(ClientError) as e:  # the stopped instance still uses the group
        ec2.delete_security_group(GroupId=sg)
    assert e.value.response["Error"]["Code"] == "DependencyViolation"
    ec2.terminate_instances(InstanceIds=[iid])
    assert instance(ec2, iid)["State"]["Name"] == "shutting-down"
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "terminated", what="terminated")
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_key_pair(KeyName="tc-ami-b1")
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=snap)
    assert e.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=ami)
    ec2.delete_snapshot(SnapshotId=snap)
    ec2_east.deregister_image(ImageId=copy)
    ec2_east.delete_snapshot(SnapshotId=copy_snap)

    # nothing the build made is left
    regions = sb.state()["regions"]
    for region, r in regions.items():
        assert all(i["state"] == "terminated" for i in r["instances"]), region
        assert r["key_pairs"] == [] and r["images"] == [] and r["snapshots"] == [] and r["volumes"] == [], (region, r)
        assert all(g["default"] for g in r["security_groups"]), region
    assert time.time() - t0 < 10


def test_imported_key_pair_password(sb: Sandbox) -> None:
    ec2 = sb.ec2("eu-central-1")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    ec2.import_key_pair(KeyName="imported", PublicKeyMaterial=pub)
    sb.post("/_sandbox/config", {"password_data_crlf": True})
    iid = launch(ec2, "imported")
    ec2.delete_key_pair(KeyName="imported")  # the key was handed to the guest at launch
    pw = wait_for(lambda: ec2.get_password_data(InstanceId=iid)["PasswordData"], what="password data")
    assert pw.strip() != pw  # surrounded by CRLF when asked
    plain = key.decrypt(base64.b64decode(pw.strip()), padding.PKCS1v15()).decode()
    assert plain == sim_instance(sb, iid, "eu-central-1")["password"]


def test_bad_user_data_never_stops(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    script = os.path.join(os.path.dirname(sb.log_path), "first-boot.ps1")
    with open(script, "w", newline="") as f:
        f.write(SCRIPT_TEXT)
    sb.post("/_sandbox/config", {"first_boot_script": script})
    good = launch(ec2, "k")
    no_wrap = launch(ec2, "k", user_data=SCRIPT_TEXT)
    trailing = launch(ec2, "k", user_data=f"<powershell>{SCRIPT_TEXT}</powershell>\n")
    lf = launch(ec2, "k", user_data=f"<powershell>{SCRIPT_TEXT.replace(chr(13), '')}</powershell>")
    twice = launch(ec2, "k", user_data=base64.b64encode(f"<powershell>{SCRIPT_TEXT}</powershell>".encode()).decode())
    wait_for(lambda: instance(ec2, good)["State"]["Name"] == "stopped", what="good instance stopped")
    time.sleep(0.2)
    st = {i["id"]: i for i in sb.state()["regions"]["us-west-2"]["instances"]}
    assert st[good]["user_data_ok"] is True
    for iid, words in ((no_wrap, "must start with"), (trailing, "must end with"), (lf, "line endings differ"), (twice, "base64-encoded twice")):
        assert instance(ec2, iid)["State"]["Name"] == "running", iid
        assert st[iid]["user_data_ok"] is False and words in st[iid]["user_data_error"], st[iid]["user_data_error"]
        assert st[iid]["password"]  # Windows still sets the password
    # user data over 16 KB is refused, as EC2 does
    with pytest.raises(ClientError) as e:
        launch(ec2, "k", user_data="<powershell>" + "#" * 17000 + "</powershell>")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_guest_modes(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    sb.post("/_sandbox/config", {"guest": {"mode": "never"}})
    never = launch(ec2, "k")
    wait_for(lambda: instance(ec2, never)["State"]["Name"] == "running")
    sb.post("/_sandbox/config", {"guest": {"mode": "terminate"}})
    term = launch(ec2, "k")
    sb.post("/_sandbox/config", {"guest": {"mode": "stop"}})
    behaviour = launch(ec2, "k", InstanceInitiatedShutdownBehavior="terminate")
    wait_for(lambda: instance(ec2, term)["State"]["Name"] == "terminated", what="terminate mode")
    wait_for(lambda: instance(ec2, behaviour)["State"]["Name"] == "terminated", what="shutdown behaviour terminate")
    for iid in (term, behaviour):
        assert instance(ec2, iid)["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
        assert [e["to"] for e in events_of(sb, iid) if e["kind"] == "instance"] == ["pending", "running", "shutting-down", "terminated"]
    # `never` was launched first: its shutdown time has long passed
    assert instance(ec2, never)["State"]["Name"] == "running"
    # an API stop of a tc-ami instance takes instance_stop_seconds, reason UserInitiatedShutdown
    ec2.stop_instances(InstanceIds=[never])
    assert instance(ec2, never)["State"]["Name"] == "stopping"
    wait_for(lambda: instance(ec2, never)["State"]["Name"] == "stopped")
    assert instance(ec2, never)["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


def test_guest_mode_by_worker_type(sb: Sandbox) -> None:
    """guest.mode_by_worker_type: the mode of a build instance follows its tc-ami:worker-type tag."""
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    sb.post("/_sandbox/config", {"guest": {"mode_by_worker_type": {"bad": "fail"}, "fail_after_seconds": 0.3}})

    def tagged(worker_type: str) -> str:
        tags = [{"Key": BUILD_TAG, "Value": "b1"}, {"Key": "tc-ami:worker-type", "Value": worker_type}]
        return launch(ec2, "k", TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])

    bad, good = tagged("bad"), tagged("good")
    wait_for(lambda: instance(ec2, good)["State"]["Name"] == "stopped", what="the other worker type's guest stops")
    modes = {i["id"]: i["guest_mode"] for i in sb.state()["regions"]["us-west-2"]["instances"]}
    assert (modes[bad], modes[good]) == ("fail", "stop")
    assert instance(ec2, bad)["State"]["Name"] == "running"
    for wrong in ({"x": "sleep"}, ["bad"], {"bad": 1}):
        assert sb.call("POST", "/_sandbox/config", {"guest": {"mode_by_worker_type": wrong}})[0] == 400, wrong


def console_text(ec2: Any, iid: str, latest: bool = True) -> tuple[str, dict[str, Any]]:
    """The console text. The wire carries base64; botocore decodes `Output` itself
    (botocore.handlers.decode_console_output), other SDKs do not."""
    out = ec2.get_console_output(InstanceId=iid, Latest=latest)
    return out.get("Output", ""), out


def protocol_lines(text: str) -> list[str]:
    """tc-ami's console protocol: lines that start with TC-AMI-STEP: / TC-AMI-FAILED:."""
    return [line for line in text.split("\r\n") if line.startswith(("TC-AMI-STEP: ", "TC-AMI-FAILED: "))]


def test_console_protocol_of_a_build_guest(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    steps = ["downloading and verifying pinned files", "installing Git", "installing Python"]
    sb.post("/_sandbox/config", {"guest": {"steps": steps, "shutdown_after_seconds": 1.5}})
    iid = launch(ec2, "k")
    text, out = console_text(ec2, iid)
    assert text == "" and "Output" not in out  # pending: Windows has written nothing yet
    wait_for(lambda: len(protocol_lines(console_text(ec2, iid)[0])) >= 2, what="two steps")
    # without Latest: what was posted at the last state transition (boot), so no step yet
    posted, _ = console_text(ec2, iid, latest=False)
    assert "Message: Windows is Ready to use" in posted and protocol_lines(posted) == []
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "stopped", what="stopped")
    text, out = console_text(ec2, iid)
    assert out["InstanceId"] == iid and out["Timestamp"].year >= 2024
    assert protocol_lines(text) == [f"TC-AMI-STEP: {s}" for s in steps]
    assert console_text(ec2, iid, latest=False)[0] == text  # posted again at the stop
    assert f"Instance-ID: {iid}: " not in text and f": Instance-ID: {iid}\r\n" in text
    assert ": AMI Origin Name: Windows_Server-2016-English-Full-Base\r\n" in text
    assert "<Password>\r\n" in text and text.endswith("\r\n")  # EC2Launch's password block, then the steps
    # the steps are spread over the script's run time: 0, 1/3, 2/3 of shutdown_after_seconds
    ev = events_of(sb, iid)
    running = next(e["t"] for e in ev if e["to"] == "running")
    offsets = [e["t"] - running for e in ev if e["kind"] == "console"]
    assert [e["to"] for e in ev if e["kind"] == "console"] == [f"TC-AMI-STEP: {s}" for s in steps]
    assert all(abs(t - i * 1.5 / 3) < TOLERANCE for i, t in enumerate(offsets)), offsets
    assert sim_instance(sb, iid)["console_step"] == steps[-1] and sim_instance(sb, iid)["console_failed"] is None


def test_console_failed_guest_stays_running(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    reason = "No SHA-256 pinned for: GenericWorker, StartWorker. Fill in $Pins (see FIRST-BOOT.md)."
    sb.post("/_sandbox/config", {"guest": {"mode": "fail", "fail_after_seconds": 0.6, "fail_reason": reason}})
    default_steps = sb.get("/_sandbox/config")["guest"]["steps"]
    failed = launch(ec2, "k")
    wait_for(lambda: instance(ec2, failed)["State"]["Name"] == "running")  # the script's settings are read at boot
    sb.post("/_sandbox/config", {"guest": {"fail_after_steps": 1}})
    first_only = launch(ec2, "k")
    no_script = launch(ec2, "k", user_data="<powershell></powershell>")  # nothing runs: no protocol line
    wait_for(lambda: "TC-AMI-FAILED: " in console_text(ec2, failed)[0], what="failed line")
    wait_for(lambda: "TC-AMI-FAILED: " in console_text(ec2, first_only)[0], what="failed line")
    lines = protocol_lines(console_text(ec2, failed)[0])
    assert lines == [f"TC-AMI-STEP: {s}" for s in default_steps] + [f"TC-AMI-FAILED: {reason}"]
    assert protocol_lines(console_text(ec2, first_only)[0]) == [f"TC-AMI-STEP: {default_steps[0]}", f"TC-AMI-FAILED: {reason}"]
    ev = events_of(sb, failed)
    running = next(e["t"] for e in ev if e["to"] == "running")
    failed_at = next(e["t"] for e in ev if e["kind"] == "console" and e["to"].startswith("TC-AMI-FAILED: "))
    assert abs(failed_at - running - 0.6) < TOLERANCE
    # a failed script does not shut down: long after shutdown_after_seconds, still running
    time.sleep(FAST["guest"]["shutdown_after_seconds"] + 0.5)
    for iid in (failed, first_only, no_script):
        assert instance(ec2, iid)["State"]["Name"] == "running", iid
    st = sim_instance(sb, failed)
    assert st["console_failed"] == reason and st["guest_mode"] == "fail" and st["password"]
    assert protocol_lines(console_text(ec2, no_script)[0]) == []
    assert "Message: Windows is Ready to use" in console_text(ec2, no_script)[0]
    # the console keeps the last 64 KB, as EC2
    sb.post("/_sandbox/config", {"guest": {"mode": "never", "steps": [f"step {i} " + "x" * 300 for i in range(300)], "shutdown_after_seconds": 0.3}})
    chatty = launch(ec2, "k")
    wait_for(lambda: "step 299 " in console_text(ec2, chatty)[0], what="last step")
    text = console_text(ec2, chatty)[0]
    assert 60000 < len(text.encode()) <= 65536 and "step 0 " not in text
    # GetConsoleOutput is counted like any EC2 call; moto's own answer for an instance it does not simulate
    plain = ec2.run_instances(ImageId=base_ami(ec2)["ImageId"], MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]["InstanceId"]
    sb.post("/_sandbox/stats/reset")
    assert "Output" in ec2.get_console_output(InstanceId=plain)
    with pytest.raises(ClientError) as e:
        ec2.get_console_output(InstanceId="i-0123456789abcdef0")
    assert e.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert sb.get("/_sandbox/stats")["requests"] == {"GetConsoleOutput": 2}
    for bad in ({"guest": {"mode": "fial"}}, {"guest": {"fail_reason": "two\nlines"}}, {"guest": {"steps": "x"}}, {"guest": {"fail_after_steps": -1}}):
        assert sb.call("POST", "/_sandbox/config", bad)[0] == 400, bad


DEBUG_USER_DATA = '<powershell>\r\nshutdown.exe /s /t 14400 /c "tc-ami debug instance: TTL 4h"\r\n</powershell>'


def test_user_data_that_schedules_a_shutdown(sb: Sandbox) -> None:
    """A debug instance: no build tag, InstanceInitiatedShutdownBehavior terminate, user data
    that schedules a shutdown after its TTL (here 4 h, scaled down to 1.44 s)."""
    ec2 = sb.ec2()
    kp = ec2.create_key_pair(KeyName="dbg")
    script = os.path.join(os.path.dirname(sb.log_path), "first-boot.ps1")
    with open(script, "w", newline="") as f:
        f.write(SCRIPT_TEXT)
    sb.post("/_sandbox/config", {"user_data_shutdown_scale": 0.0001, "first_boot_script": script})
    base = base_ami(ec2)["ImageId"]
    debug_tags = [{"ResourceType": "instance", "Tags": [{"Key": "tc-ami:debug-instance", "Value": "w"}]}]

    def run(**kw: Any) -> str:
        args: dict[str, Any] = dict(ImageId=base, MinCount=1, MaxCount=1, InstanceType="m5.large", KeyName="dbg", UserData=DEBUG_USER_DATA)
        args.update(kw)
        return ec2.run_instances(**args)["Instances"][0]["InstanceId"]

    debug = run(InstanceInitiatedShutdownBehavior="terminate", TagSpecifications=debug_tags)
    stops = run()  # default behaviour: stop
    # a build instance whose user data is not the first-boot script is left alone (never stops),
    # whatever its shutdown behaviour and user data
    build = launch(ec2, "dbg", user_data=DEBUG_USER_DATA, InstanceInitiatedShutdownBehavior="terminate")
    restart = run(UserData="<powershell>shutdown /r /t 1</powershell>")  # a restart, not a shutdown: plain moto
    assert instance(ec2, debug)["State"]["Name"] == "pending"
    # the password comes as for a build instance, decryptable with the key pair
    pw = wait_for(lambda: ec2.get_password_data(InstanceId=debug)["PasswordData"], what="password data")
    assert decrypt(kp["KeyMaterial"].encode(), pw) == sim_instance(sb, debug)["password"]
    assert "Message: Windows is Ready to use" in console_text(ec2, debug)[0]
    assert protocol_lines(console_text(ec2, debug)[0]) == []  # not tc-ami's first-boot script
    wait_for(lambda: instance(ec2, debug)["State"]["Name"] == "terminated", timeout=6, what="debug instance terminated")
    wait_for(lambda: instance(ec2, stops)["State"]["Name"] == "stopped", timeout=6, what="stopped")
    for iid in (debug, stops):
        assert instance(ec2, iid)["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    ev = events_of(sb, debug)
    assert [e["to"] for e in ev if e["kind"] == "instance"] == ["pending", "running", "shutting-down", "terminated"]
    running = next(e["t"] for e in ev if e["to"] == "running")
    down = next(e for e in ev if e["to"] == "shutting-down")
    assert abs(down["t"] - running - 14400 * 0.0001) < TOLERANCE and down["cause"] == "guest-shutdown"
    st = {i["id"]: i for i in sb.state()["regions"]["us-west-2"]["instances"]}
    assert st[debug]["guest"] == "scheduled-shutdown" and st[debug]["scheduled_shutdown_seconds"] == 14400
    assert st[debug]["build_id"] is None and st[debug]["tags"] == {"tc-ami:debug-instance": "w"}
    assert st[build]["guest"] == "build" and st[build]["user_data_ok"] is False
    assert instance(ec2, build)["State"]["Name"] == "running"
    assert st[restart]["simulated"] is False and instance(ec2, restart)["State"]["Name"] == "running"
    assert sb.call("POST", "/_sandbox/config", {"user_data_shutdown_scale": -1})[0] == 400


def test_image_and_copy_failures(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    sb.post("/_sandbox/config", {"guest": {"shutdown_after_seconds": 0.1}, "image_fail": True, "copy_fail": True})
    ec2.create_key_pair(KeyName="k")
    iid = launch(ec2, "k")
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "stopped")
    bad = ec2.create_image(InstanceId=iid, Name="img-1")["ImageId"]
    assert sb.get("/_sandbox/config")["image_fail"] is False  # one-shot
    good = ec2.create_image(InstanceId=iid, Name="img-2")["ImageId"]
    wait_for(lambda: image(ec2, bad)["State"] == "failed", what="failed image")
    assert image(ec2, bad)["StateReason"]["Code"] == "Server.InternalError"
    wait_for(lambda: image(ec2, good)["State"] == "available")
    east = sb.ec2("us-east-1")
    bad_copy = east.copy_image(SourceImageId=good, SourceRegion="us-west-2", Name="img-2")["ImageId"]
    good_copy = east.copy_image(SourceImageId=good, SourceRegion="us-west-2", Name="img-2-b")["ImageId"]
    wait_for(lambda: image(east, bad_copy)["State"] == "failed", what="failed copy")
    wait_for(lambda: image(east, good_copy)["State"] == "available")


def test_run_instances_validation(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    pending = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [NEWEST_PENDING]}])["Images"][0]
    cases = [
        (dict(ImageId=pending["ImageId"]), "InvalidAMIID.Unavailable"),
        (dict(ImageId="ami-0123456789abcdef0"), "InvalidAMIID.NotFound"),
        (dict(InstanceType="m99.huge"), "InvalidInstanceType.NotFound"),
        (dict(KeyName="no-such-key"), "InvalidKeyPair.NotFound"),
    ]
    for override, code in cases:
        args = dict(ImageId=base_ami(ec2)["ImageId"], MinCount=1, MaxCount=1, InstanceType="m5.large", KeyName="k")
        args.update(override)
        with pytest.raises(ClientError) as e:
            ec2.run_instances(**args)
        assert e.value.response["Error"]["Code"] == code, override
    assert sb.state()["regions"]["us-west-2"]["instances"] == []


def test_faults(sb: Sandbox) -> None:
    ec2 = sb.ec2(retries=1)  # no SDK retries: see every injected error
    sb.post("/_sandbox/config", {"faults": {"rate": 1.0, "kinds": ["throttle"]}})
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="k")
    assert e.value.response["Error"] == {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    sb.post("/_sandbox/config", {"faults": {"kinds": ["500"]}})
    with pytest.raises(ClientError) as e:
        ec2.create_security_group(GroupName="g", Description="d")
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # no side effect
    sb.post("/_sandbox/config", {"faults": {"rate": 0}})
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    stats = sb.get("/_sandbox/stats")
    assert stats["faulted"] == {"CreateKeyPair": 1, "CreateSecurityGroup": 1}
    # `next` fails exactly the next N requests of the listed actions
    sb.post("/_sandbox/config", {"faults": {"next": 2, "actions": ["CreateKeyPair"], "kinds": ["throttle", "500"]}})
    ec2.describe_images(Owners=["amazon"])  # not listed: passes
    codes = []
    for _ in range(3):
        try:
            ec2.create_key_pair(KeyName="k")
            codes.append("ok")
        except ClientError as err:
            codes.append(err.response["Error"]["Code"])
    assert codes == ["RequestLimitExceeded", "InternalError", "ok"]
    assert sb.get("/_sandbox/config")["faults"]["next"] == 0
    # the SDK's own retries get through a throttle
    sb.post("/_sandbox/config", {"faults": {"next": 1, "actions": None}})
    assert sb.ec2().describe_key_pairs()["KeyPairs"][0]["KeyName"] == "k"


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def lose(sb: Sandbox, action: str, kind: str = "lost-500") -> None:
    """The next call of `action` is applied, then its response is lost."""
    sb.post("/_sandbox/config", {"faults": {"next": 1, "actions": [action], "kinds": [kind]}})


def test_lost_responses_then_sdk_retries(sb: Sandbox) -> None:
    ec2 = sb.ec2()  # the SDK's own retries, as tc-ami has them
    east = sb.ec2("us-east-1")
    spec = lambda rt: [{"ResourceType": rt, "Tags": [{"Key": BUILD_TAG, "Value": "b1"}]}]  # noqa: E731
    # CreateKeyPair: applied, 500, retried -> the key pair exists: InvalidKeyPair.Duplicate
    lose(sb, "CreateKeyPair")
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="tc-ami-b1", TagSpecifications=spec("key-pair"))
    assert e.value.response["Error"]["Code"] == "InvalidKeyPair.Duplicate"
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert tags(ec2.describe_key_pairs(KeyNames=["tc-ami-b1"])["KeyPairs"][0]) == {BUILD_TAG: "b1"}
    # CreateSecurityGroup, with the connection closed instead: InvalidGroup.Duplicate
    lose(sb, "CreateSecurityGroup", "lost-connection")
    with pytest.raises(ClientError) as e:
        ec2.create_security_group(GroupName="tc-ami-b1", Description="d", TagSpecifications=spec("security-group"))
    assert e.value.response["Error"]["Code"] == "InvalidGroup.Duplicate"
    sg = ec2.describe_security_groups(GroupNames=["tc-ami-b1"])["SecurityGroups"][0]
    assert tags(sg) == {BUILD_TAG: "b1"}
    # RunInstances: the retry carries the same ClientToken: the same instance, not a second one
    for kind in ("lost-500", "lost-connection"):
        lose(sb, "RunInstances", kind)
        out = ec2.run_instances(
            ImageId=base_ami(ec2)["ImageId"], MinCount=1, MaxCount=1, InstanceType="m5.large", KeyName="tc-ami-b1",
            SecurityGroupIds=[sg["GroupId"]], UserData=f"<powershell>{SCRIPT_TEXT}</powershell>",
            TagSpecifications=spec("instance"),
        )
        assert out["ResponseMetadata"]["RetryAttempts"] == 1
    mine = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(mine) == 2 and all(tags(i) == {BUILD_TAG: "b1"} for i in mine)
    iid = out["Instances"][0]["InstanceId"]
    assert iid in {i["InstanceId"] for i in mine}
    wait_for(lambda: instance(ec2, iid)["State"]["Name"] == "stopped", what="stopped")
    # CreateImage: no client token; the retry finds the name taken: InvalidAMIName.Duplicate
    lose(sb, "CreateImage")
    with pytest.raises(ClientError) as e:
        ec2.create_image(InstanceId=iid, Name="tc-ami-b1", TagSpecifications=spec("image"))
    assert e.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"
    ami = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["tc-ami-b1"]}])["Images"][0]
    assert tags(ami) == {BUILD_TAG: "b1"}
    wait_for(lambda: image(ec2, ami["ImageId"])["State"] == "available", what="image")
    # CopyImage: same ClientToken on the retry: the same copy
    lose(sb, "CopyImage", "lost-connection")
    copy = east.copy_image(SourceImageId=ami["ImageId"], SourceRegion="us-west-2", Name="tc-ami-b1", TagSpecifications=spec("image"))
    copies = east.describe_images(Owners=["self"])["Images"]
    assert [c["ImageId"] for c in copies] == [copy["ImageId"]] and tags(copies[0]) == {BUILD_TAG: "b1"}
    stats = sb.get("/_sandbox/stats")
    assert stats["faulted"] == {"CopyImage": 1, "CreateImage": 1, "CreateKeyPair": 1, "CreateSecurityGroup": 1, "RunInstances": 2}
    assert stats["requests"]["RunInstances"] == 4 and stats["requests"]["CopyImage"] == 2


def test_lost_response_without_retries_leaves_the_resource(sb: Sandbox) -> None:
    ec2 = sb.ec2(retries=1)  # no SDK retry: the caller sees the error, the instance exists anyway
    ec2.create_key_pair(KeyName="k")
    lose(sb, "RunInstances")
    with pytest.raises(ClientError) as e:
        launch(ec2, "k", build_id="lost")
    assert e.value.response["Error"]["Code"] == "InternalError"
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{BUILD_TAG}", "Values": ["lost"]}])["Reservations"]
    assert len(found) == 1 and found[0]["Instances"][0]["State"]["Name"] in ("pending", "running")
    # a client token is honoured as on EC2: same token and parameters, the same instance;
    # same token, other parameters: IdempotentParameterMismatch
    args = dict(ImageId=base_ami(ec2)["ImageId"], MinCount=1, MaxCount=1, InstanceType="m5.large", ClientToken="tok-1")
    first = ec2.run_instances(**args)["Instances"][0]["InstanceId"]
    assert ec2.run_instances(**args)["Instances"][0]["InstanceId"] == first
    with pytest.raises(ClientError) as e:
        ec2.run_instances(**dict(args, InstanceType="m5.xlarge"))
    assert e.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert sb.ec2("us-east-1").run_instances(**args)["Instances"][0]["InstanceId"] != first  # per region
    assert len(ec2.describe_instances()["Reservations"]) == 2


EXTRA = 3000  # generated Amazon Windows images in the `big` sandbox, besides the seed file's 12


@pytest.fixture(scope="module")
def big(tmp_path_factory: Any) -> Any:
    yield from sandbox_process(tmp_path_factory, dict(FAST, extra_windows_images=EXTRA))


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_paging_over_thousands_of_images(big: Sandbox) -> None:
    big.post("/_sandbox/reset")
    ec2 = big.ec2()
    everything = ec2.describe_images()["Images"]  # no MaxResults: everything in one answer
    assert len(everything) == EXTRA + 12
    pages = list(ec2.get_paginator("describe_images").paginate(PaginationConfig={"PageSize": 1000}))
    assert [len(p["Images"]) for p in pages] == [1000, 1000, 1000, 12]
    assert all(p.get("NextToken") for p in pages[:-1]) and "NextToken" not in pages[-1]
    paged = [i["ImageId"] for p in pages for i in p["Images"]]
    assert len(set(paged)) == len(paged) and set(paged) == {i["ImageId"] for i in everything}
    # names as Amazon's: versions x locales x Full/Core x flavours, monthly
    names = {i["Name"] for i in everything}
    for prefix in ("Windows_Server-2019-English-Full-Base-2023.12.13", "Windows_Server-2016-English-Core-Base-",
                   "Windows_Server-2022-Japanese-Full-SQL_2019_Standard-", "Windows_Server-2019-Portuguese_Brazil-Full-Base-"):
        assert any(n.startswith(prefix) for n in names), prefix
    # filters (and owners) first, then paging
    query = dict(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["Windows_Server-2019-*-Full-Base-*"]},
                                             {"Name": "state", "Values": ["available"]}])
    unpaged = ec2.describe_images(**query)["Images"]
    assert len(unpaged) > 300 and all("-Full-Base-" in i["Name"] and "2019" in i["Name"] for i in unpaged)
    pages = list(ec2.get_paginator("describe_images").paginate(**query, PaginationConfig={"PageSize": 100}))
    assert [len(p["Images"]) for p in pages[:-1]] == [100] * (len(pages) - 1) and 0 < len(pages[-1]["Images"]) <= 100
    assert sorted(i["ImageId"] for p in pages for i in p["Images"]) == sorted(i["ImageId"] for i in unpaged)
    # the base-image chooser still picks the seed's image: the generated ones are older (<= 2023.12)
    assert base_ami(ec2)["Name"] == NEWEST_AVAILABLE
    # EC2's rules: MaxResults 5..1000, tokens only for the listing that issued them
    first = ec2.describe_images(MaxResults=5, **query)
    assert len(first["Images"]) == 5
    assert error_code(lambda: ec2.describe_images(MaxResults=4)) == "InvalidParameterValue"
    assert error_code(lambda: ec2.describe_images(MaxResults=1001)) == "InvalidParameterValue"
    assert error_code(lambda: ec2.describe_images(NextToken="not-a-token")) == "InvalidPaginationToken"
    assert error_code(lambda: ec2.describe_images(NextToken=first["NextToken"], Owners=["amazon"])) == "InvalidPaginationToken"
    assert error_code(lambda: big.ec2("us-east-1").describe_images(NextToken=first["NextToken"], **query)) == "InvalidPaginationToken"
    second = ec2.describe_images(MaxResults=5, NextToken=first["NextToken"], **query)["Images"]
    assert not {i["ImageId"] for i in second} & {i["ImageId"] for i in first["Images"]}
    # generated images are seed images: not in the state dump, listed with ?seeded=1
    assert big.state()["regions"] == {}
    assert len(big.state(seeded="1", all_regions="1")["regions"]["us-west-2"]["images"]) == EXTRA + 12
    # the number can change at run time, in every region; a reset restores the start-up number
    assert big.post("/_sandbox/config", {"extra_windows_images": 100})["extra_windows_images"] == 100
    assert len(ec2.describe_images()["Images"]) == 112 and len(big.ec2("eu-central-1").describe_images()["Images"]) == 112
    assert big.call("POST", "/_sandbox/config", {"extra_windows_images": 5001})[0] == 400
    big.post("/_sandbox/reset")
    assert len(ec2.describe_images(Owners=["amazon"])["Images"]) == EXTRA + 10  # not the look-alike, not Canonical


def test_paging_instances_snapshots_security_groups(sb: Sandbox) -> None:
    ec2 = sb.ec2()
    for n in range(12):
        ec2.create_security_group(GroupName=f"g{n:02d}", Description="d")
    pages = list(ec2.get_paginator("describe_security_groups").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["SecurityGroups"]) for p in pages] == [5, 5, 3]  # 12 + the default group
    assert len({g["GroupId"] for p in pages for g in p["SecurityGroups"]}) == 13
    ids = [
        ec2.run_instances(ImageId=base_ami(ec2)["ImageId"], MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]["InstanceId"]
        for _ in range(7)
    ]
    pages = list(ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["Reservations"]) for p in pages] == [5, 2]
    assert sorted(r["Instances"][0]["InstanceId"] for p in pages for r in p["Reservations"]) == sorted(ids)
    assert len(ec2.describe_instances()["Reservations"]) == 7
    assert error_code(lambda: ec2.describe_instances(InstanceIds=ids[:1], MaxResults=5)) == "InvalidParameterCombination"
    assert error_code(lambda: ec2.describe_instances(NextToken="r-0123456789abcdef0")) == "InvalidPaginationToken"
    sb.post("/_sandbox/seed-owned-images", {"region": "us-west-2", "count": 3, "snapshots_per_image": 2})
    pages = list(ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], PaginationConfig={"PageSize": 5}))
    assert [len(p["Snapshots"]) for p in pages] == [5, 1]


def test_denied_fault_is_not_retried(sb: Sandbox) -> None:
    sb.post("/_sandbox/config", {"faults": {"next": 1, "actions": ["DeregisterImage"], "kinds": ["denied"]}})
    ec2 = sb.ec2()  # with the SDK's retries: a 403 is not retried
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId="ami-0123456789abcdef0")
    assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId="ami-0123456789abcdef0")
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"  # reached moto


def test_seed_owned_images(sb: Sandbox) -> None:
    body = {
        "region": "us-east-1",
        "count": 5,
        "name_prefix": "tc-ami-w-",
        "tags": {"tc-ami:worker-type": "w", "tc-ami:build-id": "b{n}"},
        "creation_date": "2024-01-01T00:00:00Z",
        "step_seconds": 86400,
        "snapshots_per_image": 2,
    }
    out = sb.post("/_sandbox/seed-owned-images", body)
    assert out["region"] == "us-east-1" and len(out["images"]) == 5
    ec2 = sb.ec2("us-east-1")
    listed = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:tc-ami:worker-type", "Values": ["w"]}])["Images"]
    by_id = {i["ImageId"]: i for i in listed}
    assert set(by_id) == {i["id"] for i in out["images"]}
    first, last = by_id[out["images"][0]["id"]], by_id[out["images"][4]["id"]]
    assert first["CreationDate"] == "2024-01-01T00:00:00.000Z" and last["CreationDate"] == "2024-01-05T00:00:00.000Z"
    assert first["State"] == "available" and first["OwnerId"] == "123456789012" and first["Name"] == "tc-ami-w-00000"
    assert {t["Key"]: t["Value"] for t in first["Tags"]} == {"tc-ami:worker-type": "w", "tc-ami:build-id": "b0"}
    # one snapshot per block device, tagged like the image, owned by the account
    snaps = [b["Ebs"]["SnapshotId"] for b in first["BlockDeviceMappings"]]
    assert len(snaps) == 2 and snaps == out["images"][0]["snapshot_ids"]
    tagged = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:tc-ami:build-id", "Values": ["b0"]}])["Snapshots"]
    assert sorted(s["SnapshotId"] for s in tagged) == sorted(snaps)
    assert all(s["StartTime"].isoformat().startswith("2024-01-01T00:00:00") for s in tagged)
    # only in that region; in the state dump as ordinary (not seed) images
    assert sb.ec2("us-west-2").describe_images(Owners=["self"])["Images"] == []
    dumped = {i["id"]: i for i in sb.state()["regions"]["us-east-1"]["images"]}
    assert dumped[first["ImageId"]]["snapshot_ids"] == snaps and not dumped[first["ImageId"]]["seeded"]
    # ordinary images: their snapshots are in use until the image is deregistered
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=snaps[1])
    assert e.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=first["ImageId"])
    for snap in snaps:
        ec2.delete_snapshot(SnapshotId=snap)
    # bad bodies name the field
    for bad, word in [
        ({"count": 2}, "region"),
        ({"region": "us-east-1", "count": 0}, "count"),
        ({"region": "us-east-1", "snapshots_per_image": 9}, "snapshots_per_image"),
        ({"region": "us-east-1", "colour": "red"}, "colour"),
        ({"region": "us-east-1", "tags": {"k": 1}}, "tags"),
        ({"region": "us-east-1", "creation_date": "yesterday"}, "creation_date"),
        (dict(body, count=2), "already exists"),  # the same names again
    ]:
        status, err = sb.call("POST", "/_sandbox/seed-owned-images", bad)
        assert status == 400 and word in err["error"], (bad, err)
    assert len(ec2.describe_images(Owners=["self"])["Images"]) == 4  # a refused body adds nothing
    # without a date, the newest is now; a reset removes them
    out = sb.post("/_sandbox/seed-owned-images", {"region": "us-west-2", "count": 3, "step_seconds": 60})
    newest = sb.ec2("us-west-2").describe_images(ImageIds=[out["images"][2]["id"]])["Images"][0]
    assert abs(time.time() - _epoch(newest["CreationDate"])) < 60
    sb.post("/_sandbox/reset")
    assert sb.ec2("us-east-1").describe_images(Owners=["self"])["Images"] == []


def _epoch(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_stats(sb: Sandbox) -> None:
    ec2 = sb.ec2("us-east-1")
    for _ in range(3):
        ec2.describe_images(Owners=["amazon"])
    ec2.describe_instances()
    sb.get("/_sandbox/state")  # control calls are not counted
    stats = sb.get("/_sandbox/stats")
    assert stats["requests"] == {"DescribeImages": 3, "DescribeInstances": 1}
    assert stats["total"] == 4 and stats["faulted"] == {} and stats["by_region"] == {"us-east-1": 4}
    assert stats["by_access_key_id"] == {"testing": 4}
    assert sb.post("/_sandbox/stats/reset")["total"] == 0


def test_stats_by_access_key_id(sb: Sandbox) -> None:
    """Which credentials signed each EC2 request: the SigV4 credential's key id, never the secret."""
    sb.ec2("us-west-2").describe_images(Owners=["amazon"])
    other = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=sb.url,
        aws_access_key_id="AKIAOTHERKEYID000001",
        aws_secret_access_key="other-secret-key-never-logged",
    )
    other.describe_instances()
    other.describe_images(Owners=["self"])
    stats = sb.get("/_sandbox/stats")
    assert stats["by_access_key_id"] == {"AKIAOTHERKEYID000001": 2, "testing": 1}
    assert "other-secret-key-never-logged" not in json.dumps(stats)


def test_seed_image_at_run_time(sb: Sandbox) -> None:
    out = sb.post(
        "/_sandbox/seed-image",
        {"region": "all", "name": "Windows_Server-2016-English-Full-Base-2024.06.12", "creation_date": "2024-06-12T07:00:00.000Z"},
    )
    assert out["image_id"].startswith("ami-") and len(out["image_id"]) == 21
    for region in ("us-west-2", "eu-central-1"):
        chosen = base_ami(sb.ec2(region))
        assert chosen["ImageId"] == out["image_id"] and chosen["OwnerId"] == AMAZON
        assert chosen["ImageOwnerAlias"] == "amazon" and chosen["Platform"] == "windows"
    one = sb.post("/_sandbox/seed-image", {"region": "us-east-1", "name": "Windows_Server-2016-English-Full-Base-2024.07.10", "creation_date": "2024-07-10T07:00:00Z"})
    assert base_ami(sb.ec2("us-east-1"))["ImageId"] == one["image_id"]
    assert base_ami(sb.ec2("us-west-2"))["ImageId"] == out["image_id"]
    assert sb.call("POST", "/_sandbox/seed-image", {"name": "x"})[0] == 400
    sb.post("/_sandbox/reset")
    assert base_ami(sb.ec2("us-west-2"))["Name"] == NEWEST_AVAILABLE


def test_reset_keep_config_and_moto_reset(sb: Sandbox) -> None:
    sb.post("/_sandbox/config", {"guest": {"mode": "never"}})
    assert sb.post("/_sandbox/reset", {"keep_config": True})["config"]["guest"]["mode"] == "never"
    ec2 = sb.ec2()
    ec2.create_key_pair(KeyName="k")
    launch(ec2, "k")
    assert sb.state()["events"]
    # moto's own reset endpoint also clears the simulator
    assert sb.call("POST", "/moto-api/reset")[0] == 200
    st = sb.state()
    assert st["regions"] == {} and st["events"] == [] and st["scheduled"] == []


def test_process_options(tmp_path: Any) -> None:
    bad = subprocess.run([sys.executable, SCRIPT, "--config", '{"guest": {"mode": "sleep"}}'], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stdout == "" and "guest.mode" in bad.stderr
    # --parent-pid: the sandbox goes away with its parent
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2.5)"])
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, "--parent-pid", str(parent.pid)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout.readline().startswith("READY http://127.0.0.1:")
        parent.wait(10)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        parent.kill()
