"""Sandbox configuration: defaults, deep merge and validation.

The configuration is one JSON object.  ``GET /_sandbox/config`` shows it,
``POST /_sandbox/config`` deep-merges a JSON object into it, ``--config`` sets
the initial values.  Unknown keys and bad values are refused with a message
naming the key, so a typo in a test does not silently do nothing.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any

GUEST_MODES = ("stop", "never", "terminate", "fail")
MAX_EXTRA_WINDOWS_IMAGES = 5000
FAULT_KINDS = ("throttle", "500", "denied", "lost-500", "lost-connection")

# The stages of scripts/first-boot.ps1, in its order (see its comments).
DEFAULT_STEPS = (
    "checking the pinned downloads",
    "configuring Windows: indexing, Defender, firewall, hosts",
    "downloading and verifying the Taskcluster binaries",
    "installing the Generic Worker and worker-runner services",
    "installing .NET Framework 4.8",
    "installing Git",
    "installing Python",
    "installing Visual Studio Build Tools",
    "installing GStreamer",
    "configuring EC2Launch",
)
# What scripts/first-boot.ps1 throws while its $Pins lack hashes (it names every
# entry whose Sha256 is empty).
DEFAULT_FAIL_REASON = (
    "No SHA-256 pinned for: GenericWorker, StartWorker, Livelog, TcProxy, Nssm, VsBuildTools, Gst, GstDevel. "
    "Fill in $Pins (see FIRST-BOOT.md)."
)

DEFAULTS: dict[str, Any] = {
    # Seconds a tc-ami instance stays `pending` after RunInstances.
    "instance_boot_seconds": 1,
    # Seconds after `running` until GetPasswordData returns the password.
    "password_delay_seconds": 1,
    "guest": {
        # stop: the guest's first-boot script shuts Windows down; EC2 then
        #       stops or terminates the instance according to its
        #       InstanceInitiatedShutdownBehavior (default stop).
        # never: the guest never shuts down.
        # terminate: the guest shuts down and the instance terminates,
        #       whatever its InstanceInitiatedShutdownBehavior.
        # fail: the script gives up after fail_after_seconds: it writes
        #       `TC-AMI-FAILED: <fail_reason>` to the console and does NOT shut down.
        "mode": "stop",
        # {worker type: mode}: the mode of a build instance whose tag
        # tc-ami:worker-type names that worker type (null: `mode` for all), so that
        # builds of several worker types at once can fare differently.
        "mode_by_worker_type": None,
        # Seconds after `running` until the guest shuts down.
        "shutdown_after_seconds": 3,
        # The stages the first-boot script announces on the serial console
        # (`TC-AMI-STEP: <stage>`), spread evenly over its run time.
        "steps": list(DEFAULT_STEPS),
        # mode "fail": seconds after `running` until `TC-AMI-FAILED`.
        "fail_after_seconds": 2,
        # mode "fail": how many steps are written before the failure (null: all).
        "fail_after_steps": None,
        # mode "fail": the reason on the `TC-AMI-FAILED:` line.
        "fail_reason": DEFAULT_FAIL_REASON,
    },
    # Seconds an image made by CreateImage from a tc-ami instance is `pending`.
    "image_pending_seconds": 2,
    # Seconds a CopyImage copy of such an image is `pending` (destination region).
    "copy_pending_seconds": 2,
    # Seconds a tc-ami instance spends in `stopping` (guest- or API-initiated).
    "instance_stop_seconds": 1,
    # Seconds a tc-ami instance spends in `shutting-down` before `terminated`.
    "instance_terminate_seconds": 1,
    # Path of the first-boot script; when set, the user data's script must equal
    # this file byte for byte.  Relative paths are resolved against the
    # sandbox's working directory when the config is set.
    "first_boot_script": None,
    # Exact text allowed before `<powershell>` / after `</powershell>`.
    "user_data_prefix": "",
    "user_data_suffix": "",
    # A Windows instance without the build tag whose user data runs
    # `shutdown /s /t N` shuts itself down N x this factor seconds after `running`
    # (1: as on EC2; e.g. 0.001 turns a 4 h TTL into 14.4 s).
    "user_data_shutdown_scale": 1,
    # One-shot: the next image created from a tc-ami instance ends `failed`.
    "image_fail": False,
    # One-shot: the next copy of a tc-ami image ends `failed`.
    "copy_fail": False,
    # Wrap the base64 PasswordData in "\r\n" (as EC2Config writes it to the
    # console); off by default.
    "password_data_crlf": False,
    # N more Amazon Windows base images in every region, named like Amazon's
    # (versions x locales x Full/Core x flavours, monthly releases up to
    # 2023.12), to try listing and paging over thousands of images.
    "extra_windows_images": 0,
    "faults": {
        # Fraction of EC2 API requests answered with an injected error.
        "rate": 0,
        # Error kinds to choose from: "throttle" (503 RequestLimitExceeded),
        # "500" (500 InternalError), "denied" (403 UnauthorizedOperation, not retried),
        # both with no side effect; "lost-500" (the call is applied, then answered
        # 500 InternalError) and "lost-connection" (applied, then the connection
        # closes with no answer): a lost response.
        "kinds": ["throttle", "500"],
        # Seed of the random generator deciding which requests fail.
        "seed": 1,
        # Only these EC2 actions can fail (null: all).
        "actions": None,
        # The next N EC2 requests (of `actions`, if set) fail, whatever `rate`.
        "next": 0,
    },
}


class ConfigError(ValueError):
    pass


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Returns a copy of ``base`` with ``patch`` merged in: dicts recursively,
    everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _num(cfg: dict[str, Any], key: str, path: str, lo: float = 0, hi: float | None = None) -> None:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{path}{key}: must be a number, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{path}{key}: must be {rng}, got {v!r}")


def _bool(cfg: dict[str, Any], key: str, path: str = "") -> None:
    if not isinstance(cfg[key], bool):
        raise ConfigError(f"{path}{key}: must be true or false, got {cfg[key]!r}")


def _str(cfg: dict[str, Any], key: str, path: str = "") -> None:
    if not isinstance(cfg[key], str):
        raise ConfigError(f"{path}{key}: must be a string, got {cfg[key]!r}")


def _known(cfg: dict[str, Any], template: dict[str, Any], path: str) -> None:
    unknown = sorted(set(cfg) - set(template))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(path + k for k in unknown)}; "
            f"known: {', '.join(path + k for k in sorted(template))}"
        )
    for key, sub in template.items():
        if isinstance(sub, dict):
            if not isinstance(cfg.get(key), dict):
                raise ConfigError(f"{path}{key}: must be an object, got {cfg.get(key)!r}")
            _known(cfg[key], sub, f"{path}{key}.")


def _one_line(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != "" and "\r" not in v and "\n" not in v


def _validate_console(g: dict[str, Any]) -> None:
    steps = g["steps"]
    if not isinstance(steps, list) or not all(_one_line(x) for x in steps):
        raise ConfigError(f"guest.steps: must be a list of one-line, non-blank strings, got {steps!r}")
    _num(g, "fail_after_seconds", "guest.")
    n = g["fail_after_steps"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"guest.fail_after_steps: must be null or an integer >= 0, got {n!r}")
    if not _one_line(g["fail_reason"]):
        raise ConfigError(f"guest.fail_reason: must be a one-line, non-blank string, got {g['fail_reason']!r}")


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Checks a complete config; returns it normalised (fault kinds as strings,
    first_boot_script as an absolute path)."""
    cfg = copy.deepcopy(cfg)
    _known(cfg, DEFAULTS, "")
    for key in (
        "instance_boot_seconds",
        "password_delay_seconds",
        "image_pending_seconds",
        "copy_pending_seconds",
        "instance_stop_seconds",
        "instance_terminate_seconds",
        "user_data_shutdown_scale",
    ):
        _num(cfg, key, "")
    _num(cfg["guest"], "shutdown_after_seconds", "guest.")
    if cfg["guest"]["mode"] not in GUEST_MODES:
        raise ConfigError(f"guest.mode: must be one of {', '.join(GUEST_MODES)}, got {cfg['guest']['mode']!r}")
    by = cfg["guest"]["mode_by_worker_type"]
    if by is not None and (
        not isinstance(by, dict) or not all(isinstance(k, str) and v in GUEST_MODES for k, v in by.items())
    ):
        raise ConfigError(
            f"guest.mode_by_worker_type: must be null or an object of worker type -> one of {', '.join(GUEST_MODES)}, got {by!r}"
        )
    _validate_console(cfg["guest"])
    for key in ("image_fail", "copy_fail", "password_data_crlf"):
        _bool(cfg, key)
    for key in ("user_data_prefix", "user_data_suffix"):
        _str(cfg, key)
    n = cfg["extra_windows_images"]
    if isinstance(n, bool) or not isinstance(n, int) or not (0 <= n <= MAX_EXTRA_WINDOWS_IMAGES):
        raise ConfigError(f"extra_windows_images: must be an integer from 0 to {MAX_EXTRA_WINDOWS_IMAGES}, got {n!r}")
    script = cfg["first_boot_script"]
    if script is not None:
        if not isinstance(script, str) or not script:
            raise ConfigError(f"first_boot_script: must be null or a file path, got {script!r}")
        script = os.path.abspath(script)
        if not os.path.isfile(script):
            raise ConfigError(f"first_boot_script: {script} is not a readable file")
        cfg["first_boot_script"] = script
    f = cfg["faults"]
    _num(f, "rate", "faults.", 0, 1)
    if not isinstance(f["kinds"], list) or not f["kinds"]:
        raise ConfigError(f"faults.kinds: must be a non-empty list of {', '.join(FAULT_KINDS)}, got {f['kinds']!r}")
    f["kinds"] = [str(k) for k in f["kinds"]]
    bad = [k for k in f["kinds"] if k not in FAULT_KINDS]
    if bad:
        raise ConfigError(f"faults.kinds: unknown kind(s) {bad}; known: {', '.join(FAULT_KINDS)}")
    if f["seed"] is not None and (isinstance(f["seed"], bool) or not isinstance(f["seed"], (int, str))):
        raise ConfigError(f"faults.seed: must be null, an integer or a string, got {f['seed']!r}")
    if f["actions"] is not None and (
        not isinstance(f["actions"], list) or not all(isinstance(a, str) for a in f["actions"])
    ):
        raise ConfigError(f"faults.actions: must be null or a list of EC2 action names, got {f['actions']!r}")
    if isinstance(f["next"], bool) or not isinstance(f["next"], int) or f["next"] < 0:
        raise ConfigError(f"faults.next: must be an integer >= 0, got {f['next']!r}")
    return cfg


class Config:
    """The live configuration, shared by the request handlers and the
    simulator thread.  Readers get deep copies (``snapshot``) or single values
    (``get``); writers go through ``merge``/``set``."""

    def __init__(self, initial_patch: dict[str, Any] | None = None):
        self._lock = threading.Lock()
        self.initial = validate(deep_merge(DEFAULTS, initial_patch or {}))
        self._cfg = copy.deepcopy(self.initial)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._cfg)

    def get(self, *path: str) -> Any:
        with self._lock:
            v: Any = self._cfg
            for p in path:
                v = v[p]
            return copy.deepcopy(v)

    def merge(self, patch: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Deep-merges ``patch``; returns (old, new).  Raises ConfigError."""
        if not isinstance(patch, dict):
            raise ConfigError("the config must be a JSON object")
        with self._lock:
            new = validate(deep_merge(self._cfg, patch))
            old, self._cfg = self._cfg, new
            return copy.deepcopy(old), copy.deepcopy(new)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        """Sets one value without validation (used for one-shot flags and the
        `faults.next` countdown)."""
        with self._lock:
            d = self._cfg
            for p in path[:-1]:
                d = d[p]
            d[path[-1]] = value

    def take_one_shot(self, key: str) -> bool:
        """Returns the boolean flag ``key`` and clears it, atomically."""
        with self._lock:
            v = bool(self._cfg.get(key))
            self._cfg[key] = False
            return v

    def reset(self) -> None:
        with self._lock:
            self._cfg = copy.deepcopy(self.initial)
