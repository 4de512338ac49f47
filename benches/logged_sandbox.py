#!/usr/bin/env python3
"""The EC2 sandbox (sandbox/ec2_sandbox.py), unchanged, plus a log of every EC2 request.

    python benches/logged_sandbox.py --request-log FILE [ec2_sandbox.py options...]

The sandbox's own `/_sandbox/stats` counts requests per action but not when they arrived or who
sent them; the benchmark needs both, to count the calls made while a build waits and to find
the poll that noticed each transition. This wraps the sandbox's request classifier
(`ec2.faults.classify`, which sees every request before moto does) so that each EC2 request is
appended to FILE as one tab-separated line:

    <unix time of arrival>\t<region>\t<action>\t<client>

`client` is `bench-strategy/<name>` when the User-Agent carries that marker (the benchmark's
boto3 pipelines add it), `tc-ami` for the Rust SDK (`aws-sdk-rust`), else `other`. Everything
else (READY line, control API, options) is ec2_sandbox.py's.
"""

from __future__ import annotations

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOX = os.path.join(os.path.dirname(HERE), "sandbox")


def client_of(environ: dict) -> str:
    ua = " ".join(environ.get(k, "") for k in ("HTTP_USER_AGENT", "HTTP_X_AMZ_USER_AGENT"))
    for word in ua.split():
        if word.startswith("bench-strategy/"):
            return word
    return "tc-ami" if "aws-sdk-rust" in ua else "other"


def main() -> int:
    argv = sys.argv[1:]
    if "--request-log" not in argv:
        print("logged_sandbox.py: --request-log FILE is required", file=sys.stderr)
        return 2
    i = argv.index("--request-log")
    path = argv[i + 1]
    del argv[i : i + 2]

    sys.path.insert(0, SANDBOX)
    import ec2.faults as faults  # does not import moto (see sandbox/ec2/__init__.py)
    import ec2_sandbox

    out = open(path, "a", buffering=1, encoding="utf-8")
    lock = threading.Lock()
    classify = faults.classify

    def logged_classify(environ: dict):
        t = time.time()
        info = classify(environ)
        if info.service == "ec2":
            with lock:
                out.write(f"{t:.6f}\t{info.region}\t{info.action}\t{client_of(environ)}\n")
        return info

    # ec2.app does `from .faults import classify` when ec2_sandbox.main() imports it, later.
    faults.classify = logged_classify
    return ec2_sandbox.main(argv)


if __name__ == "__main__":
    sys.exit(main())
