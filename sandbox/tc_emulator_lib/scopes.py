"""Scopes as taskcluster-lib-scopes and lib-api's ScopeExpressionTemplate handle them."""

from __future__ import annotations

import re

_VALID_SCOPE = re.compile(r"^[\x20-\x7e]*$")


def valid_scope(s) -> bool:
    return isinstance(s, str) and bool(_VALID_SCOPE.match(s))


def _satisfies_scope(scopeset, scope: str) -> bool:
    for s in scopeset:
        if s == scope or (s.endswith("*") and scope.startswith(s[:-1])):
            return True
    return False


def satisfies(scopeset, expr) -> bool:
    if isinstance(expr, str):
        return _satisfies_scope(scopeset, expr)
    if "AllOf" in expr:
        return all(satisfies(scopeset, e) for e in expr["AllOf"])
    if "AnyOf" in expr:
        return any(satisfies(scopeset, e) for e in expr["AnyOf"])
    raise ValueError(f"bad scope expression {expr!r}")


def remove_given_scopes(scopeset, expr):
    """The part of `expr` the scopes do not satisfy (None when satisfied)."""
    if isinstance(expr, str):
        return None if _satisfies_scope(scopeset, expr) else expr
    if "AllOf" in expr:
        rest = [r for r in (remove_given_scopes(scopeset, e) for e in expr["AllOf"]) if r is not None]
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else {"AllOf": rest}
    if "AnyOf" in expr:
        rest = [remove_given_scopes(scopeset, e) for e in expr["AnyOf"]]
        if any(r is None for r in rest):
            return None
        return rest[0] if len(rest) == 1 else {"AnyOf": rest}
    raise ValueError(f"bad scope expression {expr!r}")


def _grants(scope: str, role_id: str):
    """Whether `scope` grants the role `role_id`, and the role parameter it gives (None for a
    role without a trailing `*`). A final `*` in a role id is a wildcard (the role is assumed
    by any `assume:<prefix>...`); an `assume` scope ending in `*` grants every role it is a
    prefix of."""
    target = "assume:" + role_id
    star = scope.endswith("*")
    if role_id.endswith("*"):
        prefix = target[:-1]
        if scope.startswith(prefix):
            return True, scope[len(prefix):]
        if star and prefix.startswith(scope[:-1]):
            return True, "*"
        return False, None
    if scope == target or (star and target.startswith(scope[:-1])):
        return True, None
    return False, None


def _substitute_param(scope: str, param: str | None) -> str:
    # parameterized roles: `<..>` takes the part of the assumed scope the role's `*` matched;
    # a parameter ending in `*` ends the scope there
    if param is None or "<..>" not in scope:
        return scope
    i = scope.index("<..>")
    if param.endswith("*"):
        return scope[:i] + param
    return scope[:i] + param + scope[i + 4:]


def expand(scopes, roles) -> list[str]:
    """The scopes implied by `scopes` through `roles` ([(roleId, [scopes])]), repeatedly, as the
    auth service's expandScopes does. Returns `scopes` itself when no role applies."""
    out = list(scopes)
    seen = set(out)
    i = 0
    while i < len(out):
        s = out[i]
        i += 1
        if not (s.startswith("assume:") or (s.endswith("*") and "assume:".startswith(s[:-1]))):
            continue
        for role_id, role_scopes in roles:
            ok, param = _grants(s, role_id)
            if not ok:
                continue
            for t in role_scopes:
                t = _substitute_param(t, param)
                if t not in seen:
                    seen.add(t)
                    out.append(t)
    if len(out) == len(scopes):
        return out
    # a normalized scope set, as expandScopes returns: no scope another one's `*` already covers
    stars = [t[:-1] for t in out if t.endswith("*")]
    return sorted(s for s in out if not any(s != p + "*" and s.startswith(p) for p in stars))


_PARAM = re.compile(r"<([^>]+)>")


def template_params(expr) -> set[str]:
    """Parameter names used by a scope expression template (lib-api's ScopeExpressionTemplate):
    `<param>` in scopes, the `in` of `{for, in, each}` and the `if` of `{if, then}`."""
    if isinstance(expr, str):
        return set(_PARAM.findall(expr))
    if "for" in expr:
        return {expr["in"]} | (template_params(expr["each"]) - {expr["for"]})
    if "if" in expr:
        return {expr["if"]} | template_params(expr["then"])
    out: set[str] = set()
    for e in expr.get("AllOf", expr.get("AnyOf", [])):
        out |= template_params(e)
    return out


def render(expr, params: dict):
    """Substitute `<param>` in every scope of the template. `{for, in, each}` expands to one
    `each` per element of the array parameter `in`, spliced into the enclosing AllOf/AnyOf;
    `{if, then}` is `then` when the parameter `if` is true and disappears otherwise."""
    if isinstance(expr, str):
        def sub(m):
            v = params.get(m.group(1))
            if not isinstance(v, str):
                raise ValueError(f"scope parameter {m.group(1)} missing or not a string")
            return v
        return _PARAM.sub(sub, expr)
    key = "AllOf" if "AllOf" in expr else "AnyOf"
    out = []
    for e in expr[key]:
        if isinstance(e, dict) and "for" in e:
            values = params.get(e["in"])
            if not isinstance(values, list):
                raise ValueError(f"scope parameter {e['in']} missing or not an array")
            for v in values:
                out.append(render(e["each"], {**params, e["for"]: v}))
        elif isinstance(e, dict) and "if" in e:
            if params.get(e["if"]) is True:
                out.append(render(e["then"], params))
        else:
            out.append(render(e, params))
    return {key: out}
