"""The stand-ins the benchmark runs against, started on free 127.0.0.1 ports and stopped by it.

- EC2: sandbox/ec2_sandbox.py (moto + the Windows guest simulator), started through
  benches/logged_sandbox.py so that every EC2 request is logged with its arrival time and
  its client (tc-ami, or one of the benchmark's boto3 pipelines).
- Taskcluster: sandbox/tc_emulator.py with the sandbox's seed (sandbox/seed/taskcluster.json).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sandbox-only credentials from sandbox/seed/taskcluster.json (see sandbox/TASKCLUSTER.md);
# they open nothing outside the emulator.
TC_CLIENT_ID = "tc-ami-admin"
TC_SEED = os.path.join(ROOT, "sandbox", "seed", "taskcluster.json")


def _tc_token() -> str:
    with open(TC_SEED, encoding="utf-8") as f:
        seed = json.load(f)
    for c in seed["clients"]:
        if c["clientId"] == TC_CLIENT_ID:
            return c["accessToken"]
    raise RuntimeError(f"no client {TC_CLIENT_ID} in {TC_SEED}")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log_path: str
    request_log: str | None = None
    extra: dict = field(default_factory=dict)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def requests(self) -> list[tuple[float, str, str, str]]:
        """The EC2 request log: (arrival time, region, action, client)."""
        out = []
        if not self.request_log or not os.path.exists(self.request_log):
            return out
        with open(self.request_log, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4:
                    out.append((float(parts[0]), parts[1], parts[2], parts[3]))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def _start(name: str, argv: list[str], workdir: str) -> tuple[subprocess.Popen, str, str]:
    log_path = os.path.join(workdir, f"{name}.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT)
    log.close()
    deadline = time.time() + 90
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.time()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{name} did not start; log {log_path}:\n{open(log_path).read()[-2000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return proc, line[len("READY "):], log_path


def start_ec2(py: str, config: dict, workdir: str, name: str) -> Server:
    """The EC2 sandbox with `config` deep-merged into its defaults."""
    request_log = os.path.join(workdir, f"{name}.requests.tsv")
    argv = [
        py, os.path.join(ROOT, "benches", "logged_sandbox.py"),
        "--request-log", request_log,
        "--port", "0",
        "--config", json.dumps(config),
        "--parent-pid", str(os.getpid()),
    ]
    proc, url, log_path = _start(name, argv, workdir)
    return Server(name, proc, url, log_path, request_log)


def start_taskcluster(py: str, workdir: str) -> Server:
    argv = [py, os.path.join(ROOT, "sandbox", "tc_emulator.py"), "--port", "0", "--quiet", "--seed", TC_SEED]
    proc, url, log_path = _start("taskcluster", argv, workdir)
    return Server("taskcluster", proc, url, log_path)


def tc_ami_env(ec2: Server, tc: Server, home: str) -> dict[str, str]:
    """A clean environment pointing tc-ami at the stand-ins (as tests/support does)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "AWS_ENDPOINT_URL": ec2.url,
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
        "TASKCLUSTER_ROOT_URL": tc.url,
        "TASKCLUSTER_CLIENT_ID": TC_CLIENT_ID,
        "TASKCLUSTER_ACCESS_TOKEN": _tc_token(),
        "NO_COLOR": "1",
    }


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)
