"""Cron patterns as the hooks service reads them: cron-parser 5 (npm, harrisiirak/cron-parser).

The hooks service (services/hooks/src/api.js) refuses a hook whose `schedule` has a pattern that
`CronExpressionParser.parse` throws on, with the parser's message, and stores
`nextDate(schedule)` (services/hooks/src/nextdate.js): the earliest next occurrence over the
patterns after now, or 4000-02-01T00:00:00.000Z (`new Date(4000, 1, 1)`) when there is none.

Ported from cron-parser's src/CronExpressionParser.ts (field splitting, aliases, character
checks, lists, repeats, ranges, `#`), src/fields/CronField.ts (`validate`: range and
duplicate checks) and src/CronExpression.ts (`#findSchedule`, `#matchDayOfMonth`: the
day-of-month / day-of-week rules, `L`, the 10000-step loop limit). The service runs in UTC
(nextdate.js passes `utc: true`, an option cron-parser 5 no longer reads, so the process time
zone decides; Taskcluster's containers run in UTC), so there is no daylight-saving logic here.
The `H` (hash) extension of later cron-parser releases is not modelled: `H` is refused as an
invalid character.
"""

from __future__ import annotations

import datetime as dt
import math
import re

PREDEFINED = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *", "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *", "@hourly": "0 0 * * * *", "@minutely": "0 * * * * *", "@secondly": "* * * * * *",
    "@weekdays": "0 0 0 * * 1-5", "@weekends": "0 0 0 * * 0,6",
}
MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_STANDARD = re.compile(r"^[,*\d/-]+\Z")
# (name, class name, min, max, special chars, valid characters)
FIELDS = {
    "second": ("CronSecond", 0, 59, [], _STANDARD),
    "minute": ("CronMinute", 0, 59, [], _STANDARD),
    "hour": ("CronHour", 0, 23, [], _STANDARD),
    "dayOfMonth": ("CronDayOfMonth", 1, 31, ["L"], re.compile(r"^[?,*\dL/-]+\Z")),
    "month": ("CronMonth", 1, 12, [], _STANDARD),
    "dayOfWeek": ("CronDayOfWeek", 0, 7, ["L"], re.compile(r"^[?,*\dL#/-]+\Z")),
}
LOOP_LIMIT = 10000
FUTURE = dt.datetime(4000, 2, 1, tzinfo=dt.timezone.utc)  # nextdate.js: new Date(4000, 1, 1)
NAN = float("nan")


class CronError(Exception):
    """cron-parser threw; str() is its message."""


def _js_num(x) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if x == int(x):
            return str(int(x))
    return str(x)


def _parse_int(s: str):
    """JavaScript parseInt(s, 10): leading whitespace, a sign, digits; NaN otherwise."""
    m = re.match(r"^\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else NAN


def _to_number(s: str):
    """JavaScript unary +s for the characters a field can hold (digits, L, -, /, #)."""
    return int(s) if re.fullmatch(r"\d+", s) else NAN


class Field:
    def __init__(self, name: str, values: list, wildcard: bool):
        self.name = name
        self.cls, self.min, self.max, self.chars, _ = FIELDS[name]
        self.values = sorted(values, key=lambda v: (1, str(v)) if isinstance(v, str) else (0, v))
        self.wildcard = wildcard
        self._validate()

    def _validate(self):
        chars = f" or chars {''.join(self.chars)}" if self.chars else ""
        for v in self.values:
            ok = (self.min <= v <= self.max) if not isinstance(v, str) else any(
                re.fullmatch(r"\d{0,2}" + re.escape(c), v) for c in self.chars)
            if not ok:
                raise CronError(f"{self.cls} Validation error, got value {_js_num(v)} expected range "
                                f"{self.min}-{self.max}{chars}")
        dup = next((v for i, v in enumerate(self.values) if self.values.index(v) != i), None)
        if dup is not None and dup not in (0, ""):  # `assert(!duplicate)`: a falsy duplicate passes
            raise CronError(f"{self.cls} Validation error, duplicate values found: {_js_num(dup)}")

    @property
    def has_last_char(self) -> bool:
        return any(isinstance(v, str) and "L" in v for v in self.values)


class CronExpression:
    def __init__(self, fields: dict, nth_day_of_week: int):
        self.fields = fields
        self.nth = nth_day_of_week

    # -- CronExpression.ts
    def _match_day_of_month(self, d: dt.datetime) -> bool:
        dom, dow = self.fields["dayOfMonth"], self.fields["dayOfWeek"]
        matched_dom = d.day in dom.values or (dom.has_last_char and _is_last_day_of_month(d))
        matched_dow = _weekday(d) in dow.values or (dow.has_last_char and _is_last_weekday_match(dow.values, d))
        if not dom.wildcard and not dow.wildcard and (matched_dom or matched_dow):
            return True
        if matched_dom and dow.wildcard:
            return True
        if dom.wildcard and not dow.wildcard and matched_dow:
            return True
        return False

    def next_after(self, reference: dt.datetime) -> dt.datetime:
        """`next()` from `reference`: the first second-aligned match after it (or, as cron-parser
        does, wherever the loop stands after 10000 steps)."""
        cur = reference
        start = reference
        step = 0
        f = self.fields
        while step < LOOP_LIMIT:
            step += 1
            if not self._match_day_of_month(cur):
                cur = _start_of_day(cur) + dt.timedelta(days=1)
                continue
            if not (self.nth <= 0 or math.ceil(cur.day / 7) == self.nth):
                cur = _start_of_day(cur) + dt.timedelta(days=1)
                continue
            if cur.month not in f["month"].values:
                cur = _start_of_next_month(cur)
                continue
            if cur.hour not in f["hour"].values:
                cur = cur.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
                continue
            if cur.minute not in f["minute"].values:
                cur = cur.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
                continue
            if cur.second not in f["second"].values:
                cur = cur.replace(microsecond=0) + dt.timedelta(seconds=1)
                continue
            if cur == start:
                cur = cur.replace(microsecond=0) + dt.timedelta(seconds=1)
                continue
            break
        return cur.replace(microsecond=0)


def _weekday(d: dt.datetime) -> int:
    return d.isoweekday() % 7


def _start_of_day(d: dt.datetime) -> dt.datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


def _start_of_next_month(d: dt.datetime) -> dt.datetime:
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return d.replace(year=y, month=m, day=1, hour=0, minute=0, second=0, microsecond=0)


def _is_last_day_of_month(d: dt.datetime) -> bool:
    return (d + dt.timedelta(days=1)).month != d.month


def _is_last_weekday_match(values, d: dt.datetime) -> bool:
    last = (d + dt.timedelta(days=7)).month != d.month
    for v in values:
        first = str(v)[:1]
        if not first.isdigit():
            raise CronError(f"Invalid last weekday of the month expression: {v}")
        if _weekday(d) == int(first) % 7 and last:
            return True
    return False


# -- CronExpressionParser.ts

def _raw_fields(expression: str) -> dict:
    expression = expression or "0 * * * * *"
    atoms = re.split(r"\s+", expression.strip(" \t\n\r\v\f\u00a0\ufeff"))
    if len(atoms) > 6:
        raise CronError("Invalid cron expression, too many fields")
    defaults = ["*", "*", "*", "*", "*", "0"]
    if len(atoms) < len(defaults):
        atoms = defaults[len(atoms):] + atoms
    return dict(zip(["second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek"], atoms))


def _parse_field(name: str, value: str) -> list:
    _cls, lo, hi, chars, valid = FIELDS[name]
    if name in ("month", "dayOfWeek"):
        def alias(m):
            a = m.group(0).lower()
            r = MONTHS.get(a) or DAYS.get(a)  # `Months[match] || DayOfWeek[match]`
            if r is None:
                raise CronError(f'Validation error, cannot resolve alias "{a}"')
            return str(r)
        value = re.sub(r"[a-zA-Z]{3}", alias, value)
    if not valid.match(value):
        raise CronError(f"Invalid characters, got value: {value}")
    value = re.sub(r"[*?]", f"{lo}-{hi}", value)
    stack: list = []
    for atom in value.split(","):
        if not atom:
            raise CronError("Invalid list value format")
        result = _parse_repeat(name, atom, lo, hi)
        if isinstance(result, list):
            stack.extend(result)
        elif any(c in str(result) for c in chars):
            stack.append(result)
        else:
            v = _parse_int(str(result))
            if not (lo <= v <= hi):
                raise CronError(f"Constraint error, got value {_js_num(result)} expected range {lo}-{hi}")
            stack.append(v % 7 if name == "dayOfWeek" else result)
    return stack


def _parse_repeat(name: str, val: str, lo: int, hi: int):
    atoms = val.split("/")
    if len(atoms) > 2:
        raise CronError(f"Invalid repeat: {val}")
    if len(atoms) == 2:
        if not math.isnan(_parse_int(atoms[0])):
            atoms[0] = f"{atoms[0]}-{hi}"
        return _parse_range(name, atoms[0], _parse_int(atoms[1]), lo, hi)
    return _parse_range(name, val, 1, lo, hi)


def _parse_range(name: str, val: str, repeat, lo: int, hi: int):
    atoms = val.split("-")
    if len(atoms) <= 1:
        n = _to_number(val)
        return val if math.isnan(n) else n
    mn, mx = _parse_int(atoms[0]), _parse_int(atoms[1])
    if math.isnan(mn) or math.isnan(mx) or not (mn >= lo and mx <= hi):
        raise CronError(f"Constraint error, got range {_js_num(mn)}-{_js_num(mx)} expected range {lo}-{hi}")
    if mn > mx:
        raise CronError(f"Invalid range: {mn}-{mx}, min({mn}) > max({mx})")
    if math.isnan(repeat) or not repeat > 0:
        raise CronError(f"Constraint error, cannot repeat at every {_js_num(repeat)} time.")
    stack = [0] if name == "dayOfWeek" and mx % 7 == 0 else []
    for i in range(mn, mx + 1, repeat):
        if i not in stack:
            stack.append(i)
    return stack


def _parse_nth_day(val: str) -> tuple[str, int]:
    atoms = val.split("#")
    if len(atoms) <= 1:
        return atoms[0], 0
    nth = _to_number(atoms[-1])
    m = re.search(r"[,-/]", val)  # a character class from ',' to '/': , - . /
    if m:
        raise CronError(f"Constraint error, invalid dayOfWeek `#` and `{m.group(0)}` special characters are "
                        "incompatible")
    if not (len(atoms) <= 2 and not math.isnan(nth) and 1 <= nth <= 5):
        raise CronError("Constraint error, invalid dayOfWeek occurrence number (#)")
    return atoms[0], int(nth)


def parse(expression: str) -> CronExpression:
    """CronExpressionParser.parse: raises CronError with cron-parser's message."""
    expression = PREDEFINED.get(expression, expression)
    raw = _raw_fields(expression)
    values = {}
    for name in ("second", "minute", "hour", "month", "dayOfMonth"):
        values[name] = _parse_field(name, raw[name])
    dow, nth = _parse_nth_day(raw["dayOfWeek"])
    values["dayOfWeek"] = _parse_field("dayOfWeek", dow)
    fields = {name: Field(name, values[name], raw[name] in ("*", "?"))
              for name in ("second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek")}
    return CronExpression(fields, nth)


def next_date(schedule: list[str], reference: dt.datetime) -> dt.datetime:
    """nextdate.js: the earliest next occurrence of any pattern after `reference`, or FUTURE."""
    best = None
    for pattern in schedule:
        n = parse(pattern).next_after(reference)
        if best is None or n < best:
            best = n
    return best or FUTURE
