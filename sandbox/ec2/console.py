"""The serial console (COM1) of a simulated Windows guest, as GetConsoleOutput returns it.

A guest's console is a list of lines (written with ``\\r\\n``, as Windows does).  Three kinds
are written:

* what EC2Launch v1 (the launch agent of Windows Server 2016 AMIs) writes at boot, shaped
  like a real log (``2020/02/17 13:25:08Z: AMI-ID: ami-…``, ``Message: Windows is Ready to
  use``, the ``<Password>`` block); only lines whose values the sandbox knows are written;
* tc-ami's console protocol (shared PRODUCT.md, "The guest's console protocol"):
  ``TC-AMI-STEP: <text>`` when the first-boot script starts a stage and
  ``TC-AMI-FAILED: <reason>`` when it gives up, each at the start of its own line;
* nothing else: the sandbox does not invent Windows event-log lines.

EC2 keeps the most recent 64 KB.  Without ``Latest=true`` it returns what was "posted
shortly after an instance transition state (start, stop, reboot, or terminate)"; with it,
the latest output.  Pure functions, no moto.
"""

from __future__ import annotations

import base64
import datetime
import re

MAX_BYTES = 64 * 1024  # "Only the most recent 64 KB of console output is available."
STEP_PREFIX = "TC-AMI-STEP: "
FAILED_PREFIX = "TC-AMI-FAILED: "

_WINDOWS_NAME = re.compile(r"^(?P<base>Windows_Server-(?P<version>\d{4})-[A-Za-z_]+-\w+-.+?)-(?P<date>\d{4}\.\d{2}\.\d{2})$")
_NT_VERSION = {"2016": "10.0", "2019": "10.0", "2022": "10.0", "2025": "10.0"}


def stamp(t: float) -> str:
    """EC2Launch's time prefix: ``2020/02/17 13:25:08Z``."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y/%m/%d %H:%M:%SZ")


def boot_lines(t: float, image_id: str, image_name: str | None, instance_id: str, instance_type: str) -> list[str]:
    """What EC2Launch v1 writes to the console when Windows has booted."""
    ts = stamp(t)
    lines = [
        f"{ts}: Windows sysprep configuration complete.",
        f"{ts}: Message: Waiting for meta-data accessibility...",
        f"{ts}: Message: Meta-data is now available.",
    ]
    m = _WINDOWS_NAME.match(image_name or "")
    if m:
        lines += [
            f"{ts}: AMI Origin Version: {m['date']}",
            f"{ts}: AMI Origin Name: {m['base']}",
        ]
        if m["version"] in _NT_VERSION:
            lines.append(f"{ts}: OS: Microsoft Windows NT {_NT_VERSION[m['version']]}")
    lines += [
        f"{ts}: AMI-ID: {image_id}",
        f"{ts}: Instance-ID: {instance_id}",
        f"{ts}: Instance Type: {instance_type}",
        f"{ts}: Message: Windows is Ready to use",
    ]
    return lines


def password_lines(t: float, password_data: str) -> list[str]:
    """The block EC2Launch writes once it has set the administrator password."""
    ts = stamp(t)
    return [f"{ts}: Username: Administrator", f"{ts}: Password: <Password>", password_data, "</Password>"]


def encode(lines: list[str]) -> str | None:
    """The base64 ``Output`` of GetConsoleOutput: the last 64 KB of the lines, each ended
    with CRLF; None when nothing was written yet (EC2 then omits ``Output``)."""
    if not lines:
        return None
    raw = "".join(line + "\r\n" for line in lines).encode("utf-8")
    return base64.b64encode(raw[-MAX_BYTES:]).decode("ascii")
