"""Continuation tokens as lib-api's paginateResults makes them: `new Hashids('salt', 10)`
(hashids.js v2) encoding the page offset. A token that does not decode means offset 0."""

from __future__ import annotations

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890"
_SEPS = "cfhistuCFHISTU"
_SEP_DIV = 3.5
_GUARD_DIV = 12


def _shuffle(alphabet: list[str], salt: list[str]) -> list[str]:
    if not salt:
        return alphabet
    t = list(alphabet)
    v = p = 0
    for i in range(len(t) - 1, 0, -1):
        v %= len(salt)
        integer = ord(salt[v])
        p += integer
        j = (integer + v + p) % i
        t[i], t[j] = t[j], t[i]
        v += 1
    return t


def _to_alphabet(n: int, alphabet: list[str]) -> list[str]:
    out: list[str] = []
    while True:
        out.insert(0, alphabet[n % len(alphabet)])
        n //= len(alphabet)
        if n <= 0:
            return out


def _from_alphabet(s: list[str], alphabet: list[str]) -> int:
    n = 0
    for c in s:
        n = n * len(alphabet) + alphabet.index(c)
    return n


class Hashids:
    def __init__(self, salt: str = "", min_length: int = 0):
        self.salt = list(salt)
        self.min_length = min_length
        alphabet = [c for c in dict.fromkeys(_ALPHABET)]
        seps = [c for c in _SEPS if c in alphabet]
        alphabet = [c for c in alphabet if c not in seps]
        seps = _shuffle(seps, self.salt)
        if not seps or len(alphabet) / len(seps) > _SEP_DIV:
            seps_len = -(-len(alphabet) // _SEP_DIV)
            seps_len = int(seps_len)
            if seps_len > len(seps):
                diff = seps_len - len(seps)
                seps += alphabet[:diff]
                alphabet = alphabet[diff:]
        alphabet = _shuffle(alphabet, self.salt)
        guard_count = -(-len(alphabet) // _GUARD_DIV)
        if len(alphabet) < 3:
            self.guards = seps[:guard_count]
            seps = seps[guard_count:]
        else:
            self.guards = alphabet[:guard_count]
            alphabet = alphabet[guard_count:]
        self.alphabet = alphabet
        self.seps = seps

    def encode(self, *numbers: int) -> str:
        alphabet = self.alphabet
        ids_int = sum(n % (i + 100) for i, n in enumerate(numbers))
        ret = [alphabet[ids_int % len(alphabet)]]
        lottery = list(ret)
        for i, n in enumerate(numbers):
            buffer = lottery + self.salt + alphabet
            alphabet = _shuffle(alphabet, buffer[:len(alphabet)])
            last = _to_alphabet(n, alphabet)
            ret += last
            if i + 1 < len(numbers):
                extra = n % (ord(last[0]) + i)
                ret.append(self.seps[extra % len(self.seps)])
        if len(ret) < self.min_length:
            ret.insert(0, self.guards[(ids_int + ord(ret[0])) % len(self.guards)])
            if len(ret) < self.min_length:
                ret.append(self.guards[(ids_int + ord(ret[2])) % len(self.guards)])
        half = len(alphabet) // 2
        while len(ret) < self.min_length:
            alphabet = _shuffle(alphabet, alphabet)
            ret = alphabet[half:] + ret + alphabet[:half]
            excess = len(ret) - self.min_length
            if excess > 0:
                ret = ret[excess // 2: excess // 2 + self.min_length]
        return "".join(ret)

    def decode(self, token) -> list[int]:
        if not token or not isinstance(token, str):
            return []
        parts = _split(token, self.guards)
        breakdown = parts[1] if len(parts) in (2, 3) else parts[0]
        if not breakdown:
            return []
        lottery = breakdown[0]
        sub_ids = _split(breakdown[1:], self.seps)
        alphabet = self.alphabet
        result = []
        for sub in sub_ids:
            buffer = [lottery] + self.salt + alphabet
            alphabet = _shuffle(alphabet, buffer[:len(alphabet)])
            if any(c not in alphabet for c in sub):
                return []
            result.append(_from_alphabet(list(sub), alphabet))
        try:
            if self.encode(*result) != token:
                return []
        except (IndexError, ZeroDivisionError):
            return []
        return result


def _split(s: str, chars: list[str]) -> list[str]:
    parts, cur = [], ""
    for c in s:
        if c in chars:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


_TOKENS = Hashids("salt", 10)


def encode_offset(offset: int) -> str | None:
    return _TOKENS.encode(offset) if offset else None


def decode_offset(token) -> int:
    d = _TOKENS.decode(token)
    return d[0] if d else 0


def paginate(rows: list, query: dict, max_limit: int = 1000):
    """paginateResults: (page rows, continuationToken, more). When `more`, the reply carries
    continuationToken -- null for limit=0, which the real output schema then refuses (500)."""
    limit = query.get("limit")
    page_size = min(int(limit) if limit else max_limit, max_limit)
    offset = decode_offset(query.get("continuationToken"))
    fetched = rows[offset:offset + page_size + 1]
    token, more = None, False
    if len(fetched) > page_size:
        token, more = encode_offset(offset + page_size), True
        fetched = fetched[:-1]
    return fetched, token, more
