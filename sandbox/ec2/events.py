"""The simulator's clock: a scheduler thread and the transition log.

Transitions are scheduled on the monotonic clock (``time.monotonic``) and
applied by one background thread that sleeps until the earliest one is due, so
a transition happens within a few milliseconds of its scheduled time (not
after a polling interval).  Every applied transition is logged with a
wall-clock timestamp (``time.time``, unix seconds as a float) so a benchmark can
compare its own detection times against when "AWS" changed state.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("ec2-sandbox")


class Scheduler:
    """Runs callbacks at monotonic deadlines on one daemon thread.

    Each callback runs while holding ``model_lock`` (the lock that serialises
    all access to moto's models).  A callback that raises is logged and
    dropped; the thread keeps going.
    """

    def __init__(self, model_lock: threading.RLock):
        self._model_lock = model_lock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None], str]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._epoch = 0  # bumped by clear(): callbacks of an older epoch are dropped
        self._thread = threading.Thread(target=self._run, name="ec2-sandbox-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def at(self, due: float, fn: Callable[[], None], what: str = "") -> None:
        """Runs ``fn`` at monotonic time ``due``."""
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), fn, what))
            self._cond.notify_all()

    def after(self, delay: float, fn: Callable[[], None], what: str = "") -> float:
        """Runs ``fn`` ``delay`` seconds from now; returns the monotonic deadline."""
        due = time.monotonic() + max(0.0, float(delay))
        self.at(due, fn, what)
        return due

    def clear(self) -> None:
        """Drops everything scheduled (used by reset)."""
        with self._cond:
            self._heap.clear()
            self._epoch += 1
            self._cond.notify_all()

    def pending(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._cond:
            return [{"in_seconds": round(d - now, 3), "what": w} for d, _, _, w in sorted(self._heap)]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = (self._heap[0][0] - now) if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                _, _, fn, what = heapq.heappop(self._heap)
                epoch = self._epoch
            with self._model_lock:
                if epoch != self._epoch:
                    continue  # reset happened between pop and run
                try:
                    fn()
                except Exception:  # noqa: BLE001 - one bad callback must not stop the clock
                    log.exception("scheduled transition failed: %s", what)


class EventLog:
    """Every state transition the sandbox observed or caused, in order.

    An event is ``{t, kind, id, region, from, to, cause}``: ``t`` wall-clock
    unix seconds, ``kind`` one of instance/image/snapshot, ``from``/``to`` the
    states (``from`` is null for a creation), ``cause`` a short word on why
    (boot, guest-shutdown, api:StopInstances, ...).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []

    def record(self, kind: str, rid: str, region: str, frm: str | None, to: str, cause: str) -> None:
        ev = {"t": time.time(), "kind": kind, "id": rid, "region": region, "from": frm, "to": to, "cause": cause}
        with self._lock:
            self._events.append(ev)
        log.info("%s %s %s: %s -> %s (%s)", region, kind, rid, frm, to, cause)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
