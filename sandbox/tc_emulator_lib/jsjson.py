"""JSON as the real services handle it.

The real services are Node.js (JSON.parse / JSON.stringify) in front of PostgreSQL (jsonb).
Python's json module differs from both in ways a client can observe:

- error messages of a malformed body (V8's wording is part of the MalformedPayload message);
- numbers: JS numbers are doubles (1.0 is printed 1, 1e21 is printed 1e+21, big integers lose
  precision), NaN/Infinity are not JSON;
- key order: JS objects put array-index keys first; jsonb sorts keys shorter-first, then
  bytewise, and prints `{"a": 1, "b": [1, 2]}` -- the text launch config ids are hashed from.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

__all__ = [
    "JSONParseError",
    "parse",
    "stringify",
    "js_number",
    "js_key_order",
    "jsonb_order",
    "jsonb_text",
    "jsonb_equal",
    "has_nul",
]

_MAX_SAFE = 2**53


class JSONParseError(ValueError):
    """A body JSON.parse would refuse; `str()` is V8's message."""


# ---------------------------------------------------------------------------
# parsing: a scanner that reports errors as V8 (Node 20+) does, then json.loads


_WS = " \t\n\r"


class _V8Scanner:
    """Checks JSON syntax, raising JSONParseError with V8's message for the first error."""

    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.i = 0

    # -- error helpers
    def _loc(self, pos: int) -> str:
        line = self.s.count("\n", 0, pos) + 1
        col = pos - (self.s.rfind("\n", 0, pos) + 1) + 1
        return f" at position {pos} (line {line} column {col})"

    def _fail(self, template: str | None = None, pos: int | None = None):
        pos = self.i if pos is None else pos
        if template is not None:
            where = "" if template.endswith("after JSON") else " in JSON"
            raise JSONParseError(template + where + self._loc(pos))
        # token-based message (V8 LookUpErrorMessageForJsonToken)
        if pos >= self.n:
            raise JSONParseError("Unexpected end of JSON input")
        c = self.s[pos]
        if c == '"':
            raise JSONParseError("Unexpected string in JSON" + self._loc(pos))
        if c == "-" or c.isdigit() and c.isascii():
            raise JSONParseError("Unexpected number in JSON" + self._loc(pos))
        if self.s in ("undefined", "NaN", "Infinity", "[object Object]"):
            raise JSONParseError(f'"{self.s}" is not valid JSON')
        ctx = 10
        if self.n >= 2 * ctx + 1:
            start, end = max(0, pos - ctx), min(self.n, pos + ctx)
            sub = self.s[start:end]
            pre = "" if start == 0 else "..."
            post = "" if end == self.n else "..."
            raise JSONParseError(f"Unexpected token '{c}', {pre}\"{sub}\"{post} is not valid JSON")
        raise JSONParseError(f"Unexpected token '{c}', \"{self.s}\" is not valid JSON")

    def _skip_ws(self):
        while self.i < self.n and self.s[self.i] in _WS:
            self.i += 1

    def _peek(self) -> str:
        self._skip_ws()
        return self.s[self.i] if self.i < self.n else ""

    # -- grammar
    def check(self):
        self._value()
        self._skip_ws()
        if self.i < self.n:
            self._fail("Unexpected non-whitespace character after JSON")

    def _value(self):
        c = self._peek()
        if c == "{":
            self._object()
        elif c == "[":
            self._array()
        elif c == '"':
            self._string()
        elif c == "-" or ("0" <= c <= "9" and c != ""):
            self._number()
        elif c in ("t", "f", "n"):
            word = {"t": "true", "f": "false", "n": "null"}[c]
            for k, ch in enumerate(word):
                if self.i + k >= self.n or self.s[self.i + k] != ch:
                    self._fail(pos=self.i + k)
            self.i += len(word)
        else:
            self._fail()

    def _object(self):
        self.i += 1
        c = self._peek()
        if c == "}":
            self.i += 1
            return
        if c != '"':
            self._fail("Expected property name or '}'")
        while True:
            self._string()
            if self._peek() != ":":
                self._fail("Expected ':' after property name")
            self.i += 1
            self._value()
            c = self._peek()
            if c == ",":
                self.i += 1
                if self._peek() != '"':
                    self._fail("Expected double-quoted property name")
                continue
            if c == "}":
                self.i += 1
                return
            self._fail("Expected ',' or '}' after property value")

    def _array(self):
        self.i += 1
        if self._peek() == "]":
            self.i += 1
            return
        while True:
            self._value()
            c = self._peek()
            if c == ",":
                self.i += 1
                continue
            if c == "]":
                self.i += 1
                return
            self._fail("Expected ',' or ']' after array element")

    def _string(self):
        self.i += 1  # opening quote
        while True:
            if self.i >= self.n:
                self._fail("Unterminated string", pos=self.n)
            c = self.s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\":
                self.i += 1
                if self.i >= self.n:
                    self._fail("Unterminated string", pos=self.n)
                e = self.s[self.i]
                if e == "u":
                    hexpart = self.s[self.i + 1:self.i + 5]
                    if len(hexpart) < 4 or any(h not in "0123456789abcdefABCDEF" for h in hexpart):
                        self._fail("Bad Unicode escape")
                    self.i += 5
                    continue
                if e not in '"\\/bfnrt':
                    self._fail("Bad escaped character")
                self.i += 1
                continue
            if ord(c) < 0x20:
                self._fail("Bad control character in string literal")
            self.i += 1

    def _digits(self) -> int:
        start = self.i
        while self.i < self.n and "0" <= self.s[self.i] <= "9":
            self.i += 1
        return self.i - start

    def _number(self):
        if self.s[self.i] == "-":
            self.i += 1
            if self.i >= self.n or not ("0" <= self.s[self.i] <= "9"):
                self._fail("No number after minus sign")
        if self.s[self.i] == "0":
            self.i += 1
        else:
            self._digits()
        if self.i < self.n and self.s[self.i] == ".":
            self.i += 1
            if self._digits() == 0:
                self._fail("Unterminated fractional number")
        if self.i < self.n and self.s[self.i] in "eE":
            self.i += 1
            if self.i < self.n and self.s[self.i] in "+-":
                self.i += 1
            if self._digits() == 0:
                self._fail("Exponent part is missing a number")


def _parse_int(s: str):
    v = int(s)
    return v if -_MAX_SAFE <= v <= _MAX_SAFE else float(s)


def _parse_float(s: str):
    v = float(s)
    if v.is_integer() and abs(v) <= _MAX_SAFE:
        return int(v) if not (v == 0 and math.copysign(1.0, v) < 0) else 0
    return v


def parse(text: str):
    """JSON.parse: raises JSONParseError with V8's message; numbers as JS would hold them."""
    _V8Scanner(text).check()
    return json.loads(text, parse_int=_parse_int, parse_float=_parse_float)


# ---------------------------------------------------------------------------
# serialization


def js_number(x) -> str:
    """Number.prototype.toString as JSON.stringify uses it."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        if -_MAX_SAFE <= x <= _MAX_SAFE:
            return str(x)
        x = float(x)
    if x != x or x in (math.inf, -math.inf):
        return "null"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    d = Decimal(repr(abs(x)))
    digits = "".join(map(str, d.as_tuple().digits)).rstrip("0") or "0"
    exp = d.as_tuple().exponent + (len("".join(map(str, d.as_tuple().digits))) - len(digits))
    k = len(digits)
    n = exp + k  # value = 0.d1..dk * 10^n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    es = ("+" if e >= 0 else "-") + str(abs(e))
    if k == 1:
        return sign + digits + "e" + es
    return sign + digits[0] + "." + digits[1:] + "e" + es


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def stringify(v, indent: int | None = None) -> str:
    """JSON.stringify (compact unless indent), keys in the order the dict holds them."""
    if indent is None:
        return _stringify_compact(v)
    return json.dumps(_to_jsonable(v), ensure_ascii=False, indent=indent)


def _stringify_compact(v) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return js_number(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, dict):
        return "{" + ",".join(_str(str(k)) + ":" + _stringify_compact(x) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_stringify_compact(x) for x in v) + "]"
    raise TypeError(f"not JSON: {type(v).__name__}")


def _to_jsonable(v):
    # for indented output: make numbers print as JS would
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        s = js_number(v)
        return json.loads(s) if s != "null" else None
    if isinstance(v, dict):
        return {k: _to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_jsonable(x) for x in v]
    return v


def _is_array_index(k: str) -> bool:
    return k.isdigit() and k.isascii() and str(int(k)) == k and int(k) < 2**32 - 1


def js_key_order(v):
    """Reorder keys as a JS object holds them: array-index keys first (ascending), then the rest
    in insertion order. Applies to anything that went through JSON.parse in the real service."""
    if isinstance(v, dict):
        idx = sorted((k for k in v if _is_array_index(k)), key=int)
        rest = [k for k in v if not _is_array_index(k)]
        return {k: js_key_order(v[k]) for k in idx + rest}
    if isinstance(v, list):
        return [js_key_order(x) for x in v]
    return v


# ---------------------------------------------------------------------------
# PostgreSQL jsonb


def _jsonb_key(k: str):
    b = k.encode("utf-8")
    return (len(b), b)


def jsonb_order(v):
    """Keys as jsonb stores them: shorter first, then bytewise. Recursive."""
    if isinstance(v, dict):
        return {k: jsonb_order(v[k]) for k in sorted(v, key=_jsonb_key)}
    if isinstance(v, list):
        return [jsonb_order(x) for x in v]
    return v


def _pg_number(x) -> str:
    # node-pg sends JSON.stringify's text; PostgreSQL numeric prints it without exponent
    s = js_number(x)
    if "e" not in s:
        return s
    return format(Decimal(s), "f")


def jsonb_text(v) -> str:
    """`value::text` of a jsonb value: sorted keys, ', ' and ': ' separators."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return _pg_number(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, dict):
        return "{" + ", ".join(_str(k) + ": " + jsonb_text(v[k]) for k in sorted(v, key=_jsonb_key)) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(jsonb_text(x) for x in v) + "]"
    raise TypeError(f"not JSON: {type(v).__name__}")


def jsonb_equal(a, b) -> bool:
    """jsonb `=`: key order irrelevant, numbers by value, booleans distinct from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(jsonb_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(jsonb_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def has_nul(v) -> bool:
    """jsonb refuses \\u0000 in strings (and keys)."""
    if isinstance(v, str):
        return "\x00" in v
    if isinstance(v, dict):
        return any("\x00" in k or has_nul(x) for k, x in v.items())
    if isinstance(v, list):
        return any(has_nul(x) for x in v)
    return False
