"""The guest simulator: hooks into moto's EC2 models.

moto answers every call at once: instances are `running` as soon as they
exist, images `available`, and nothing runs an instance's user data.  This
module patches methods of moto's ``moto.ec2.models.EC2Backend`` (the class that
every region's EC2 backend is an instance of; it inherits the methods below
from the mixins in ``moto/ec2/models/*.py``) and of
``moto.ec2.responses.EC2Response`` so that, for the instances tc-ami launches
(tag key ``tc-ami:build-id``) and the images made from them:

* RunInstances leaves the instance `pending` for ``instance_boot_seconds``;
* the user data is checked as Windows' EC2Launch would see it; a guest whose
  user data is wrong never runs its script and so never shuts down;
* ``password_delay_seconds`` after `running`, GetPasswordData returns a random
  administrator password encrypted (RSA PKCS#1 v1.5, base64) with the public
  key of the instance's key pair, as Windows does;
* the guest writes to its serial console (GetConsoleOutput): EC2Launch-like boot
  lines, then ``TC-AMI-STEP: <stage>`` for each of ``guest.steps``, spread over
  its run time;
* ``guest.shutdown_after_seconds`` after `running` the guest shuts down: the
  instance goes `stopping` then `stopped` (or `shutting-down` then
  `terminated`) with StateReason ``Client.InstanceInitiatedShutdown``; in
  ``guest.mode`` ``fail`` it writes ``TC-AMI-FAILED: <reason>`` instead and
  stays `running`;
* StopInstances/TerminateInstances take ``instance_stop_seconds`` /
  ``instance_terminate_seconds`` in `stopping` / `shutting-down`;
* CreateImage and CopyImage leave the image (and its snapshot) `pending` for
  ``image_pending_seconds`` / ``copy_pending_seconds``, then `available` (or
  `failed` when ``image_fail`` / ``copy_fail`` is set).

A Windows instance without the build tag whose user data runs ``shutdown /s /t N``
(tc-ami's debug instance) is simulated too: it boots, gets its password and
shuts down N x ``user_data_shutdown_scale`` seconds after `running`, following
its InstanceInitiatedShutdownBehavior.

A few EC2 rules moto does not enforce are added for every caller (not only
tc-ami's resources), because a tool that passes against the sandbox should not
then fail against EC2: the 16 KB user-data limit, RunInstances refusing an
image that is not `available`, CopyImage refusing a source image that is not
`available`, unique image names per account and region, DeleteSecurityGroup
refusing a group that a not-yet-terminated instance still uses, StopInstances
refusing a `pending` instance, CopyImage/CreateImage tag specifications (image
and snapshot), and DescribeSnapshots' OwnerIds.

Every method here runs with the sandbox's model lock held: request handlers
take it around moto's WSGI app, the scheduler thread around each callback.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import logging
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

# moto internals used below (moto 5.2.5):
#   moto.ec2.models.EC2Backend          - the per-(account, region) EC2 backend class
#   moto.ec2.models.ec2_backends        - BackendDict: [account_id][region] -> EC2Backend
#   moto.ec2.models.instances.InstanceState / StateReason - Instance._state, .state_reason
#   moto.ec2.responses.EC2Response      - the EC2 query-API response class
from moto.core.responses import ActionResult
from moto.ec2.exceptions import (
    DependencyViolationError,
    EC2ClientError,
    InvalidParameterCombination,
    OperationDisableApiStopNotPermitted,
    OperationNotPermitted4,
)
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.instances import InstanceState, StateReason
from moto.ec2.responses import EC2Response
from moto.ec2.utils import public_key_parse

from . import console, paging
from .config import Config
from .events import EventLog, Scheduler

log = logging.getLogger("ec2-sandbox")

BUILD_TAG = "tc-ami:build-id"
WORKER_TYPE_TAG = "tc-ami:worker-type"

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
INSTANCE_INITIATED = (
    "Client.InstanceInitiatedShutdown",
    "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
)
USER_INITIATED = (
    "Client.UserInitiatedShutdown",
    "Client.UserInitiatedShutdown: User initiated shutdown",
)
IMAGE_FAILED_REASON = {"Code": "Server.InternalError", "Message": "Server.InternalError: An internal error has occurred"}

USER_DATA_LIMIT = 16384  # bytes, before base64 (EC2's documented limit)

PASSWORD_SYMBOLS = "!@#$%&*()-_=+?;.,"


def _transition_reason() -> str:
    # What EC2 shows in StateTransitionReason after a stop (moto writes "UTC").
    return f"User initiated ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} GMT)"


def random_windows_password(length: int = 32) -> str:
    """A password like the ones EC2Launch sets: printable, with upper and
    lower case letters, digits and symbols."""
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS]
    alphabet = "".join(classes)
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in cls for c in pw) for cls in classes):
            return pw


def encrypt_password(public_key: RSAPublicKey, password: str) -> str:
    """What Windows stores as password data: RSA PKCS#1 v1.5, base64."""
    return base64.b64encode(public_key.encrypt(password.encode("utf-8"), padding.PKCS1v15())).decode("ascii")


def user_data_bytes(user_data: Any) -> bytes | None:
    """The raw (decoded) user data of a moto Instance.

    moto 5.2.5 stores ``Instance.user_data`` as a
    ``moto.core.types.Base64EncodedString`` (``as_bytes()`` = the base64 text);
    older versions used a list of str/bytes, so be lenient.
    """
    if user_data is None:
        return None
    if isinstance(user_data, list):
        if not user_data:
            return None
        user_data = user_data[0]
    if hasattr(user_data, "as_bytes"):
        encoded = user_data.as_bytes()
    elif isinstance(user_data, str):
        encoded = user_data.encode("ascii", "replace")
    else:
        encoded = bytes(user_data)
    try:
        return base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        return encoded


def _describe_difference(got: bytes, want: bytes, path: str) -> str:
    i = 0
    n = min(len(got), len(want))
    while i < n and got[i] == want[i]:
        i += 1
    line = want[:i].count(b"\n") + 1
    crlf = ""
    if (b"\r\n" in got) != (b"\r\n" in want):
        crlf = " (line endings differ: one uses CRLF, the other LF)"
    return (
        f"the script in the user data differs from first_boot_script {path}{crlf}: "
        f"{len(got)} bytes vs {len(want)} bytes, first difference at byte {i} (line {line}): "
        f"user data has {got[i:i + 24]!r}, file has {want[i:i + 24]!r}"
    )


# `shutdown /s [/t <seconds>]` (or shutdown.exe, -s, -t) on a line of a <powershell> or
# <script> block: Windows shuts down after the delay (default 30 s, per shutdown.exe's help).
_USER_DATA_BLOCK = re.compile(rb"<(powershell|script)>(.*?)</\1>", re.S | re.I)
_SHUTDOWN_CMD = re.compile(r"(?:^|[\s;&|('\"\\/])shutdown(?:\.exe)?['\"]?(?P<args>(?:\s[^\r\n;&|]*)?)$", re.I)
_SHUTDOWN_DEFAULT_SECONDS = 30


def scheduled_shutdown_seconds(user_data: bytes | None) -> int | None:
    """The delay of a `shutdown /s /t N` that the user data runs (EC2Launch runs
    <powershell> and <script> blocks), or None when it schedules no shutdown."""
    if not user_data:
        return None
    for m in _USER_DATA_BLOCK.finditer(user_data):
        for line in m.group(2).decode("utf-8", "replace").splitlines():
            code = line.strip()
            if not code or code.startswith("#") or code.lower().startswith("rem "):
                continue
            for part in re.split(r"[;&|]", code):
                cmd = _SHUTDOWN_CMD.search(part.rstrip())
                if cmd is None:
                    continue
                args = cmd.group("args")
                if not re.search(r"(?:^|\s)[/-]s(?=\s|$)", args, re.I):
                    continue  # /r (restart), /a (abort), /l, /h: not a shutdown
                t = re.search(r"(?:^|\s)[/-]t(?:\s+|:)(\d+)(?=\s|$)", args, re.I)
                return int(t.group(1)) if t else _SHUTDOWN_DEFAULT_SECONDS
    return None


@dataclass
class InstanceSim:
    """What the simulator knows about one simulated instance: a tc-ami build instance
    (kind "build"), or a Windows instance whose user data schedules a shutdown (kind
    "scheduled-shutdown", e.g. tc-ami's debug instance)."""

    account: str
    region: str
    id: str
    build_id: str | None
    user_data_ok: bool
    user_data_error: str | None
    public_key: RSAPublicKey | None
    password_error: str | None
    guest_mode: str = "stop"  # guest.mode when the instance was launched
    password: str | None = None
    password_data: str | None = None
    first_boot: bool = True
    # Bumped whenever the API takes over (stop/terminate/start): callbacks
    # scheduled under an older generation are dropped.
    gen: int = 0
    running_since_wall: float | None = None
    # The serial console: lines written so far, and how many of them were
    # "posted" at the last state transition (what GetConsoleOutput returns
    # without Latest=true), with the times of the last write and of that post.
    console: list[str] = field(default_factory=list)
    console_t: float | None = None
    posted: int = 0
    posted_t: float | None = None
    step: str | None = None  # the latest TC-AMI-STEP text
    failed: str | None = None  # the TC-AMI-FAILED reason
    kind: str = "build"  # or "scheduled-shutdown"
    shutdown_in_seconds: int | None = None  # the /t of the user data's shutdown (kind scheduled-shutdown)


@dataclass
class ImageSim:
    """A tc-ami image (or copy) whose availability the simulator controls."""

    account: str
    region: str
    id: str
    kind: str  # "create" | "copy"
    fail: bool
    source_instance_id: str | None = None
    source_image_id: str | None = None
    source_region: str | None = None


class Simulator:
    def __init__(self, config: Config, events: EventLog, scheduler: Scheduler, lock: threading.RLock):
        self.config = config
        self.events = events
        self.scheduler = scheduler
        self.lock = lock
        self.instances: dict[str, InstanceSim] = {}
        self.images: dict[str, ImageSim] = {}
        self._installed = False

    # ------------------------------------------------------------------ helpers

    def reset(self) -> None:
        self.instances.clear()
        self.images.clear()

    @staticmethod
    def backend(account: str, region: str) -> Any:
        """The existing EC2 backend of (account, region), or None.  Uses
        dict.get on moto's BackendDict/AccountSpecificBackend so that looking
        does not create a backend."""
        acct = dict.get(ec2_backends, account)
        return dict.get(acct, region) if acct is not None else None

    def _instance(self, s: InstanceSim) -> Any:
        be = self.backend(s.account, s.region)
        return be.get_instance_by_id(s.id) if be is not None else None

    def _set_instance_state(self, inst: Any, region: str, name: str, cause: str, frm: str | None = "") -> None:
        """Sets moto's ``Instance._state`` (an InstanceState) and logs the transition."""
        old = inst._state.name if frm == "" else frm
        inst._state = InstanceState(name, STATE_CODES[name])
        if name == "pending":
            inst.state_reason = StateReason("pending", "pending")  # what EC2 shows while pending
        elif name == "running":
            inst.state_reason = None  # EC2 shows no StateReason for a running instance (moto: empty strings)
        self.events.record("instance", inst.id, region, old, name, cause)
        s = self.instances.get(inst.id)
        if s is not None:
            self._post_console(s)

    def _later(self, s: InstanceSim, delay: float, fn: Callable[[InstanceSim], None], what: str) -> None:
        """Schedules ``fn(s)`` unless the instance's generation changes first."""
        gen = s.gen

        def run() -> None:
            if self.instances.get(s.id) is s and s.gen == gen:
                fn(s)

        self.scheduler.after(delay, run, f"{what} {s.id} ({s.region})")

    def is_simulated_image(self, ami_id: str) -> bool:
        return ami_id in self.images

    # ------------------------------------------------------------ the console

    def _write_console(self, s: InstanceSim, lines: list[str]) -> None:
        s.console.extend(lines)
        s.console_t = time.time()

    def _post_console(self, s: InstanceSim) -> None:
        """What EC2 buffers at a state transition (GetConsoleOutput without Latest)."""
        s.posted = len(s.console)
        s.posted_t = s.console_t

    def console_output(self, s: InstanceSim, latest: bool) -> tuple[str | None, float | None]:
        """(base64 Output or None, time of that output) for GetConsoleOutput."""
        if latest:
            return console.encode(s.console), s.console_t
        return console.encode(s.console[: s.posted]), s.posted_t

    def _console_line(self, s: InstanceSim, line: str) -> None:
        """One line of tc-ami's console protocol, logged as a `console` event."""
        self._write_console(s, [line])
        self.events.record("console", s.id, s.region, None, line, "guest")

    # ----------------------------------------------------------- launch checks

    def check_user_data(self, inst: Any) -> tuple[bool, str | None]:
        """Checks the user data as a Windows guest would run it: exactly
        ``<powershell>`` + script + ``</powershell>`` (plus the configured
        prefix/suffix), and the script equal to ``first_boot_script``."""
        cfg = self.config.snapshot()
        if inst.platform != "windows":
            return False, (
                f"image {inst.image_id} is not a Windows image (platform {inst.platform!r}): "
                "nothing runs PowerShell user data"
            )
        raw = user_data_bytes(inst.user_data)
        if not raw:
            return False, "the instance has no user data: the first-boot script never runs"
        head = cfg["user_data_prefix"].encode("utf-8") + b"<powershell>"
        tail = b"</powershell>" + cfg["user_data_suffix"].encode("utf-8")
        if not raw.startswith(head):
            hint = ""
            try:
                again = base64.b64decode(raw, validate=True)
                if again.startswith(head):
                    hint = " (it looks base64-encoded twice)"
            except (binascii.Error, ValueError):
                pass
            return False, f"user data must start with {head!r}; it starts with {raw[:40]!r}{hint}"
        if len(raw) < len(head) + len(tail) or not raw.endswith(tail):
            return False, f"user data must end with {tail!r}; it ends with {raw[-40:]!r}"
        script = raw[len(head) : len(raw) - len(tail)]
        path = cfg["first_boot_script"]
        if path:
            try:
                with open(path, "rb") as f:
                    want = f.read()
            except OSError as e:
                return False, f"cannot read first_boot_script {path}: {e}"
            if script != want:
                return False, _describe_difference(script, want, path)
        elif not script.strip():
            return False, "the PowerShell script in the user data is empty"
        return True, None

    @staticmethod
    def launch_key(backend: Any, inst: Any) -> tuple[RSAPublicKey | None, str | None]:
        """The RSA public key Windows will encrypt the password with.

        Taken at launch, as EC2 hands the key to the instance at launch: deleting
        the key pair later does not change the password data.  moto keeps key
        pairs in ``EC2Backend.key_pairs`` (name -> moto.ec2.models.key_pairs.KeyPair);
        ``KeyPair.material_public`` is the OpenSSH public key (CreateKeyPair and
        ImportKeyPair), ``KeyPair.material`` the PEM private key (CreateKeyPair only).
        """
        name = inst.key_name
        if not name:
            return None, "the instance was launched without a key pair: GetPasswordData stays empty"
        kp = backend.key_pairs.get(name)
        if kp is None:
            return None, f"key pair {name!r} did not exist at launch"
        try:
            pub_material = kp.material_public
            if pub_material:
                if isinstance(pub_material, str):
                    pub_material = pub_material.encode("utf-8")
                pub = public_key_parse(pub_material)
            else:
                priv = kp.material if isinstance(kp.material, bytes) else kp.material.encode("utf-8")
                pub = serialization.load_pem_private_key(priv, password=None).public_key()
        except Exception as e:  # noqa: BLE001
            return None, f"cannot read the public key of key pair {name!r}: {e}"
        if not isinstance(pub, RSAPublicKey):
            return None, f"key pair {name!r} is not an RSA key ({kp.key_type}): Windows cannot encrypt its password with it"
        return pub, None

    # ------------------------------------------------------- instance lifecycle

    def on_launch(self, backend: Any, inst: Any, build_id: str) -> None:
        ok, err = self.check_user_data(inst)
        pub, perr = self.launch_key(backend, inst)
        s = InstanceSim(
            account=backend.account_id,
            region=backend.region_name,
            id=inst.id,
            build_id=build_id,
            user_data_ok=ok,
            user_data_error=err,
            public_key=pub,
            password_error=perr,
            guest_mode=self._guest_mode(backend.tags.get(inst.id, {}).get(WORKER_TYPE_TAG)),
        )
        self.instances[inst.id] = s
        if not ok:
            log.warning("%s instance %s: user data check failed, the guest will never shut down: %s", s.region, s.id, err)
        self._set_instance_state(inst, s.region, "pending", "api:RunInstances", frm=None)
        self._later(s, self.config.get("instance_boot_seconds"), self._boot, "boot")

    def _guest_mode(self, worker_type: str | None) -> str:
        """guest.mode, or guest.mode_by_worker_type's entry for the instance's worker type."""
        by = self.config.get("guest", "mode_by_worker_type") or {}
        return by.get(worker_type, self.config.get("guest", "mode"))

    def on_launch_scheduled_shutdown(self, backend: Any, inst: Any, seconds: int) -> None:
        """A Windows instance that is not a build instance, whose user data runs
        `shutdown /s /t <seconds>`: it boots, gets its password, and shuts itself down after
        the (scaled) delay, following its InstanceInitiatedShutdownBehavior."""
        pub, perr = self.launch_key(backend, inst)
        s = InstanceSim(
            account=backend.account_id,
            region=backend.region_name,
            id=inst.id,
            build_id=None,
            user_data_ok=True,
            user_data_error=None,
            public_key=pub,
            password_error=perr,
            kind="scheduled-shutdown",
            shutdown_in_seconds=seconds,
        )
        self.instances[inst.id] = s
        log.info("%s instance %s: its user data shuts Windows down %d s after boot", s.region, s.id, seconds)
        self._set_instance_state(inst, s.region, "pending", "api:RunInstances", frm=None)
        self._later(s, self.config.get("instance_boot_seconds"), self._boot, "boot")

    def _boot(self, s: InstanceSim) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "pending":
            return
        self._set_instance_state(inst, s.region, "running", "boot")
        s.running_since_wall = time.time()
        be = self.backend(s.account, s.region)
        ami = be.amis.get(inst.image_id) if be is not None else None
        self._write_console(
            s, console.boot_lines(s.running_since_wall, inst.image_id, ami.name if ami else None, inst.id, inst.instance_type)
        )
        self._post_console(s)
        if not s.first_boot:
            return  # a restarted instance: the first-boot script does not run again
        s.first_boot = False
        cfg = self.config.snapshot()
        if s.public_key is not None:
            self._later(s, cfg["password_delay_seconds"], self._password_ready, "password")
        if s.kind == "scheduled-shutdown":
            assert s.shutdown_in_seconds is not None
            delay = s.shutdown_in_seconds * cfg["user_data_shutdown_scale"]
            self._later(s, delay, self._guest_shutdown, "scheduled-shutdown")
        elif s.user_data_ok:
            self._run_first_boot_script(s, cfg["guest"])

    def _run_first_boot_script(self, s: InstanceSim, g: dict[str, Any]) -> None:
        """Schedules what the first-boot script does: `TC-AMI-STEP` lines spread evenly over
        its run time, then the shutdown (or, in mode `fail`, `TC-AMI-FAILED` and no shutdown)."""
        steps = list(g["steps"])
        if s.guest_mode == "fail":
            run_time = g["fail_after_seconds"]
            if g["fail_after_steps"] is not None:
                steps = steps[: g["fail_after_steps"]]
        else:
            run_time = g["shutdown_after_seconds"]
        for i, text in enumerate(steps):
            line = console.STEP_PREFIX + text
            self._later(s, run_time * i / len(steps), lambda s, text=text, line=line: self._step(s, text, line), "guest-step")
        if s.guest_mode == "fail":
            line = console.FAILED_PREFIX + g["fail_reason"]
            self._later(s, run_time, lambda s, reason=g["fail_reason"], line=line: self._fail(s, reason, line), "guest-failed")
        elif s.guest_mode != "never":
            self._later(s, run_time, self._guest_shutdown, "guest-shutdown")

    def _step(self, s: InstanceSim, text: str, line: str) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "running":
            return
        s.step = text
        self._console_line(s, line)

    def _fail(self, s: InstanceSim, reason: str, line: str) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "running":
            return
        s.failed = reason
        self._console_line(s, line)
        log.info("%s instance %s: the first-boot script failed (guest.mode fail); it stays running", s.region, s.id)

    def _password_ready(self, s: InstanceSim) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "running":
            s.password_error = "the instance was no longer running when Windows would have set the password"
            return
        assert s.public_key is not None
        s.password = random_windows_password()
        s.password_data = encrypt_password(s.public_key, s.password)
        self._write_console(s, console.password_lines(time.time(), s.password_data))
        self.events.record("password", s.id, s.region, None, "available", "windows-boot")

    def _guest_shutdown(self, s: InstanceSim) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "running":
            return
        mode = s.guest_mode
        terminate = mode == "terminate" or inst.instance_initiated_shutdown_behavior == "terminate"
        code, message = INSTANCE_INITIATED
        inst.state_reason = StateReason(message, code)
        inst._reason = _transition_reason()
        if terminate:
            self._set_instance_state(inst, s.region, "shutting-down", "guest-shutdown")
            self._later(s, self.config.get("instance_terminate_seconds"), self._finish_terminate_guest, "terminated")
        else:
            self._set_instance_state(inst, s.region, "stopping", "guest-shutdown")
            self._later(s, self.config.get("instance_stop_seconds"), self._finish_stop_guest, "stopped")

    def _finish_stop_guest(self, s: InstanceSim) -> None:
        self._finish_stop(s, INSTANCE_INITIATED, "guest-shutdown")

    def _finish_terminate_guest(self, s: InstanceSim) -> None:
        self._finish_terminate(s, INSTANCE_INITIATED, "guest-shutdown")

    def _finish_stop(self, s: InstanceSim, reason: tuple[str, str], cause: str) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "stopping":
            return
        transition = inst._reason
        inst.stop()  # moto: stops the NICs, sets stopped + UserInitiatedShutdown
        inst.state_reason = StateReason(reason[1], reason[0])
        inst._reason = transition or _transition_reason()
        self.events.record("instance", s.id, s.region, "stopping", "stopped", cause)
        self._post_console(s)

    def _finish_terminate(self, s: InstanceSim, reason: tuple[str, str], cause: str) -> None:
        inst = self._instance(s)
        if inst is None or inst.state != "shutting-down":
            return
        transition = inst._reason
        inst.terminate()  # moto: detaches/deletes volumes and NICs, sets terminated
        inst.state_reason = StateReason(reason[1], reason[0])
        inst._reason = transition or _transition_reason()
        self.events.record("instance", s.id, s.region, "shutting-down", "terminated", cause)
        self._post_console(s)

    # ---------------------------------------------------------- image lifecycle

    def on_image_created(self, backend: Any, ami: Any, kind: str, fail: bool, **src: Any) -> None:
        im = ImageSim(account=backend.account_id, region=backend.region_name, id=ami.id, kind=kind, fail=fail, **src)
        self.images[ami.id] = im
        ami.state = "pending"
        ami.ebs_snapshot.status = "pending"
        cause = "api:CreateImage" if kind == "create" else "api:CopyImage"
        self.events.record("image", ami.id, im.region, None, "pending", cause)
        self.events.record("snapshot", ami.ebs_snapshot.id, im.region, None, "pending", cause)
        delay = self.config.get("image_pending_seconds" if kind == "create" else "copy_pending_seconds")

        def finish() -> None:
            self._finish_image(im)

        self.scheduler.after(delay, finish, f"image {kind} {ami.id} ({im.region})")

    def _finish_image(self, im: ImageSim) -> None:
        if self.images.get(im.id) is not im:
            return
        be = self.backend(im.account, im.region)
        ami = be.amis.get(im.id) if be is not None else None
        if ami is None or ami.state != "pending":
            return  # deregistered while pending
        cause = "create-done" if im.kind == "create" else "copy-done"
        if im.fail:
            ami.state = "failed"
            ami.state_reason = dict(IMAGE_FAILED_REASON)
            snap_state = "error"
        else:
            ami.state = "available"
            snap_state = "completed"
        self.events.record("image", ami.id, im.region, "pending", ami.state, cause)
        snap = be.snapshots.get(ami.ebs_snapshot.id)
        if snap is not None and snap.status == "pending":
            snap.status = snap_state
            self.events.record("snapshot", snap.id, im.region, "pending", snap_state, cause)

    # ------------------------------------------------------------- installation

    def install(self) -> None:
        """Patches moto (once per process)."""
        if self._installed:
            return
        self._installed = True
        sim = self
        B = EC2Backend

        # --- RunInstances: moto.ec2.models.instances.InstanceBackend.run_instances
        orig_run = B.run_instances

        def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: list[str], **kwargs: Any) -> Any:
            raw = user_data_bytes(user_data)
            if raw is not None and len(raw) > USER_DATA_LIMIT:
                raise EC2ClientError("InvalidParameterValue", f"User data is limited to {USER_DATA_LIMIT} bytes")
            ami = self.amis.get(image_id) if image_id else None
            if ami is not None and ami.state != "available":
                raise EC2ClientError(
                    "InvalidAMIID.Unavailable",
                    f"The image id '[{image_id}]' is not available to launch (state: {ami.state})",
                )
            reservation = orig_run(self, image_id, count, user_data, security_group_names, **kwargs)
            for inst in reservation.instances:
                tags = self.tags.get(inst.id, {})
                if BUILD_TAG in tags:
                    sim.on_launch(self, inst, tags[BUILD_TAG])
                elif inst.platform == "windows":
                    seconds = scheduled_shutdown_seconds(raw)
                    if seconds is not None:
                        sim.on_launch_scheduled_shutdown(self, inst, seconds)
            return reservation

        B.run_instances = run_instances

        # --- StopInstances: InstanceBackend.stop_instances
        orig_stop = B.stop_instances

        def stop_instances(self: Any, instance_ids: list[str]) -> Any:
            instances = self.get_multi_instances_by_id(instance_ids)
            if not any(i.id in sim.instances for i in instances):
                return orig_stop(self, instance_ids)
            for inst in instances:
                if inst.disable_api_stop is True:
                    raise OperationDisableApiStopNotPermitted(inst.id)
                if inst.id in sim.instances and inst.state in ("pending", "shutting-down", "terminated"):
                    raise EC2ClientError(
                        "IncorrectInstanceState",
                        f"This instance '{inst.id}' is not in a state from which it can be stopped.",
                    )
            result = []
            for inst in instances:
                s = sim.instances.get(inst.id)
                if s is None:
                    result.extend(orig_stop(self, [inst.id]))
                    continue
                prev = copy.copy(inst._state)
                result.append((inst, prev))
                if inst.state in ("stopping", "stopped"):
                    continue
                s.gen += 1  # the guest's own shutdown and password no longer happen
                inst.state_reason = StateReason(USER_INITIATED[1], USER_INITIATED[0])
                inst._reason = _transition_reason()
                sim._set_instance_state(inst, s.region, "stopping", "api:StopInstances")
                delay = sim.config.get("instance_stop_seconds")
                if delay <= 0:
                    sim._finish_stop(s, USER_INITIATED, "api:StopInstances")
                else:
                    sim._later(s, delay, lambda s: sim._finish_stop(s, USER_INITIATED, "api:StopInstances"), "stopped")
            return result

        B.stop_instances = stop_instances

        # --- TerminateInstances: InstanceBackend.terminate_instances
        orig_terminate = B.terminate_instances

        def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
            if not instance_ids:
                raise InvalidParameterCombination("No instances specified")
            instances = self.get_multi_instances_by_id(instance_ids)
            if not any(i.id in sim.instances for i in instances):
                return orig_terminate(self, instance_ids)
            for inst in instances:
                if inst.disable_api_termination is True:
                    raise OperationNotPermitted4(inst.id)
            result = []
            for inst in instances:
                s = sim.instances.get(inst.id)
                if s is None:
                    result.extend(orig_terminate(self, [inst.id]))
                    continue
                prev = copy.copy(inst._state)
                result.append((inst, prev))
                if inst.state in ("shutting-down", "terminated"):
                    continue
                s.gen += 1
                inst.state_reason = StateReason(USER_INITIATED[1], USER_INITIATED[0])
                inst._reason = _transition_reason()
                sim._set_instance_state(inst, s.region, "shutting-down", "api:TerminateInstances")
                delay = sim.config.get("instance_terminate_seconds")
                if delay <= 0:
                    sim._finish_terminate(s, USER_INITIATED, "api:TerminateInstances")
                else:
                    sim._later(
                        s, delay, lambda s: sim._finish_terminate(s, USER_INITIATED, "api:TerminateInstances"), "terminated"
                    )
            return result

        B.terminate_instances = terminate_instances

        # --- StartInstances: InstanceBackend.start_instances
        orig_start = B.start_instances

        def start_instances(self: Any, instance_ids: list[str]) -> Any:
            instances = self.get_multi_instances_by_id(instance_ids)
            if not any(i.id in sim.instances for i in instances):
                return orig_start(self, instance_ids)
            for inst in instances:
                if inst.id in sim.instances and inst.state in ("stopping", "shutting-down", "terminated"):
                    raise EC2ClientError(
                        "IncorrectInstanceState",
                        f"This instance '{inst.id}' is not in a state from which it can be started.",
                    )
            result = []
            for inst in instances:
                s = sim.instances.get(inst.id)
                if s is None:
                    result.extend(orig_start(self, [inst.id]))
                    continue
                prev = copy.copy(inst._state)
                result.append((inst, prev))
                if inst.state != "stopped":
                    continue
                s.gen += 1
                inst.start()  # moto: starts the NICs, clears the state reason
                sim._set_instance_state(inst, s.region, "pending", "api:StartInstances", frm="stopped")
                sim._later(s, sim.config.get("instance_boot_seconds"), sim._boot, "boot")
            return result

        B.start_instances = start_instances

        # --- GetPasswordData: moto.ec2.models.windows.WindowsBackend.get_password_data
        orig_password = B.get_password_data

        def get_password_data(self: Any, instance_id: str) -> str:
            inst = self.get_instance(instance_id)  # InvalidInstanceID.NotFound as EC2
            s = sim.instances.get(inst.id)
            if s is None:
                return orig_password(self, instance_id)
            if not s.password_data:
                return ""
            if sim.config.get("password_data_crlf"):
                return "\r\n" + s.password_data + "\r\n"
            return s.password_data

        B.get_password_data = get_password_data

        # --- CreateImage: moto.ec2.models.amis.AmiBackend.create_image
        orig_create_image = B.create_image

        def create_image(self: Any, instance_id: str, name: str, description: str, tag_specifications: list[dict[str, Any]]) -> Any:
            _check_unique_image_name(self, name)
            ami = orig_create_image(self, instance_id, name, description, tag_specifications)
            ami.root_device_type = "ebs"  # moto says "standard"; EBS-backed instances make EBS images
            # moto snapshots a scratch volume it deletes at once; EC2 snapshots the
            # instance's root volume (Instance.block_device_mapping: device -> BlockDeviceType).
            inst = self.get_instance(instance_id)
            root = inst.block_device_mapping.get(inst.root_device_name)
            vol = self.volumes.get(root.volume_id) if root is not None else None
            if vol is not None:
                ami.ebs_snapshot.volume = vol
            if instance_id in sim.instances:
                fail = sim.config.take_one_shot("image_fail")
                sim.on_image_created(self, ami, "create", fail, source_instance_id=instance_id)
            else:
                sim.events.record("image", ami.id, self.region_name, None, ami.state, "api:CreateImage")
            return ami

        B.create_image = create_image

        # --- CopyImage: AmiBackend.copy_image (runs on the destination region's backend)
        orig_copy_image = B.copy_image

        def copy_image(self: Any, source_image_id: str, source_region: str, name: str | None = None, description: str | None = None) -> Any:
            src_backend = ec2_backends[self.account_id][source_region]
            src = src_backend.amis.get(source_image_id)
            if src is not None and src.state != "available":
                raise EC2ClientError(
                    "IncorrectState",
                    f"Image {source_image_id} in {source_region} is not available for copying (state: {src.state})",
                )
            _check_unique_image_name(self, name or (src.name if src is not None else None))
            ami = orig_copy_image(self, source_image_id, source_region, name, description)
            if src is not None:
                ami.root_device_type = src.root_device_type
                ami.root_device_name = src.root_device_name
            ami.source_image_id = source_image_id  # serialised as SourceImageId
            ami.source_image_region = source_region  # serialised as SourceImageRegion
            if source_image_id in sim.images:
                fail = sim.config.take_one_shot("copy_fail")
                sim.on_image_created(
                    self, ami, "copy", fail, source_image_id=source_image_id, source_region=source_region
                )
            else:
                sim.events.record("image", ami.id, self.region_name, None, ami.state, "api:CopyImage")
            return ami

        B.copy_image = copy_image

        # --- DeregisterImage / DeleteSnapshot: only logged
        orig_deregister = B.deregister_image

        def deregister_image(self: Any, ami_id: str) -> None:
            ami = self.amis.get(ami_id)
            old = ami.state if ami is not None else None
            orig_deregister(self, ami_id)
            sim.events.record("image", ami_id, self.region_name, old, "deregistered", "api:DeregisterImage")

        B.deregister_image = deregister_image

        orig_delete_snapshot = B.delete_snapshot

        def delete_snapshot(self: Any, snapshot_id: str) -> Any:
            snap = orig_delete_snapshot(self, snapshot_id)
            sim.events.record("snapshot", snapshot_id, self.region_name, snap.status, "deleted", "api:DeleteSnapshot")
            return snap

        B.delete_snapshot = delete_snapshot

        # --- DeleteSecurityGroup: SecurityGroupBackend.delete_security_group.
        # EC2 refuses while an instance that is not yet `terminated` uses the group.
        orig_delete_sg = B.delete_security_group

        def delete_security_group(self: Any, name: str | None = None, group_id: str | None = None) -> None:
            sg = self.get_security_group_from_id(group_id) if group_id else (
                self.get_security_group_by_name_or_id(name) if name else None
            )
            if sg is not None:
                for inst in self.all_instances():
                    if inst.state == "terminated":
                        continue
                    groups = {g.id for g in (inst.security_groups or []) if hasattr(g, "id")}
                    for nic in inst.nics.values():
                        groups |= {g.id for g in getattr(nic, "group_set", []) if hasattr(g, "id")}
                    if sg.id in groups:
                        raise DependencyViolationError(f"resource {sg.id} has a dependent object")
            return orig_delete_sg(self, name=name, group_id=group_id)

        B.delete_security_group = delete_security_group

        # --- response level: tag specifications moto ignores or chokes on; GetConsoleOutput
        _install_response_patches(sim)


def _check_unique_image_name(backend: Any, name: str | None) -> None:
    """EC2: an account's image names are unique per region."""
    if not name:
        return
    for ami in backend.amis.values():
        if ami.name == name and ami.owner_id == backend.account_id:
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")


def _tags_of(spec_list: list[dict[str, Any]], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in spec_list or []:
        if spec.get("ResourceType") == resource_type:
            for t in spec.get("Tags") or []:
                tags[t["Key"]] = t.get("Value", "")
    return tags


def _request_parameters(response: Any) -> list[tuple[str, tuple[str, ...]]]:
    """The request's parameters but the client token, in a comparable form."""
    return sorted((k, tuple(v)) for k, v in response.querystring.items() if k != "ClientToken")


def _idempotent(response: Any, action: str, token: str) -> Any:
    """The result remembered for (action, token) in this region, if the parameters are the
    same; None for a new token. Raises IdempotentParameterMismatch for other parameters."""
    tokens = getattr(response.ec2_backend, "_sandbox_client_tokens", {})
    seen = tokens.get((action, token))
    if seen is None:
        return None
    params, result = seen
    if params != _request_parameters(response):
        raise EC2ClientError(
            "IdempotentParameterMismatch",
            "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
        )
    log.info("%s with client token %s again: the first call's result", action, token)
    return result


def _remember(response: Any, action: str, token: str, result: Any) -> None:
    """Kept on the region's backend, so a reset forgets the tokens with everything else."""
    be = response.ec2_backend
    if not hasattr(be, "_sandbox_client_tokens"):
        be._sandbox_client_tokens = {}
    be._sandbox_client_tokens[(action, token)] = (_request_parameters(response), result)


def _install_response_patches(sim: Simulator) -> None:
    """Patches on moto.ec2.responses.EC2Response (methods from
    moto/ec2/responses/amis.py, elastic_block_store.py and general.py)."""
    R = EC2Response

    # GetConsoleOutput: moto (responses/general.py) answers a fixed Linux boot log for
    # every instance; a simulated guest has its own console.
    orig_console_output = R.get_console_output

    def get_console_output(self: Any) -> ActionResult:
        inst = self.ec2_backend.get_instance(self._get_param("InstanceId"))  # InvalidInstanceID.NotFound
        s = sim.instances.get(inst.id)
        if s is None:
            return orig_console_output(self)
        latest = self._get_bool_param("Latest", False)
        self.error_on_dryrun()
        output, t = sim.console_output(s, latest)
        when = datetime.datetime.fromtimestamp(t if t is not None else time.time(), datetime.timezone.utc)
        result: dict[str, Any] = {"InstanceId": inst.id, "Timestamp": when.replace(tzinfo=None)}
        if output is not None:
            result["Output"] = output
        return ActionResult(result)

    R.get_console_output = get_console_output

    # RunInstances / CopyImage with a ClientToken: moto stores the token but does not honour
    # it, so an SDK's retry of a call whose answer was lost would make a second instance or
    # copy. EC2 returns the first call's result for the same token and parameters, and
    # IdempotentParameterMismatch for the same token with other parameters.
    orig_run_instances = R.run_instances

    def run_instances(self: Any) -> ActionResult:
        token = self._get_param("ClientToken")
        if not token:
            return orig_run_instances(self)
        seen = _idempotent(self, "RunInstances", token)
        if seen is not None:
            return ActionResult(seen)
        result = orig_run_instances(self)
        _remember(self, "RunInstances", token, result.result)
        return result

    R.run_instances = run_instances

    # CreateImage with a `snapshot` TagSpecification: moto raises
    # NotImplementedError (an invalid XML answer); EC2 tags the new snapshots.
    def create_image(self: Any) -> ActionResult:
        name = self._get_param("Name")
        description = self._get_param("Description", "")
        instance_id = self._get_param("InstanceId")
        specs = self._get_param("TagSpecifications", []) or []
        for spec in specs:
            if spec.get("ResourceType") not in ("image", "snapshot"):
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.",
                )
        self.error_on_dryrun()
        image_specs = [s for s in specs if s.get("ResourceType") == "image"]
        image = self.ec2_backend.create_image(instance_id, name, description, tag_specifications=image_specs)
        snap_tags = _tags_of(specs, "snapshot")
        if snap_tags:
            image.ebs_snapshot.add_tags(snap_tags)
        return ActionResult({"ImageId": image.id})

    R.create_image = create_image

    # CopyImage: moto ignores TagSpecifications, CopyImageTags and ClientToken.
    def copy_image(self: Any) -> ActionResult:
        token = self._get_param("ClientToken")
        if token:
            seen = _idempotent(self, "CopyImage", token)
            if seen is not None:
                return ActionResult({"ImageId": seen})
        source_image_id = self._get_param("SourceImageId")
        source_region = self._get_param("SourceRegion")
        name = self._get_param("Name")
        description = self._get_param("Description")
        specs = self._get_param("TagSpecifications", []) or []
        copy_tags = str(self._get_param("CopyImageTags", False)).lower() == "true"
        self.error_on_dryrun()
        image = self.ec2_backend.copy_image(source_image_id, source_region, name, description)
        tags: dict[str, str] = {}
        if copy_tags:
            src_backend = ec2_backends[self.ec2_backend.account_id][source_region]
            tags.update({k: v for k, v in src_backend.tags.get(source_image_id, {}).items() if not k.startswith("aws:")})
        tags.update(_tags_of(specs, "image"))
        if tags:
            image.add_tags(tags)
        snap_tags = _tags_of(specs, "snapshot")
        if snap_tags:
            image.ebs_snapshot.add_tags(snap_tags)
        if token:
            _remember(self, "CopyImage", token, image.id)
        return ActionResult({"ImageId": image.id})

    R.copy_image = copy_image

    # DescribeSnapshots: moto ignores OwnerIds, MaxResults and NextToken.
    orig_describe_snapshots = R.describe_snapshots

    def describe_snapshots(self: Any) -> Any:
        owners = self._get_param("OwnerIds", []) or []
        paged = paging.requested(self)
        if not owners and not paged:
            return orig_describe_snapshots(self)
        filters = self._filters_from_querystring()
        snapshot_ids = self._get_param("SnapshotIds", [])
        snapshots = self.ec2_backend.describe_snapshots(snapshot_ids=snapshot_ids, filters=filters)
        account = self.ec2_backend.account_id
        from .seed import AMAZON_OWNER_IDS

        def owned(snap: Any) -> bool:
            for o in owners:
                if o == "self" and snap.owner_id == account:
                    return True
                if o == "amazon" and snap.owner_id in AMAZON_OWNER_IDS:
                    return True
                if o == snap.owner_id:
                    return True
            return False

        if owners:
            snapshots = [s for s in snapshots if owned(s)]
        if not paged:
            return ActionResult({"Snapshots": snapshots})
        snapshots, token = paging.page_request(self, "DescribeSnapshots", snapshots, key=lambda x: x.id)
        return ActionResult({"Snapshots": snapshots, "NextToken": token})

    R.describe_snapshots = describe_snapshots

    # DescribeImages / DescribeSecurityGroups: moto ignores MaxResults and NextToken
    # (moto/ec2/responses/amis.py, security_groups.py).
    orig_describe_images = R.describe_images

    def describe_images(self: Any) -> Any:
        if not paging.requested(self):
            return orig_describe_images(self)
        self.error_on_dryrun()
        images = self.ec2_backend.describe_images(
            ami_ids=self._get_param("ImageIds", []),
            filters=self._filters_from_querystring(),
            exec_users=self._get_param("ExecutableUsers", []),
            owners=self._get_param("Owners", []),
        )
        images, token = paging.page_request(self, "DescribeImages", images, key=lambda x: x.id)
        return ActionResult({"Images": images, "NextToken": token})

    R.describe_images = describe_images

    orig_describe_security_groups = R.describe_security_groups

    def describe_security_groups(self: Any) -> Any:
        if not paging.requested(self):
            return orig_describe_security_groups(self)
        groups = self.ec2_backend.describe_security_groups(
            group_ids=self._get_param("GroupIds", []),
            groupnames=self._get_param("GroupNames", []),
            filters=self._filters_from_querystring(),
        )
        groups, token = paging.page_request(self, "DescribeSecurityGroups", groups, key=lambda x: x.id)
        return ActionResult({"SecurityGroups": groups, "NextToken": token})

    R.describe_security_groups = describe_security_groups

    # DescribeInstances: moto pages by itself, but returns only 100 reservations when no
    # MaxResults is given, takes a reservation id as the token and answers 500 for one it
    # does not know (moto/ec2/responses/instances.py). Same filters, EC2's paging rules.
    def describe_instances(self: Any) -> Any:
        self.error_on_dryrun()
        if "InstanceId.1" in self.data and "MaxResults" in self.data:
            raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
        filter_dict = self._filters_from_querystring()
        instance_ids = self._get_param("InstanceIds", [])
        if instance_ids:
            reservations = self.ec2_backend.get_reservations_by_instance_ids(instance_ids, filters=filter_dict)
        else:
            reservations = self.ec2_backend.describe_instances(filters=filter_dict)
        if not paging.requested(self):
            return ActionResult({"Reservations": reservations})
        reservations, token = paging.page_request(self, "DescribeInstances", reservations, key=lambda x: x.id)
        return ActionResult({"Reservations": reservations, "NextToken": token})

    R.describe_instances = describe_instances
