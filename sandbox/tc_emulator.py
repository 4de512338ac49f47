#!/usr/bin/env python3
"""Emulator of the Taskcluster worker-manager, secrets, queue and hooks services, for tests and the sandbox.

    python sandbox/tc_emulator.py [--port 0] --seed sandbox/seed/taskcluster.json

Serves on 127.0.0.1 (port 0 = a free port), prints exactly one line `READY <rootUrl>` on
stdout once it accepts connections, logs to stderr, exits cleanly on SIGTERM/SIGINT.
APIs: <rootUrl>/api/worker-manager/v1/..., <rootUrl>/api/secrets/v1/..., <rootUrl>/api/queue/v1/...,
<rootUrl>/api/hooks/v1/...,
with simulated workers running the tasks; control API under
<rootUrl>/_emulator/. See sandbox/TASKCLUSTER.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tc_emulator_lib.server import GENERATED_DIR, Emulator, SeedError, serve  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Taskcluster worker-manager, secrets, queue and hooks emulator (sandbox only).")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--seed", required=True, help="seed file: clients, roles, providers, workerPools, secrets, hooks")
    p.add_argument("--schemas", default=GENERATED_DIR,
                   help="directory with the official generated schemas and references (default: the vendored copy)")
    p.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("--ec2-url", help="the EC2 sandbox's URL: worker images are checked there "
                                     "(overrides the seed's simulation.ec2Url)")
    p.add_argument("--time-scale", type=float, help="real seconds per simulated second, e.g. 0.001; 0 freezes "
                                                    "the simulation (overrides the seed's simulation.timeScale)")
    args = p.parse_args(argv)
    overrides = {}
    if args.ec2_url is not None:
        overrides["ec2Url"] = args.ec2_url
    if args.time_scale is not None:
        overrides["timeScale"] = args.time_scale

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING if args.quiet else logging.INFO,
                        format="tc-emulator: %(message)s")
    log = logging.getLogger("tc-emulator")
    try:
        emulator = Emulator(args.seed, args.schemas, log, simulation=overrides)
    except SeedError as e:
        print(f"tc-emulator: {e}", file=sys.stderr)
        return 2
    try:
        srv = serve(emulator, args.port)
    except OSError as e:
        print(f"tc-emulator: cannot listen on 127.0.0.1:{args.port}: {e.strerror}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True)
    thread.start()
    emulator.start_clock()
    log.info("serving %s (seed %s)", emulator.root_url, emulator.seed_path)
    print(f"READY {emulator.root_url}", flush=True)
    while not stop.wait(3600):
        pass
    log.info("stopping")
    emulator.stop_clock()
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
