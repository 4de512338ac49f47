"""Running the tc-ami binary and reading its progress as it happens.

tc-ami prints one stderr line when each stage begins (src/progress.rs):

    2026-11-24T22:01:35Z [    2.1s] waiting for the Windows password

with a UTC timestamp of second resolution and the time since tc-ami's progress clock started
(0.1 s resolution). The benchmark reads stderr through a pipe and stamps every line with the
wall-clock time at which it arrived (microseconds after tc-ami wrote it); that arrival time is
"when tc-ami noticed". The `[elapsed]` field is kept too, and turned into absolute time from the
process start the benchmark records, as a cross-check (`progress_clock_offset`: how long after
the spawn tc-ami's progress clock started).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \[\s*([0-9.]+)s\] (.*)$")

# The stage line that tc-ami prints right after it has seen each transition (src/build.rs).
NOTICED_BY = {
    "running": "waiting for the Windows password",
    "password": "waiting for first-boot.ps1 to shut the instance down",
    "stopped": "creating the image",
    "image": "copying the image to other regions",
    "copy": "storing the administrator password",
    # Teardown prints one line once the instance is terminated and the group and key pair
    # are deleted.
    "terminated": "removed instance ",
}


def run(binary: str, args: list[str], env: dict[str, str], timeout: float = 600) -> dict:
    """Runs tc-ami; returns spawn/exit times, exit code, stdout and the timestamped stderr lines."""
    lines: list[tuple[float, str]] = []
    out_chunks: list[bytes] = []
    t_spawn = time.time()
    proc = subprocess.Popen(
        [binary, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )

    def read_err() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            lines.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))

    def read_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"tc-ami {' '.join(args)} did not finish within {timeout}s")
    t_exit = time.time()
    for t in threads:
        t.join(10)
    return {
        "args": args,
        "code": code,
        "start": t_spawn,
        "end": t_exit,
        "wall": t_exit - t_spawn,
        "stdout": b"".join(out_chunks).decode("utf-8", "replace"),
        "stderr": [text for _, text in lines],
        "lines": lines,
    }


def build_record(result: dict) -> dict:
    """The build's ids and the moments it noticed each transition, from its progress lines."""
    notice: dict[str, float] = {}
    elapsed_notice: dict[str, float] = {}
    instance = image = copy = copy_region = None
    offsets = []
    for arrived, text in result["lines"]:
        m = LINE.match(text)
        if not m:
            continue
        elapsed, msg = float(m.group(2)), m.group(3)
        offsets.append(arrived - result["start"] - elapsed)
        for stage, prefix in NOTICED_BY.items():
            if msg.startswith(prefix) and stage not in notice:
                notice[stage] = arrived
                elapsed_notice[stage] = elapsed
        if (mm := re.match(r"instance (i-[0-9a-f]+) \(", msg)) and instance is None:
            instance = mm.group(1)
        if (mm := re.match(r"image (ami-[0-9a-f]+) \(", msg)) and image is None:
            image = mm.group(1)
        if (mm := re.match(r"copy (ami-[0-9a-f]+) in (\S+)", msg)) and copy is None:
            copy, copy_region = mm.group(1), mm.group(2)
    # The progress clock starts after the spawn (once the config is read and the AWS client
    # made); the median offset turns `[elapsed]` into absolute time for the cross-check.
    offset = statistics.median(offsets) if offsets else 0.0
    return {
        "start": result["start"],
        "end": result["end"],
        "notice": notice,
        "notice_from_elapsed": {s: result["start"] + offset + e for s, e in elapsed_notice.items()},
        "progress_clock_offset": offset,
        "instance": instance,
        "image": image,
        "copy": copy,
        "copy_region": copy_region,
        "client": "tc-ami",
    }
