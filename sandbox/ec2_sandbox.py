#!/usr/bin/env python3
"""EC2 sandbox for tc-ami: moto's EC2 server plus a Windows-guest simulator.

    python sandbox/ec2_sandbox.py [--port 0] [--amis PATH] [--config JSON|@FILE]
                                  [--log-requests] [--parent-pid PID]

Serves on 127.0.0.1 only.  Prints exactly one line, ``READY http://127.0.0.1:<port>``,
on stdout once it accepts connections; everything else goes to stderr.  Stops
cleanly on SIGTERM / SIGINT.  See sandbox/EC2.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_AMIS = os.path.join(HERE, "seed", "windows-amis.json")

log = logging.getLogger("ec2-sandbox")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ec2_sandbox.py",
        description="moto's EC2 server with a simulated Windows guest, AWS-like delays, "
        "fault injection and a control API under /_sandbox/ (see sandbox/EC2.md).",
    )
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port; default 0)")
    p.add_argument(
        "--amis",
        default=DEFAULT_AMIS,
        help="seed images, a JSON list in moto's MOTO_AMIS_PATH format (default: sandbox/seed/windows-amis.json)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="initial configuration: a JSON object, or @FILE to read it from a file; deep-merged into the defaults",
    )
    p.add_argument("--log-requests", action="store_true", help="log every HTTP request to stderr")
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when the process with this pid is gone (so a crashed test run does not leave the sandbox behind)",
    )
    return p.parse_args(argv)


def load_config_arg(arg: str | None) -> dict[str, Any]:
    if not arg:
        return {}
    text = arg
    if arg.startswith("@"):
        with open(arg[1:], encoding="utf-8") as f:
            text = f.read()
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("--config must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d ec2-sandbox %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)

    # moto reads these at import time: set them before anything imports moto.ec2.
    amis = os.path.abspath(args.amis)
    os.environ["MOTO_AMIS_PATH"] = amis
    os.environ["MOTO_ENABLE_AMI_VALIDATION"] = "1"
    os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "1"
    os.environ["MOTO_ENABLE_KEYPAIR_VALIDATION"] = "1"
    # moto itself never needs real credentials; keep botocore inside moto from
    # looking for them (or for instance metadata).
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

    sys.path.insert(0, HERE)
    from ec2.config import Config, ConfigError  # noqa: E402 (no moto import)

    try:
        config = Config(load_config_arg(args.config))
    except (OSError, ValueError, ConfigError) as e:
        print(f"ec2_sandbox: bad --config: {e}", file=sys.stderr)
        return 2

    from ec2.seed import load_seed_file  # noqa: E402 - imports moto.ec2 (after MOTO_AMIS_PATH)

    try:
        seed = load_seed_file(amis)
    except ValueError as e:
        print(f"ec2_sandbox: {e}", file=sys.stderr)
        return 2

    from werkzeug.serving import make_server  # noqa: E402

    from moto.moto_server.werkzeug_app import (  # noqa: E402
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    from ec2.app import SandboxApp  # noqa: E402
    from ec2.events import EventLog, Scheduler  # noqa: E402
    from ec2.faults import FaultInjector, Stats  # noqa: E402
    from ec2.owned import install as install_owned  # noqa: E402
    from ec2.seed import Seeds  # noqa: E402
    from ec2.sim import Simulator  # noqa: E402

    lock = threading.RLock()
    events = EventLog()
    scheduler = Scheduler(lock)
    seeds = Seeds(seed, config)
    seeds.install()
    sim = Simulator(config, events, scheduler, lock)
    sim.install()
    install_owned()

    dispatcher = DomainDispatcherApplication(create_backend_app)
    # Build moto's EC2 Flask app now rather than on the first request.
    with dispatcher.lock:
        dispatcher.app_instances.setdefault("ec2", create_backend_app("ec2"))
    app = SandboxApp(dispatcher, config, sim, seeds, events, scheduler, Stats(), FaultInjector(config), lock)

    try:
        server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)
    except OSError as e:
        print(f"ec2_sandbox: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    port = server.server_address[1]

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    scheduler.start()
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="ec2-sandbox-http", daemon=True)
    serve.start()
    # The socket is bound and listening since make_server(): connections are accepted.
    log.info(
        "moto %s EC2 sandbox on http://127.0.0.1:%d (seed %s, %d images, %d generated Windows images)",
        _moto_version(), port, amis, len(seed), config.get("extra_windows_images"),
    )
    sys.stdout.write(f"READY http://127.0.0.1:{port}\n")
    sys.stdout.flush()

    while not stop.wait(0.5):
        if args.parent_pid is not None and not _alive(args.parent_pid):
            log.info("parent process %d is gone", args.parent_pid)
            break
    log.info("stopping")
    server.shutdown()
    server.server_close()
    scheduler.stop()
    serve.join(timeout=5)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _moto_version() -> str:
    try:
        import moto

        return moto.__version__
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
