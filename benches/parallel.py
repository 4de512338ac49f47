#!/usr/bin/env python3
"""Several builds in one tc-ami process against the EC2 call budget (src/budget.rs).

    benches/parallel [--jobs 2,4] [--reps 3] [--timeline K=S,...] [--jitter S] [--seed N]
                     [--binary PATH] [--no-build] [--json] [--save FILE] [--keep]

For each rep and each N of --jobs, in a fresh EC2 sandbox with the same seeded timeline:
`tc-ami build -w bench-1` alone, then `tc-ami build -w bench-1 … -w bench-N --jobs N`. The
worker types are copies of worker-types/servo-win2016.toml (built in us-west-2, copied to
us-east-1, the password stored in a Taskcluster secret) in a temporary config directory. From
the sandbox's request log (benches/logged_sandbox.py) and tc-ami's labelled progress lines:

- wall time of the process, and each build's own time (its JSON `duration_seconds`), against
  the build alone;
- EC2 calls per minute of waiting for the whole process: every tc-ami request from the first
  RunInstances to the last request, over that window;
- EC2 calls per minute of waiting per build: the same requests over the sum of the builds'
  own windows (each from its `launching the build instance` line to its last line), i.e. what
  each build costs per minute it waits;
- polls (DescribeInstances, GetPasswordData, GetConsoleOutput, DescribeImages) per minute of
  that window in the busiest Region, which the budget bounds by 60 a minute;
- the most polls (DescribeInstances, GetPasswordData, GetConsoleOutput, DescribeImages) in any
  60 s in one Region, which the budget bounds by 60 + its burst of 10.

It is a measurement, not a test: it prints medians (min–max) and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchmark  # noqa: E402  (parse_timeline, sandbox_config, build_binary)
import standins  # noqa: E402
import tcami  # noqa: E402

POLLS = {"DescribeInstances", "GetPasswordData", "GetConsoleOutput", "DescribeImages"}
SOURCE = os.path.join(ROOT, "worker-types", "servo-win2016.toml")


def config_dir(workdir: str, n: int) -> str:
    """A config directory with worker types bench-1 … bench-n, each its own password prefix."""
    cfg = os.path.join(workdir, "config")
    os.makedirs(os.path.join(cfg, "worker-types"), exist_ok=True)
    shutil.copytree(os.path.join(ROOT, "scripts"), os.path.join(cfg, "scripts"), dirs_exist_ok=True)
    shutil.copy(os.path.join(ROOT, "base-ami.txt"), cfg)
    with open(SOURCE, encoding="utf-8") as f:
        text = f.read()
    for i in range(1, n + 1):
        with open(os.path.join(cfg, "worker-types", f"bench-{i}.toml"), "w", encoding="utf-8") as f:
            f.write(text.replace("/servo-win2016\"", f"/bench-{i}\""))
    return cfg


def build_spans(r: dict, names: list[str]) -> dict[str, float]:
    """Each build's own waiting window, from its progress lines (labelled `W: ` when several)."""
    spans = {}
    for name in names:
        label = f"{name}: " if len(names) > 1 else ""
        times = []
        for arrived, text in r["lines"]:
            m = tcami.LINE.match(text)
            if m and m.group(3).startswith(label):
                times.append((arrived, m.group(3)[len(label):]))
        start = next((t for t, msg in times if msg.startswith("launching the build instance")), None)
        if start is not None:
            spans[name] = times[-1][0] - start
    return spans


def peak_polls(reqs: list[tuple[float, str, str, str]]) -> int:
    """The most poll requests in any 60 s, in one Region."""
    best = 0
    by_region: dict[str, list[float]] = {}
    for t, region, action, client in reqs:
        if client == "tc-ami" and action in POLLS:
            by_region.setdefault(region, []).append(t)
    for times in by_region.values():
        times.sort()
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - 60:
                j += 1
            best = max(best, i - j + 1)
    return best


def measure(binary: str, cfg: str, ec2: standins.Server, tc: standins.Server, home: str,
            names: list[str]) -> dict:
    env = standins.tc_ami_env(ec2, tc, home)
    before = len(ec2.requests())
    args = ["-C", cfg, "--json", "build", *[a for n in names for a in ("-w", n)], "--jobs", str(len(names))]
    r = tcami.run(binary, args, env)
    if r["code"] != 0:
        raise RuntimeError(f"tc-ami {' '.join(args)} exited {r['code']}:\n" + "\n".join(r["stderr"][-30:]))
    doc = json.loads(r["stdout"])
    entries = doc["workerTypes"] if "workerTypes" in doc else [doc]
    reqs = [q for q in ec2.requests()[before:] if q[3] == "tc-ami"]
    first_run = min(t for t, _, a, _ in reqs if a == "RunInstances")
    window = [q for q in reqs if q[0] >= first_run]
    minutes = (window[-1][0] - first_run) / 60
    spans = build_spans(r, names)
    build_minutes = sum(spans.values()) / 60
    return {
        "wall": r["wall"],
        "build_seconds": [e["duration_seconds"] for e in entries],
        "calls": len(reqs),
        "calls_waiting": len(window),
        "calls_per_minute_process": len(window) / minutes if minutes else None,
        "calls_per_minute_per_build": len(window) / build_minutes if build_minutes else None,
        "peak_polls_60s_one_region": peak_polls(window),
        "polls_per_minute_busiest_region": max(
            sum(1 for q in window if q[1] == region and q[2] in POLLS) for region in {q[1] for q in window}
        ) / minutes if minutes else None,
    }


def st(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summary(runs: list[dict]) -> dict:
    return {
        "wall": st([r["wall"] for r in runs]),
        "build_seconds": st([s for r in runs for s in r["build_seconds"]]),
        "calls_per_minute_process": st([r["calls_per_minute_process"] for r in runs]),
        "calls_per_minute_per_build": st([r["calls_per_minute_per_build"] for r in runs]),
        "peak_polls_60s_one_region": st([r["peak_polls_60s_one_region"] for r in runs]),
        "polls_per_minute_busiest_region": st([r["polls_per_minute_busiest_region"] for r in runs]),
        "calls_per_build": st([r["calls"] / len(r["build_seconds"]) for r in runs]),
    }


def report(doc: dict) -> str:
    """The table of medians (min–max); `n` in the rows' labels is the builds at once."""
    out = [f"$ {doc['command']}", f"{doc['date']}, load average at the start {doc['load_start']:.1f}", ""]
    out.append("| | wall | each build's time | × alone | EC2 calls/min waiting: process | per build | polls/min waiting, busiest Region | most polls in 60 s, one Region | EC2 calls per build |")
    out.append("|---|---|---|---|---|---|---|---|---|")

    def m(s: dict, d: int = 1) -> str:
        return f"{s['median']:.{d}f} ({s['min']:.{d}f}–{s['max']:.{d}f})"

    alone = doc["alone"]["build_seconds"]["median"]
    rows = [("alone", 1, doc["alone"])] + [(f"{n} at once", n, doc["parallel"][str(n)]) for n in doc["jobs"]]
    for label, n, s in rows:
        ratio = s["build_seconds"]["median"] / alone
        busiest = s.get("polls_per_minute_busiest_region")
        out.append(f"| {label} | {m(s['wall'])} s | {m(s['build_seconds'])} s | {ratio:.2f} | "
                   f"{m(s['calls_per_minute_process'])} | {m(s['calls_per_minute_per_build'])} | "
                   f"{m(busiest) if busiest else '-'} | "
                   f"{m(s['peak_polls_60s_one_region'], 0)} | {m(s['calls_per_build'], 0)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benches/parallel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="2,4", help="the numbers of builds at once to measure (default 2,4)")
    p.add_argument("--reps", type=int, default=3, help="runs of each (default 3)")
    p.add_argument("--timeline", default=benchmark.DEFAULT_TIMELINE, help="as benches/run's")
    p.add_argument("--jitter", type=float, default=1.0, help="as benches/run's")
    p.add_argument("--seed", type=int, default=1, help="as benches/run's")
    p.add_argument("--binary", help="the tc-ami binary (default target/release/tc-ami, built first)")
    p.add_argument("--no-build", action="store_true", help="do not run `cargo build --release` first")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the report")
    p.add_argument("--save", metavar="FILE", help="also write the JSON document to FILE")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",") if j]
    if not jobs or min(jobs) < 2 or args.reps < 1:
        raise SystemExit("--jobs: numbers of at least 2; --reps: at least 1")
    command = shlex.join(["benches/parallel", *(sys.argv[1:] if argv is None else argv)])
    timeline = benchmark.parse_timeline(args.timeline)
    binary = benchmark.build_binary(args)
    py = sys.executable
    workdir = tempfile.mkdtemp(prefix="tc-ami-parallel-")
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    cfg = config_dir(workdir, max(jobs))
    rng = random.Random(args.seed)
    doc: dict = {"command": command, "binary": binary, "jobs": jobs, "load_start": os.getloadavg()[0],
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "runs": {"alone": [], **{str(n): [] for n in jobs}}}
    servers: list[standins.Server] = []
    try:
        tc = standins.start_taskcluster(py, workdir)
        servers.append(tc)
        for rep in range(args.reps):
            sandbox_cfg, _ = benchmark.sandbox_config(timeline, args.jitter, rng)
            for key, names in [("alone", ["bench-1"])] + [(str(n), [f"bench-{i}" for i in range(1, n + 1)]) for n in jobs]:
                ec2 = standins.start_ec2(py, sandbox_cfg, workdir, f"ec2-{rep + 1}-{key}")
                servers.append(ec2)
                started = time.time()
                run = measure(binary, cfg, ec2, tc, home, names)
                doc["runs"][key].append(run)
                standins.log(f"rep {rep + 1}: {len(names)} build(s) in {time.time() - started:.1f} s, "
                             f"{run['calls_per_minute_process']:.1f} EC2 calls/min waiting")
                ec2.stop()
    finally:
        for s in servers:
            s.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["alone"] = summary(doc["runs"]["alone"])
    doc["parallel"] = {str(n): summary(doc["runs"][str(n)]) for n in jobs}
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    print(json.dumps(doc, indent=2) if args.json else report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
