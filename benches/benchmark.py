"""tc-ami's own cost, measured against the sandbox. Entry point: benches/run (see --help there
and benches/README.md)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import analysis  # noqa: E402
import standins  # noqa: E402
import strategies  # noqa: E402
import tcami  # noqa: E402
from standins import ROOT, log  # noqa: E402

WORKER_TYPE = "servo-win2016"  # worker-types/servo-win2016.toml: us-west-2, one copy region (us-east-1)
BUILD_REGION = "us-west-2"
COPY_REGION = "us-east-1"  # the worker type's one extra region

# Nominal seconds of each scheduled transition (sandbox/EC2.md "Configuration").
TIMELINE_KEYS = {
    "boot": "instance_boot_seconds",
    "password": "password_delay_seconds",
    "shutdown": "guest.shutdown_after_seconds",
    "stop": "instance_stop_seconds",
    "image": "image_pending_seconds",
    "copy": "copy_pending_seconds",
    "terminate": "instance_terminate_seconds",
}
DEFAULT_TIMELINE = "boot=2,password=2,shutdown=20,stop=1,image=3,copy=4,terminate=1"

TARGETS = {
    "lag_per_stage_median_s": 1.5,
    "build_overhead_s": 1.0,  # issue 11: under 1 s on the short timeline (it was 3 s)
    "calls_per_wait_minute": 60.0,
    "diff_ms": 100.0,
    "help_ms": 20.0,
}

USAGE = """\
benches/run [options]

Measures tc-ami's own cost against the sandbox (moto + the guest simulator, the Taskcluster
emulator), all started on free 127.0.0.1 ports and stopped at the end:
  - `tc-ami build -w servo-win2016` (one copy region) on a scheduled timeline, REPS times:
    detection lag per stage, overhead (wall time minus the simulated AWS time on the critical
    path) per segment, EC2 calls per minute of waiting;
  - `tc-ami deploy -w servo-win2016 --image AMI --yes` after each build (wall time);
  - `tc-ami diff -w servo-win2016` and `tc-ami --help` (wall time, repeated), the binary's size;
  - the same timeline driven by the benchmark with boto3's waiters, fixed 15 s polling and the
    Rust SDK's waiter schedule, as ratios to tc-ami;
  - first, both the short timeline and a realistic one (guest 40 min, image 15 min, copy 20 min)
    on a virtual clock (benches/waiting.rs, `cargo bench --bench waiting`): tc-ami's own waits
    and the other schedules, polls per build and detection lag.
Takes about 4.5 minutes with the defaults (REPS=5).
"""


def parse_timeline(text: str) -> dict[str, float]:
    """`boot=2,shutdown=20,...`; stages not named keep their default."""
    out = {k: float(v) for k, v in (p.split("=") for p in DEFAULT_TIMELINE.split(","))}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if key not in TIMELINE_KEYS or not sep:
            raise SystemExit(f"--timeline: bad {part!r}; write STAGE=SECONDS with STAGE one of {', '.join(TIMELINE_KEYS)}")
        out[key] = float(value)
    return out


def sandbox_config(timeline: dict[str, float], jitter: float, rng: random.Random) -> tuple[dict, dict]:
    """The sandbox --config for one build: each nominal delay plus a random fraction in
    [0, jitter), so that the transitions do not fall in step with a 1 s poll."""
    seconds = {k: round(v + rng.random() * jitter, 3) for k, v in timeline.items()}
    cfg: dict = {"first_boot_script": os.path.join(ROOT, "scripts", "first-boot.ps1"), "guest": {"mode": "stop"}}
    for k, v in seconds.items():
        path = TIMELINE_KEYS[k].split(".")
        if len(path) == 2:
            cfg[path[0]][path[1]] = v
        else:
            cfg[path[0]] = v
    return cfg, seconds


def stats(values: list[float | None]) -> dict | None:
    vs = sorted(v for v in values if v is not None)
    if not vs:
        return None
    return {"median": statistics.median(vs), "min": vs[0], "max": vs[-1], "n": len(vs)}


def time_command(argv: list[str], env: dict | None, runs: int, warmup: int = 2,
                 ok_codes: tuple[int, ...] = (0,)) -> dict:
    walls = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if p.returncode not in ok_codes:
            raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {p.stderr.decode()[-2000:]}")
        if i >= warmup:
            walls.append(dt * 1000.0)
    return {"command": argv, "runs": runs, "ms": walls, "summary": stats(walls), "exit_code": p.returncode}


def summarise(builds: list[dict]) -> dict:
    s: dict = {
        "wall": stats([b["wall"] for b in builds]),
        "aws_total": stats([b["aws_total"] for b in builds]),
        "overhead": stats([b["overhead"] for b in builds]),
        "aws_critical": stats([b["aws_critical"] for b in builds]),
        "overhead_critical": stats([b["overhead_critical"] for b in builds]),
        "segments": {k: stats([b["segments"][k] for b in builds]) for k, _ in analysis.SEGMENTS},
        "lag": {st: stats([b["lag"][st] for b in builds]) for st, *_ in analysis.STAGES},
        "poll_lag": {st: stats([b["poll_lag"][st] for b in builds]) for st, *_ in analysis.STAGES},
        "lag_all_stages": stats([b["lag"][st] for b in builds for st, *_ in analysis.STAGES]),
        "calls": stats([b["calls"] for b in builds]),
        "calls_per_wait_minute": stats([b["calls_per_wait_minute"] for b in builds]),
        "calls_per_minute": stats([b["calls_per_minute"] for b in builds]),
        "steady_polls_per_minute": stats([b["steady_polls_per_minute"] for b in builds]),
        "peak_calls_per_minute_10s": stats([b["peak_calls_per_minute_10s"] for b in builds]),
    }
    return s


def source_state() -> dict:
    """The commit, and whether src/ or the manifests differ from it (then the binary holds
    uncommitted work)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": changed.splitlines()}


def newer_sources(binary: str) -> list[str]:
    """Files of src/ and the manifests changed after the binary was built (then the commit
    above is not what the binary was built from)."""
    built = os.path.getmtime(binary)
    out = []
    for top in ("src", "Cargo.toml", "Cargo.lock"):
        path = os.path.join(ROOT, top)
        walk = [(path, [], [""])] if os.path.isfile(path) else os.walk(path)
        for d, _, files in walk:
            for f in files:
                p = os.path.join(d, f) if f else d
                if os.path.getmtime(p) > built:
                    out.append(os.path.relpath(p, ROOT))
    return sorted(out)


def build_binary(args: argparse.Namespace) -> str:
    if args.binary:
        return os.path.abspath(args.binary)
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
    binary = os.path.join(target, "release", "tc-ami")
    if not args.no_build:
        log("cargo build --release (a no-op when up to date; about 12 minutes from scratch on 2 cores)")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} does not exist: run `cargo build --release`, or pass --binary")
    return binary


def run_virtual(reps: int, seed: int) -> dict:
    """benches/waiting.rs: tc-ami's waits and the other schedules on tokio's paused clock, on the
    short and the realistic timeline. The dev profile: its figures are virtual time, which the
    profile does not change, and the dev build of the dependencies (with tokio's test-util) is
    the one the tests already made."""
    argv = ["cargo", "bench", "--quiet", "--profile", "dev", "--bench", "waiting", "--",
            "--json", "--reps", str(reps), "--seed", str(seed)]
    log(f"the waiting schedule on a virtual clock: {shlex.join(argv)}")
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {p.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benches/run", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="builds per strategy (default 5)")
    p.add_argument("--timeline", default=DEFAULT_TIMELINE,
                   help=f"nominal seconds of each scheduled transition (default {DEFAULT_TIMELINE}): "
                        "boot = pending→running, password = running→password ready, shutdown = running→the guest "
                        "shuts down, stop = stopping→stopped, image / copy = pending→available, terminate = "
                        "shutting-down→terminated; stages not named keep their default")
    p.add_argument("--jitter", type=float, default=1.0,
                   help="each build adds a random fraction in [0, JITTER) s to every delay, so that transitions "
                        "do not fall in step with a 1 s poll (default 1.0; 0: none)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of those fractions and of the Rust waiter's jitter (default 1)")
    p.add_argument("--strategies", default=",".join(strategies.STRATEGIES),
                   help="the other ways of waiting to drive, comma-separated, or `none` (default: "
                        f"{','.join(strategies.STRATEGIES)})")
    p.add_argument("--all-at-once", action="store_true",
                   help="run tc-ami's builds at the same time as each other and as the other strategies "
                        "(quicker for long timelines; tc-ami's sub-second figures are then a little noisier). "
                        "Default: tc-ami's builds one at a time, alone, then the other strategies together")
    p.add_argument("--cli-runs", type=int, default=20, help="timed runs of each `diff` and of `--help` (default 20)")
    p.add_argument("--virtual-reps", type=int, default=1000,
                   help="builds per timeline and strategy on the virtual clock (benches/waiting.rs; default 1000)")
    p.add_argument("--binary", help="the tc-ami binary to measure (default target/release/tc-ami, built first)")
    p.add_argument("--no-build", action="store_true", help="do not run `cargo build --release` first")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the report")
    p.add_argument("--save", metavar="FILE", help="also write the JSON document to FILE")
    p.add_argument("--report", metavar="FILE",
                   help="measure nothing: print the report of a JSON document saved by --save")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (stand-in logs, EC2 request logs) and print its path")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            print(report(json.load(f)))
        return 0

    chosen = [] if args.strategies == "none" else [s for s in args.strategies.split(",") if s]
    for s in chosen:
        if s not in strategies.STRATEGIES:
            raise SystemExit(f"--strategies: unknown {s!r}; known: {', '.join(strategies.STRATEGIES)}")
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    timeline = parse_timeline(args.timeline)
    command = shlex.join(["benches/run", *(sys.argv[1:] if argv is None else argv)])

    binary = build_binary(args)
    # Before the stand-ins start, so that it does not share the CPU with the timed builds.
    virtual = run_virtual(args.virtual_reps, args.seed)
    py = sys.executable
    workdir = tempfile.mkdtemp(prefix="tc-ami-bench-")
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    servers: list[standins.Server] = []
    load_start = os.getloadavg()
    started = time.time()
    result: dict = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "binary": {"path": binary, "size_bytes": os.path.getsize(binary),
                   "built": datetime.datetime.fromtimestamp(os.path.getmtime(binary), datetime.timezone.utc)
                   .strftime("%Y-%m-%dT%H:%M:%SZ")},
        "source": source_state() | {"changed_after_the_binary_was_built": newer_sources(binary)},
        "worker_type": WORKER_TYPE,
        "all_at_once": args.all_at_once,
        "timeline": {"nominal_seconds": timeline, "jitter": args.jitter, "seed": args.seed, "per_build": []},
        "targets": TARGETS,
        "virtual": virtual,
    }
    try:
        import boto3
        import botocore
        import moto

        result["machine"]["versions"] = {"moto": moto.__version__, "boto3": boto3.__version__,
                                         "botocore": botocore.__version__}
    except ImportError:
        pass

    tc_records: list = [None] * args.reps
    deploys: list[float] = []
    baseline_runs: dict[str, list] = {s: [None] * args.reps for s in chosen}
    try:
        tc = standins.start_taskcluster(py, workdir)
        servers.append(tc)

        log(f"timing `tc-ami --help` ({args.cli_runs} runs)")
        result["help"] = time_command([binary, "--help"], {"PATH": os.environ.get("PATH", "")}, args.cli_runs)

        # One sandbox per timeline (the delays are sandbox-wide), started together.
        rng = random.Random(args.seed)
        configs = []
        for i in range(args.reps):
            cfg, seconds = sandbox_config(timeline, args.jitter, rng)
            configs.append(cfg)
            result["timeline"]["per_build"].append(seconds)
        log(f"starting {args.reps} EC2 sandboxes, one per timeline")
        sandboxes: list = [None] * args.reps

        def start(i: int) -> None:
            sandboxes[i] = standins.start_ec2(py, configs[i], workdir, f"ec2-{i + 1}")

        starters = [threading.Thread(target=start, args=(i,)) for i in range(args.reps)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        servers.extend(sb for sb in sandboxes if sb is not None)
        if any(sb is None for sb in sandboxes):
            raise RuntimeError("an EC2 sandbox did not start")

        def tc_build(i: int) -> None:
            env = standins.tc_ami_env(sandboxes[i], tc, home)
            r = tcami.run(binary, ["-C", ROOT, "build", "-w", WORKER_TYPE], env)
            if r["code"] != 0:
                raise RuntimeError(f"tc-ami build exited {r['code']}:\n" + "\n".join(r["stderr"][-30:]))
            tc_records[i] = (tcami.build_record(r), r["stderr"])
            if not any(c == "tc-ami" for *_, c in sandboxes[i].requests()):
                raise RuntimeError("the EC2 request log is empty: benches/logged_sandbox.py's hook on "
                                   "sandbox/ec2/faults.py's classify() no longer sees requests")
            log(f"tc-ami build {i + 1}/{args.reps}: {r['wall']:.1f} s")

        def deploy(i: int) -> None:
            env = standins.tc_ami_env(sandboxes[i], tc, home)
            image = tc_records[i][0]["image"]
            d = tcami.run(binary, ["-C", ROOT, "deploy", "-w", WORKER_TYPE, "--image", image, "--yes"], env)
            if d["code"] != 0:
                raise RuntimeError(f"tc-ami deploy exited {d['code']}:\n" + "\n".join(d["stderr"][-30:]))
            deploys.append(d["wall"])

        baseline_threads = []
        if chosen:
            script = open(os.path.join(ROOT, "scripts", "first-boot.ps1"), "rb").read().decode("utf-8")
            user_data = f"<powershell>{script}</powershell>"
            with open(os.path.join(ROOT, "base-ami.txt"), encoding="utf-8") as f:
                pattern = next(x.strip() for x in f if x.strip() and not x.lstrip().startswith("#"))
            for i, sb in enumerate(sandboxes):
                for s in chosen:
                    cl = strategies.clients(s, sb.url, [BUILD_REGION, COPY_REGION])

                    def go(i=i, s=s, cl=cl):
                        try:
                            baseline_runs[s][i] = strategies.run_pipeline(
                                s, cl, BUILD_REGION, COPY_REGION, pattern, user_data,
                                f"bench-{s}-{i + 1}-{int(time.time())}", seed=args.seed * 1000 + i)
                            log(f"{s} build {i + 1}/{args.reps}: "
                                f"{baseline_runs[s][i]['end'] - baseline_runs[s][i]['start']:.1f} s")
                        except Exception as e:  # noqa: BLE001 - reported
                            baseline_runs[s][i] = {"error": f"{type(e).__name__}: {e}"}

                    baseline_threads.append(threading.Thread(target=go, daemon=True))

        def join_baselines() -> None:
            deadline = time.time() + 30 * 60
            for t in baseline_threads:
                t.join(max(0.0, deadline - time.time()))

        def time_diff() -> None:
            log(f"timing `tc-ami diff` ({args.cli_runs} runs each)")
            env = standins.tc_ami_env(sandboxes[-1], tc, home)
            seeded = sandboxes[-1].get("/_sandbox/state?seeded=1")
            # Another available image, to make a diff that has something to show.
            other = next(im["id"] for im in seeded["regions"][BUILD_REGION]["images"]
                         if im["name"].startswith("Windows_Server-2016-English-Full-Base-")
                         and im["state"] == "available")
            result["diff"] = {
                "up_to_date": time_command([binary, "-C", ROOT, "diff", "-w", WORKER_TYPE], env, args.cli_runs,
                                           ok_codes=(0,)),
                "with_change": time_command([binary, "-C", ROOT, "diff", "-w", WORKER_TYPE, "--image",
                                             f"{BUILD_REGION}={other}", "--image", f"{COPY_REGION}={other}"],
                                            env, args.cli_runs, ok_codes=(2,)),
            }

        # deploy and diff are timed with nothing else running.
        if args.all_at_once:
            log(f"tc-ami and {', '.join(chosen) or 'nothing else'}: {args.reps} builds each, all at once")
            failures: list[str] = []

            def guarded(i: int) -> None:
                try:
                    tc_build(i)
                except Exception as e:  # noqa: BLE001
                    failures.append(str(e))

            tc_threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(args.reps)]
            for t in tc_threads + baseline_threads:
                t.start()
            for t in tc_threads:
                t.join()
            if failures:
                raise RuntimeError(failures[0])
            join_baselines()
            for i in range(args.reps):
                deploy(i)
            time_diff()
        else:
            for i in range(args.reps):
                log(f"tc-ami build {i + 1}/{args.reps} (timeline {result['timeline']['per_build'][i]})")
                tc_build(i)
                deploy(i)
            time_diff()
            if chosen:
                log(f"driving {', '.join(chosen)} over the same {args.reps} timelines, all at once")
                for t in baseline_threads:
                    t.start()
                join_baselines()

        log("collecting the transition logs")
        events = {sb.name: sb.get("/_sandbox/state")["events"] for sb in sandboxes}
        requests = {sb.name: sb.requests() for sb in sandboxes}
    finally:
        for s in servers:
            s.stop()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    tc_analysed = []
    for i, (rec, stderr) in enumerate(tc_records):
        a = analysis.analyse(rec, events[sandboxes[i].name], requests[sandboxes[i].name], BUILD_REGION)
        a["progress_clock_offset"] = rec["progress_clock_offset"]
        a["stderr"] = stderr
        tc_analysed.append(a)
    result["tc_ami"] = {
        "builds": tc_analysed,
        "summary": summarise(tc_analysed),
        "progress_clock_offset": stats([a["progress_clock_offset"] for a in tc_analysed]),
        "deploy": {"seconds": deploys, "summary": stats(deploys)},
    }
    result["strategies"] = {}
    for s in chosen:
        runs, errors = [], []
        for i, rec in enumerate(baseline_runs[s]):
            if rec is None:
                errors.append(f"build {i + 1}: did not finish")
            elif "error" in rec:
                errors.append(f"build {i + 1}: {rec['error']}")
            else:
                runs.append(analysis.analyse(rec, events[sandboxes[i].name], requests[sandboxes[i].name],
                                             BUILD_REGION))
        result["strategies"][s] = {"builds": runs, "errors": errors, "summary": summarise(runs) if runs else None}
    result["ratios"] = ratios(result)
    result["machine"]["loadavg_start"] = load_start
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["duration_seconds"] = time.time() - started

    doc = json.dumps(result, indent=2, default=str)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            f.write(doc + "\n")
    print(doc if args.json else report(result))
    return 0


def ratios(result: dict) -> dict:
    """Each strategy's medians divided by tc-ami's."""
    base = result["tc_ami"]["summary"]

    def ratio(a: dict | None, b: dict | None) -> float | None:
        return a["median"] / b["median"] if a and b and b["median"] else None

    out = {}
    for s, entry in result["strategies"].items():
        sm = entry["summary"]
        if sm:
            out[s] = {
                "wall": ratio(sm["wall"], base["wall"]),
                "overhead": ratio(sm["overhead"], base["overhead"]),
                "overhead_critical": ratio(sm.get("overhead_critical"), base.get("overhead_critical")),
                "lag_all_stages": ratio(sm["lag_all_stages"], base["lag_all_stages"]),
                "lag": {st: ratio(sm["lag"][st], base["lag"][st]) for st, *_ in analysis.STAGES},
                "calls_per_wait_minute": ratio(sm["calls_per_wait_minute"], base["calls_per_wait_minute"]),
            }
    return out


# ------------------------------------------------------------------------------------ report


def fmt(st: dict | None, unit: str = " s", digits: int = 2) -> str:
    """median (min–max)"""
    if not st:
        return "–"
    return f"{st['median']:.{digits}f}{unit} ({st['min']:.{digits}f}–{st['max']:.{digits}f})"


def verdict(st: dict | None, limit: float, unit: str = "") -> str:
    if not st:
        return ""
    return f"target ≤ {limit:g}{unit}: {'met' if st['median'] <= limit else 'MISSED'}"


def report(r: dict) -> str:
    t = r["tc_ami"]
    s = t["summary"]
    n = len(t["builds"])
    tl = r["timeline"]["nominal_seconds"]
    lines: list[str] = []

    def row(label: str, value: str, note: str = "", indent: int = 2) -> None:
        lines.append(f"{' ' * indent}{label:<{50 - indent}} {value:<25} {note}".rstrip())

    lines.append(f"tc-ami benchmark {r['date']} ({r['duration_seconds'] / 60:.1f} min): {r['command']}")
    m = r["machine"]
    src = r.get("source", {})
    dirty = src.get("uncommitted_changes")
    lines.append(f"source {src.get('commit', '?')[:12]}" + (f" plus uncommitted changes to {len(dirty)} file(s)" if dirty else "")
                 + f"; binary built {r['binary'].get('built', '?')}"
                 + (f" (before changes to {len(src['changed_after_the_binary_was_built'])} source file(s))"
                    if src.get("changed_after_the_binary_was_built") else ""))
    lines.append(f"binary {r['binary']['path']}; {m['cpus']} CPUs; load average {m['loadavg_start'][0]:.2f} "
                 f"at start, {m['loadavg_end'][0]:.2f} at end"
                 + ("; tc-ami's builds ran at the same time as the other strategies" if r["all_at_once"] else ""))
    lines.append(f"timeline (s, plus a random [0, {r['timeline']['jitter']:g}) per build): pending {tl['boot']:g}, "
                 f"password {tl['password']:g} and guest shutdown {tl['shutdown']:g} after running, stopping "
                 f"{tl['stop']:g}, image {tl['image']:g}, copy {tl['copy']:g}, shutting-down {tl['terminate']:g}")
    lines.append(f"figures: median (min–max) over {n} builds")
    lines.append("")
    lines.append(f"tc-ami build -w {r['worker_type']} ({BUILD_REGION}, one copy to {COPY_REGION})")
    row("wall time", fmt(s["wall"]))
    row("simulated AWS time on the critical path", fmt(s["aws_total"]))
    row("overhead = wall - AWS", fmt(s["overhead"]), verdict(s["overhead"], TARGETS["build_overhead_s"], " s"))
    for key, title in analysis.SEGMENTS:
        row(title, fmt(s["segments"][key]), indent=4)
    if s.get("overhead_critical"):
        row("AWS time without the termination's overlap", fmt(s["aws_critical"]))
        row("overhead on the critical path", fmt(s["overhead_critical"]),
            verdict(s["overhead_critical"], TARGETS["build_overhead_s"], " s"))
    lines.append("  detection lag: event → progress line    [event → arrival of the poll that saw it]")
    for st, *_ in analysis.STAGES:
        row(analysis.STAGE_TITLES[st], fmt(s["lag"][st]),
            f"[{fmt(s['poll_lag'][st])}]  {verdict(s['lag'][st], TARGETS['lag_per_stage_median_s'], ' s')}",
            indent=4)
    row("EC2 calls per build", fmt(s["calls"], "", 0))
    row("EC2 calls per minute of waiting", fmt(s["calls_per_wait_minute"], "", 1),
        verdict(s["calls_per_wait_minute"], TARGETS["calls_per_wait_minute"]))
    for k, title in (("instance", "RunInstances → stopped seen"), ("image", "CreateImage → available seen"),
                     ("copy", "CopyImage → available seen"), ("terminate", "TerminateInstances → terminated seen")):
        row(title, fmt(stats([b["wait_windows"][k]["per_minute"] for b in t["builds"]]), "", 1), indent=4)
    row("steady rate, waiting for the guest's shutdown", fmt(s["steady_polls_per_minute"], "", 1), indent=4)
    row("EC2 calls per minute, whole build", fmt(s["calls_per_minute"], "", 1))
    lines.append("")
    row(f"tc-ami deploy -w {r['worker_type']} --image AMI --yes", fmt(t["deploy"]["summary"]),
        "no AWS wait: all of it is overhead", indent=0)
    d = r["diff"]
    row("tc-ami diff -w W   (up to date)", fmt(d["up_to_date"]["summary"], " ms", 1),
        verdict(d["up_to_date"]["summary"], TARGETS["diff_ms"], " ms"), indent=0)
    row("tc-ami diff -w W --image R=AMI ...   (a change)", fmt(d["with_change"]["summary"], " ms", 1),
        verdict(d["with_change"]["summary"], TARGETS["diff_ms"], " ms"), indent=0)
    row("tc-ami --help", fmt(r["help"]["summary"], " ms", 1), verdict(r["help"]["summary"], TARGETS["help_ms"], " ms"),
        indent=0)
    size = r["binary"]["size_bytes"]
    row("release binary size", f"{size / 2**20:.1f} MiB ({size:,} bytes)", indent=0)

    if r["strategies"]:
        lines.append("")
        lines.append("The same timelines, waited on by the benchmark (boto3 calls) in other ways; × = ratio to tc-ami")
        names = ["tc-ami"] + [k for k, e in r["strategies"].items() if e["summary"]]
        sums = {"tc-ami": s} | {k: r["strategies"][k]["summary"] for k in names[1:]}
        lines.append(f"  {'':<34}" + "".join(f"{k:>18}" for k in names))

        def line(label: str, key: str, digits: int, with_ratio: bool = True) -> None:
            cells = []
            for k in names:
                v = sums[k][key]["median"]
                cell = f"{v:.{digits}f}"
                base = s[key]["median"]
                if with_ratio and k != "tc-ami" and base:
                    cell += f" ({v / base:.1f}×)"
                cells.append(f"{cell:>18}")
            lines.append(f"  {label:<34}" + "".join(cells))

        line("wall time, s", "wall", 1)
        if s.get("overhead_critical"):
            line("overhead on the critical path, s", "overhead_critical", 1)
        else:
            line("overhead (wall - AWS), s", "overhead", 1)
        line("EC2 calls per build", "calls", 0)
        line("detection lag, all stages, s", "lag_all_stages", 2)
        for st, *_ in analysis.STAGES:
            cells = []
            for k in names:
                cells.append(f"{sums[k]['lag'][st]['median']:>18.2f}")
            lines.append(f"    {analysis.STAGE_TITLES[st]:<32}" + "".join(cells))
        line("EC2 calls per minute of waiting", "calls_per_wait_minute", 1)
        lines.append("  (medians over the builds; the stages' lags, without ratios, are medians per stage)")
        for k, e in r["strategies"].items():
            for err in e["errors"]:
                lines.append(f"  {k}: {err}")
    if r.get("virtual"):
        lines.append("")
        lines.extend(virtual_report(r["virtual"], s))
    return "\n".join(lines)


def virtual_report(v: dict, sandbox: dict) -> list[str]:
    """Both timelines on the virtual clock (benches/waiting.rs), and the sandbox's measurement of
    the short one next to it."""
    names = v["strategies"]
    lines = [f"Both timelines on a virtual clock: {v['command']}",
             f"  tc-ami's own waits (src/wait.rs) and the other schedules under tokio's paused clock, each "
             f"poll answered at once; medians over {v['reps']} builds"]
    for key, tl in v["timelines"].items():
        n = tl["nominal_seconds"]
        lines.append("")
        lines.append(f"{tl['title']}: pending {n['boot']:g}, password {n['password']:g} and guest shutdown "
                     f"{n['shutdown']:g} after running, stopping {n['stop']:g}, image {n['image']:g}, copy "
                     f"{n['copy']:g}, shutting-down {n['terminate']:g} s, each + [0, {tl['jitter']:g}) s")
        lines.append(f"  {'':<40}" + "".join(f"{k:>14}" for k in names))

        def line(label: str, get, digits: int) -> None:
            cells = []
            for k in names:
                val = get(tl["strategies"][k])
                cells.append(f"{val:>14.{digits}f}" if val is not None else f"{'–':>14}")
            lines.append(f"  {label:<40}" + "".join(cells))

        def med(*path: str):
            def get(st: dict):
                for p in path:
                    st = st.get(p) if isinstance(st, dict) else None
                return st.get("median") if isinstance(st, dict) else None
            return get

        line("polls per build (both regions)", med("calls"), 0)
        line("  in the build region", med("calls_build_region"), 0)
        line("  in the copy region", med("calls_copy_region"), 0)
        line("polls per minute of the build", med("calls_per_minute"), 1)
        line("overhead: wall - AWS critical path, s", med("overhead"), 2)
        line("detection lag, all stages, s", med("lag_all_stages"), 2)
        for st in v["stages"]:
            line(f"  {analysis.STAGE_TITLES.get(st, st)}", med("lag", st), 2)
        worst = {k: tl["strategies"][k]["worst_lag_fraction_of_wait"] for k in names}
        if any(x is not None for w in worst.values() for x in w.values()):
            lines.append("  worst lag ÷ the wait's length, %")
            for st in v["stages"]:
                line(f"  {analysis.STAGE_TITLES.get(st, st)}",
                     lambda e, st=st: e["worst_lag_fraction_of_wait"][st] * 100
                     if e["worst_lag_fraction_of_wait"][st] is not None else None, 2)
        if key == "short" and sandbox:
            lines.append(f"  the sandbox, measured above (real time, round trips and tc-ami's other calls included): "
                         f"overhead on the critical path {fmt(sandbox.get('overhead_critical'))}, "
                         f"{fmt(sandbox['calls'], '', 0)} EC2 calls per build")
    return lines


if __name__ == "__main__":
    sys.exit(main())
