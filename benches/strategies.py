"""The same build as tc-ami's, driven by the benchmark with boto3, waiting the way others wait.

Each pipeline makes the calls tc-ami makes, in the same order (base image, key pair, security
group, RunInstances with the wrapped first-boot.ps1 and the `tc-ami:build-id` tag so that the
sandbox's guest simulator runs it, wait running, wait for the password, wait stopped,
CreateImage, wait available, CopyImage to the copy region, wait available, TerminateInstances,
wait terminated, delete the group and the key pair); only the waiting differs:

- `boto3-waiter`: botocore's own waiters (`client.get_waiter(...).wait(...)`), the definitions in
  botocore/data/ec2/2016-11-15/waiters-2.json that `aws ec2 wait ...` uses: InstanceRunning,
  PasswordDataAvailable, InstanceStopped, ImageAvailable, InstanceTerminated, each
  `delay` 15 s, `maxAttempts` 40: first call at once, then 15 s after each answer.
- `fixed-15s`: a hand-written loop, one call, then `sleep(15)`, until the state is reached (what
  a script around `aws ec2 describe-*` does, and what Packer does by default).
- `rust-sdk-waiter`: the schedule of the AWS SDK for Rust's waiters
  (`client.wait_until_instance_stopped()` etc. in aws-sdk-ec2 1.274.0, src/waiters/*.rs:
  `min_delay` 15 s, `max_delay` 120 s), reproduced call for call from aws-smithy-runtime
  1.16.2 src/client/waiters.rs (`WaiterOrchestrator::orchestrate`) and
  src/client/waiters/backoff.rs (`Backoff::delay`): first call at once; after the n-th
  unsuccessful call, sleep a whole number of seconds drawn uniformly from
  [min_delay, min(min_delay * 2^(n-1), max_delay)] (n above the "attempt ceiling"
  floor(log2(max/min) + 1) = 4 uses max_delay), cut to the remaining time when less than
  min_delay would be left of `max_wait`. The calls are made with boto3 (the benchmark cannot
  run the Rust waiter against a timeline it controls without another Rust binary), so only the
  schedule is the Rust SDK's; the per-call cost is boto3's.

The success/failure conditions of the two hand-written strategies are those of the waiter
definitions.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

STRATEGIES = ("boto3-waiter", "fixed-15s", "rust-sdk-waiter")

BOTO_DELAY = 15  # botocore waiters-2.json: every EC2 waiter used here has "delay": 15
RUST_MIN_DELAY = 15  # aws-sdk-ec2 src/waiters/<waiter>.rs: .min_delay(Duration::from_secs(15))
RUST_MAX_DELAY = 120  # ... .max_delay(Duration::from_secs(120))
FIXED_DELAY = 15

# What tc-ami's worker type allows, used as the Rust waiter's max_wait.
INSTANCE_MAX_WAIT = 90 * 60
IMAGE_MAX_WAIT = 60 * 60


class WaitFailed(Exception):
    pass


def rust_waiter_delay(attempt: int, elapsed: float, max_wait: float, rng: random.Random,
                      min_delay: int = RUST_MIN_DELAY, max_delay: int = RUST_MAX_DELAY) -> float:
    """aws-smithy-runtime's `Backoff::delay(attempt, elapsed)` (attempt counts from 1)."""
    ceiling = int(math.log(max_delay / min_delay) / math.log(2) + 1.0)
    hi = max_delay if attempt > ceiling else min_delay * 2 ** (attempt - 1)
    delay = float(rng.randint(min_delay, hi))  # fastrand::u64(min..=max): whole seconds
    remaining = max(0.0, max_wait - elapsed)
    if max(0.0, remaining - delay) <= min_delay:
        delay = remaining
    return delay


# --- acceptors: (operation, params) -> "success" | "failure" | "retry", as in waiters-2.json


def _instance_states(resp: dict) -> list[str]:
    return [i["State"]["Name"] for r in resp.get("Reservations", []) for i in r.get("Instances", [])]


def _instance_acceptor(success: str, failures: tuple[str, ...]) -> Callable[[dict], str]:
    def accept(resp: dict) -> str:
        states = _instance_states(resp)
        if states and all(s == success for s in states):
            return "success"
        if any(s in failures for s in states):
            return "failure"
        return "retry"

    return accept


def _image_available(resp: dict) -> str:
    states = [i["State"] for i in resp.get("Images", [])]
    if states and all(s == "available" for s in states):
        return "success"
    if any(s == "failed" for s in states):
        return "failure"
    return "retry"


def _password(resp: dict) -> str:
    return "success" if len(resp.get("PasswordData") or "") > 0 else "retry"


WAITS: dict[str, tuple[str, Callable[[dict], str], tuple[str, ...], float]] = {
    # boto3 waiter name: (client method, acceptor, error codes that mean "retry", Rust max_wait)
    "instance_running": (
        "describe_instances",
        _instance_acceptor("running", ("shutting-down", "terminated", "stopping")),
        ("InvalidInstanceID.NotFound",),
        INSTANCE_MAX_WAIT,
    ),
    "password_data_available": ("get_password_data", _password, (), INSTANCE_MAX_WAIT),
    "instance_stopped": (
        "describe_instances", _instance_acceptor("stopped", ("pending", "terminated")), (), INSTANCE_MAX_WAIT,
    ),
    "image_available": ("describe_images", _image_available, (), IMAGE_MAX_WAIT),
    "instance_terminated": (
        "describe_instances", _instance_acceptor("terminated", ("pending", "stopping")), (), INSTANCE_MAX_WAIT,
    ),
}


def wait(strategy: str, client: Any, waiter: str, rng: random.Random, **params: Any) -> None:
    if strategy == "boto3-waiter":
        client.get_waiter(waiter).wait(**params)
        return
    method, accept, retry_codes, max_wait = WAITS[waiter]
    started = time.monotonic()
    attempt = 0
    last_call = False
    while True:
        try:
            outcome = accept(getattr(client, method)(**params))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in retry_codes:
                raise
            outcome = "retry"
        if outcome == "success":
            return
        if outcome == "failure":
            raise WaitFailed(f"{waiter}: failure state")
        attempt += 1
        if strategy == "fixed-15s":
            time.sleep(FIXED_DELAY)
        elif strategy == "rust-sdk-waiter":
            elapsed = time.monotonic() - started
            if last_call or elapsed > max_wait:
                raise WaitFailed(f"{waiter}: exceeded max wait")
            delay = rust_waiter_delay(attempt, elapsed, max_wait, rng)
            if delay <= 0:
                last_call = True  # "will immediately poll one last time"
            else:
                time.sleep(delay)
        else:
            raise ValueError(strategy)


def clients(strategy: str, endpoint: str, regions: list[str]) -> dict[str, Any]:
    """One boto3 client per region, marked so the sandbox's request log can tell them apart."""
    session = boto3.session.Session(
        aws_access_key_id="sandbox", aws_secret_access_key="sandbox", region_name=regions[0]
    )
    cfg = BotoConfig(user_agent_extra=f"bench-strategy/{strategy}", retries={"mode": "standard"})
    return {r: session.client("ec2", region_name=r, endpoint_url=endpoint, config=cfg) for r in regions}


def run_pipeline(strategy: str, ec2: dict[str, Any], build_region: str, copy_region: str,
                 base_pattern: str, user_data: str, name: str, seed: int) -> dict:
    """Runs one build; returns {start, end, notice: {stage: unix time}, instance, image, copy}."""
    rng = random.Random(seed)
    src, dst = ec2[build_region], ec2[copy_region]
    notice: dict[str, float] = {}
    tag = [{"Key": "tc-ami:build-id", "Value": name}]
    start = time.time()
    images = src.describe_images(
        Owners=["amazon"],
        Filters=[{"Name": "name", "Values": [base_pattern]}, {"Name": "state", "Values": ["available"]}],
    )["Images"]
    base = max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", ""), i["ImageId"]))
    src.create_key_pair(KeyName=name, TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag}])
    group = src.create_security_group(GroupName=name, Description=f"benchmark {name}")["GroupId"]
    instance = src.run_instances(
        ImageId=base["ImageId"], InstanceType="c5.4xlarge", KeyName=name, SecurityGroupIds=[group],
        UserData=user_data, InstanceInitiatedShutdownBehavior="stop", MinCount=1, MaxCount=1,
        ClientToken=name,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag}, {"ResourceType": "volume", "Tags": tag}],
    )["Instances"][0]["InstanceId"]

    wait(strategy, src, "instance_running", rng, InstanceIds=[instance])
    notice["running"] = time.time()
    wait(strategy, src, "password_data_available", rng, InstanceId=instance)
    notice["password"] = time.time()
    wait(strategy, src, "instance_stopped", rng, InstanceIds=[instance])
    notice["stopped"] = time.time()

    image = src.create_image(InstanceId=instance, Name=name, Description=f"benchmark {name}")["ImageId"]
    wait(strategy, src, "image_available", rng, ImageIds=[image])
    notice["image"] = time.time()

    copy = dst.copy_image(SourceImageId=image, SourceRegion=build_region, Name=name,
                          ClientToken=f"{name}-{copy_region}")["ImageId"]
    wait(strategy, dst, "image_available", rng, ImageIds=[copy])
    notice["copy"] = time.time()

    src.terminate_instances(InstanceIds=[instance])
    wait(strategy, src, "instance_terminated", rng, InstanceIds=[instance])
    notice["terminated"] = time.time()
    src.delete_security_group(GroupId=group)
    src.delete_key_pair(KeyName=name)
    end = time.time()
    return {
        "start": start, "end": end, "notice": notice, "instance": instance, "image": image,
        "copy": copy, "build_region": build_region, "copy_region": copy_region,
        "client": f"bench-strategy/{strategy}",
    }
