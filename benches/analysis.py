"""From one build's record, the sandbox's transition log and its request log: detection lag per
stage, simulated AWS time on the critical path, overhead per segment, and EC2 calls.

A build's record (from tc-ami's progress lines, or from a benchmark pipeline) holds its start
and end (wall clock), the ids it made (instance, image, copy) and `notice`: when it noticed each
transition. The sandbox's `events` give when each transition happened.

- detection lag of a stage = notice - event (e.g. the instance → stopped event, and the moment
  the build moved on to CreateImage);
- poll lag = from the event to the arrival at the sandbox of the first poll that could see it
  (the build's next DescribeInstances / GetPasswordData / DescribeImages in that region): the
  part of the lag that is the polling interval, without what the build does before it prints;
- simulated AWS time on the critical path = (RunInstances → stopped) + (CreateImage → image
  available) + (CopyImage → copy available) + (TerminateInstances → terminated), the four
  spans in which the build can only wait for AWS; the password and `running` are inside the
  first span;
- overhead = wall time - AWS time, split into the five segments between those spans (they add
  up to the total exactly);
- EC2 calls per minute of waiting = the build's EC2 requests that arrived while it waited (from
  the start of each of the four spans until the arrival of the poll that saw its end) over the
  length of those windows; also per window, and the steady rate of the longest single wait (the
  DescribeInstances and GetConsoleOutput polls while waiting for the guest's shutdown, first to
  last).
"""

from __future__ import annotations

STAGES = (
    # name, (event kind, id key, target state), region key, actions of a poll that can see it
    ("running", ("instance", "instance", "running"), "build_region", ("DescribeInstances",)),
    ("password", ("password", "instance", "available"), "build_region", ("GetPasswordData",)),
    ("stopped", ("instance", "instance", "stopped"), "build_region", ("DescribeInstances",)),
    ("image", ("image", "image", "available"), "build_region", ("DescribeImages",)),
    ("copy", ("image", "copy", "available"), "copy_region", ("DescribeImages",)),
    ("terminated", ("instance", "instance", "terminated"), "build_region", ("DescribeInstances",)),
)

STAGE_TITLES = {
    "running": "instance running",
    "password": "Windows password",
    "stopped": "instance stopped",
    "image": "image available",
    "copy": "copy available",
    "terminated": "instance terminated",
}

SEGMENTS = (
    # key, title; what the build does in it (tc-ami): see benches/README.md
    ("setup", "start → RunInstances"),
    ("after_stop", "instance stopped → CreateImage"),
    ("after_image", "image available → CopyImage"),
    ("after_copy", "copy available → TerminateInstances"),
    ("after_terminate", "instance terminated → exit"),
)


def _event(events: list[dict], kind: str, rid: str, to: str) -> float:
    for e in events:
        if e["kind"] == kind and e["id"] == rid and e["to"] == to:
            return e["t"]
    raise KeyError(f"no event {kind} {rid} → {to}")


def analyse(rec: dict, events: list[dict], requests: list[tuple[float, str, str, str]],
            build_region: str) -> dict:
    rec = dict(rec)
    rec.setdefault("build_region", build_region)
    ids = {"instance": rec["instance"], "image": rec["image"], "copy": rec["copy"]}
    mine = sorted(r for r in requests if r[3] == rec["client"] and rec["start"] <= r[0] <= rec["end"])

    lags, poll_lags, event_times = {}, {}, {}
    for stage, (kind, key, to), region_key, actions in STAGES:
        t_event = _event(events, kind, ids[key], to)
        event_times[stage] = t_event
        lags[stage] = rec["notice"][stage] - t_event
        region = rec[region_key]
        poll = next((t for t, reg, action, _ in mine if t >= t_event and reg == region and action in actions), None)
        poll_lags[stage] = (poll - t_event) if poll is not None else None

    spans = {
        "instance": (_event(events, "instance", ids["instance"], "pending"),
                     _event(events, "instance", ids["instance"], "stopped")),
        "image": (_event(events, "image", ids["image"], "pending"), _event(events, "image", ids["image"], "available")),
        "copy": (_event(events, "image", ids["copy"], "pending"), _event(events, "image", ids["copy"], "available")),
        "terminate": (_event(events, "instance", ids["instance"], "shutting-down"),
                      _event(events, "instance", ids["instance"], "terminated")),
    }
    aws = {k: b - a for k, (a, b) in spans.items()}
    segments = {
        "setup": spans["instance"][0] - rec["start"],
        "after_stop": spans["image"][0] - spans["instance"][1],
        "after_image": spans["copy"][0] - spans["image"][1],
        "after_copy": spans["terminate"][0] - spans["copy"][1],
        "after_terminate": rec["end"] - spans["terminate"][1],
    }
    wall = rec["end"] - rec["start"]
    aws_total = sum(aws.values())

    # EC2 calls while waiting: from the start of each AWS span until the poll that saw its end.
    def seen(stage: str) -> float:
        p = poll_lags[stage]
        return event_times[stage] + p if p is not None else rec["notice"][stage]

    windows = {
        "instance": (spans["instance"][0], seen("stopped")),
        "image": (spans["image"][0], seen("image")),
        "copy": (spans["copy"][0], seen("copy")),
        "terminate": (spans["terminate"][0], seen("terminated")),
    }
    per_window = {}
    for k, (a, b) in windows.items():
        n = sum(1 for t, *_ in mine if a <= t <= b)
        per_window[k] = {"seconds": b - a, "calls": n, "per_minute": n * 60.0 / (b - a) if b > a else None}
    wait_seconds = sum(w["seconds"] for w in per_window.values())
    wait_calls = sum(w["calls"] for w in per_window.values())
    # The steady rate of one long wait: the polls of the wait for the guest's shutdown (after
    # the password), first to last; the state and the guest's console take turns.
    polls = [t for t, reg, action, _ in mine
             if action in ("DescribeInstances", "GetConsoleOutput")
             and rec["notice"]["password"] <= t <= seen("stopped")]
    steady = (len(polls) - 1) * 60.0 / (polls[-1] - polls[0]) if len(polls) >= 2 and polls[-1] > polls[0] else None
    actions: dict[str, int] = {}
    for _, _, action, _ in mine:
        actions[action] = actions.get(action, 0) + 1
    # The busiest 10 s of the build, as a rate per minute.
    peak10 = 0
    times = [t for t, *_ in mine]
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 10:
            j += 1
        peak10 = max(peak10, i - j + 1)

    return {
        "wall": wall,
        "aws": aws,
        "aws_total": aws_total,
        "overhead": wall - aws_total,
        "segments": segments,
        "lag": lags,
        "poll_lag": poll_lags,
        "lag_from_elapsed": {s: rec["notice_from_elapsed"][s] - event_times[s]
                             for s in rec.get("notice_from_elapsed", {}) if s in event_times},
        "calls": len(mine),
        "calls_by_action": dict(sorted(actions.items())),
        "wait_seconds": wait_seconds,
        "wait_calls": wait_calls,
        "calls_per_wait_minute": wait_calls * 60.0 / wait_seconds if wait_seconds > 0 else None,
        "wait_windows": per_window,
        "steady_polls_per_minute": steady,
        "calls_per_minute": len(mine) * 60.0 / wall if wall > 0 else None,
        "peak_calls_per_minute_10s": peak10 * 6.0,
        "ids": ids,
    }
