"""Validation with the official generated schemas, errors worded and ordered as the real service's.

The real service validates with ajv 8 (allErrors, useDefaults, ajv-formats) through
taskcluster-lib-validate, whose message is:

    \\nSchema Validation Failed!\\nRejecting Schema: <rootUrl>/schemas/<svc>/v1/<name>.json#\\n
    Errors:\\n  * data/<path> <ajv message>\\n  * ...

(additionalProperties errors get `: "<name>"` appended). Here jsonschema (draft-06, as the
schemas' metaschema is) decides what is valid; each error is then rendered with ajv's wording
and the errors are put in the order ajv reports them (ajv evaluates the keywords of a schema in
a fixed order: $ref; const, enum, not, anyOf, oneOf, allOf; then number, string, array and
object keywords -- `required` before `additionalProperties` before `properties`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from urllib.parse import urljoin

import jsonschema
import referencing
import referencing.jsonschema
from jsonschema import FormatChecker, ValidationError

from .jsjson import js_number, jsonb_equal

INTERNAL_BASE = "https://tc-emulator.invalid"
SERVICES = ("worker-manager", "secrets", "queue", "hooks")  # the services the emulator serves, in routing order

# ajv 8 keyword evaluation order (rules.ts / vocabularies); types checked up front get -1
_UNTYPED = {"$ref": 0, "const": 1, "enum": 2, "not": 3, "anyOf": 4, "oneOf": 5, "allOf": 6, "if": 7,
            "then": 8, "else": 8}
_GROUPS = {
    "number": (10, ["maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf", "format"]),
    "string": (20, ["maxLength", "minLength", "pattern", "format"]),
    "array": (30, ["maxItems", "minItems", "uniqueItems", "additionalItems", "items", "contains"]),
    "object": (40, ["maxProperties", "minProperties", "required", "dependentRequired", "propertyNames",
                    "additionalProperties", "dependencies", "properties", "patternProperties"]),
}


def _data_group(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _keyword_rank(kw: str, schema, instance) -> float:
    if kw in _UNTYPED:
        return _UNTYPED[kw]
    if kw == "type":
        types = schema.get("type")
        if isinstance(types, str) and types in _GROUPS:
            base, kws = _GROUPS[types]
            if any(k in schema for k in kws):
                return base + len(kws)  # reported in the type group's else branch
        return -1  # checked before any keyword
    if kw == "format":
        g = _data_group(instance)
        base, kws = _GROUPS["number" if g == "number" else "string"]
        return base + kws.index("format")
    for base, kws in _GROUPS.values():
        if kw in kws:
            return base + kws.index(kw)
    return 99


# ---------------------------------------------------------------------------
# formats (ajv-formats, "full" mode)

_DATE = re.compile(r"^(\d\d\d\d)-(\d\d)-(\d\d)\Z")
_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?)(z|([+-])(\d\d)(?::?(\d\d))?)?\Z", re.I)
_DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z", re.I)


def _is_date(s: str) -> bool:
    m = _DATE.match(s)
    if not m:
        return False
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return 1 <= mo <= 12 and 1 <= d <= (29 if mo == 2 and leap else _DAYS[mo])


def _is_time(s: str, strict_tz: bool = True) -> bool:
    m = _TIME.match(s)
    if not m:
        return False
    hr, mn, sec = int(m.group(1)), int(m.group(2)), float(m.group(3))
    tz, sign = m.group(4), (-1 if m.group(5) == "-" else 1)
    tzh, tzm = int(m.group(6) or 0), int(m.group(7) or 0)
    if tzh > 23 or tzm > 59 or (strict_tz and not tz):
        return False
    if hr <= 23 and mn <= 59 and sec < 60:
        return True
    utc_min = mn - tzm * sign
    utc_hr = hr - tzh * sign - (1 if utc_min < 0 else 0)
    return utc_hr in (23, -1) and utc_min in (59, -1) and sec < 61


def is_date_time(s) -> bool:
    if not isinstance(s, str):
        return True
    parts = re.split(r"t|\s", s, flags=re.I)
    return len(parts) == 2 and _is_date(parts[0]) and _is_time(parts[1])


def is_email(s) -> bool:
    return not isinstance(s, str) or bool(_EMAIL.match(s))


# ajv-formats' "uri" (full mode): a scheme, then RFC 3986's hierarchical part, query and fragment
_NOT_URI_FRAGMENT = re.compile(r"/|:")
_URI = re.compile(
    r"^(?:[a-z][a-z0-9+\-.]*:)(?:\/?\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:]|%[0-9a-f]{2})*@)?(?:\[(?:(?:(?:(?:[0-9a-f]{1,4}:)"
    r"{6}|::(?:[0-9a-f]{1,4}:){5}|(?:[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){4}|(?:(?:[0-9a-f]{1,4}:){0,1}[0-9a-f]{1,4})?::"
    r"(?:[0-9a-f]{1,4}:){3}|(?:(?:[0-9a-f]{1,4}:){0,2}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){2}|(?:(?:[0-9a-f]{1,4}:){0,3}"
    r"[0-9a-f]{1,4})?::[0-9a-f]{1,4}:|(?:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4})?::)(?:[0-9a-f]{1,4}:[0-9a-f]{1,4}|(?:(?:25"
    r"[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?))|(?:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4})?::"
    r"[0-9a-f]{1,4}|(?:(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4})?::)|[Vv][0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+)\]|(?:(?:25"
    r"[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)|(?:[a-z0-9\-._~!$&'()*+,;=]|%[0-9a-f]{2})*)"
    r"(?::\d*)?(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*|\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+"
    r"(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)?|(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:"
    r"[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)(?:\?(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?(?:#(?:"
    r"[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?\Z", re.I)


def is_uri(s) -> bool:
    return not isinstance(s, str) or bool(_NOT_URI_FRAGMENT.search(s) and _URI.match(s))


def is_regex(s) -> bool:
    """ajv-formats: `new RegExp(s)` does not throw (Python's re stands in for V8's parser)."""
    if not isinstance(s, str):
        return True
    try:
        re.compile(s)
        return True
    except re.error:
        return False


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_date_time)
_FORMATS.checks("email")(is_email)
_FORMATS.checks("uri")(is_uri)
_FORMATS.checks("regex")(is_regex)


# ---------------------------------------------------------------------------
# jsonschema, with JavaScript regular expression semantics for `pattern`


def _js_regex(pattern: str) -> str:
    # JS `$` (without the m flag) matches only at the very end; Python's also before a final \n
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return pattern


def _pattern(validator, patrn, instance, schema):
    if validator.is_type(instance, "string") and not re.search(_js_regex(patrn), instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft6Validator, validators={"pattern": _pattern})


def _uniq_indices(items):
    # ajv uniqueItems: i from the end, j below it; reports "items ## j and i"
    for i in range(len(items) - 1, -1, -1):
        for j in range(i - 1, -1, -1):
            if jsonb_equal(items[i], items[j]):
                return j, i
    return None


def _ajv_messages(e: ValidationError, missing_iter, name_extras: bool = True) -> list[str]:
    """ajv 8's messages for one jsonschema error. `name_extras`: lib-validate appends the name of
    each additional property (`: "name"`); ajv's own message does not."""
    kw, v = e.validator, e.validator_value
    if kw == "type":
        return ["must be " + (",".join(v) if isinstance(v, list) else v)]
    if kw == "required":
        return [f"must have required property '{next(missing_iter)}'"]
    if kw == "additionalProperties":
        props = e.schema.get("properties", {}) if isinstance(e.schema, dict) else {}
        pats = e.schema.get("patternProperties", {}) if isinstance(e.schema, dict) else {}
        extras = [k for k in e.instance if k not in props and not any(re.search(_js_regex(p), k) for p in pats)]
        if not name_extras:
            return ["must NOT have additional properties" for _k in extras]
        return ["must NOT have additional properties: " + json.dumps(k, ensure_ascii=False) for k in extras]
    if kw == "pattern":
        return [f'must match pattern "{v}"']
    if kw == "format":
        return [f'must match format "{v}"']
    if kw in ("minLength", "maxLength"):
        return [f"must NOT have {'fewer' if kw == 'minLength' else 'more'} than {js_number(v)} characters"]
    if kw in ("minItems", "maxItems"):
        return [f"must NOT have {'fewer' if kw == 'minItems' else 'more'} than {js_number(v)} items"]
    if kw in ("minProperties", "maxProperties"):
        return [f"must NOT have {'fewer' if kw == 'minProperties' else 'more'} than {js_number(v)} properties"]
    ops = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kw in ops:
        return [f"must be {ops[kw]} {js_number(v)}"]
    if kw == "multipleOf":
        return [f"must be multiple of {js_number(v)}"]
    if kw == "uniqueItems":
        ij = _uniq_indices(e.instance) or (0, 1)
        return [f"must NOT have duplicate items (items ## {ij[0]} and {ij[1]} are identical)"]
    if kw == "enum":
        return ["must be equal to one of the allowed values"]
    if kw == "const":
        return ["must be equal to constant"]
    if kw == "not":
        return ["must NOT be valid"]
    if kw == "anyOf":
        return ["must match a schema in anyOf"]
    if kw == "oneOf":
        return ["must match exactly one schema in oneOf"]
    if kw is None:
        return ["boolean schema is false"]
    return [e.message]


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class SchemaSet:
    """The official schemas of one deployment (both services)."""

    def __init__(self, generated_dir: str):
        self.docs: dict[str, dict] = {}  # internal absolute id (no fragment) -> schema
        self.references: dict[str, dict] = {}
        resources = []
        for root, _dirs, files in os.walk(os.path.join(generated_dir, "schemas")):
            for f in sorted(files):
                if not f.endswith(".json"):
                    continue
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    doc = json.load(fh)
                uri = INTERNAL_BASE + doc["$id"].split("#")[0]
                doc = dict(doc)
                doc["$id"] = uri + "#"
                doc.pop("$schema", None)
                self.docs[uri] = doc
                resources.append((uri, referencing.Resource(doc, referencing.jsonschema.DRAFT6)))
        for svc in SERVICES:
            p = os.path.join(generated_dir, "references", svc, "v1", "api.json")
            with open(p, encoding="utf-8") as fh:
                self.references[svc] = json.load(fh)
        self.registry = referencing.Registry().with_resources(resources)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def schema_uri(self, service: str, name: str) -> str:
        """'v1/config-aws.json#' -> internal absolute id (no fragment)."""
        name = re.sub(r"\.ya?ml$", ".json", name.split("#")[0])
        return f"{INTERNAL_BASE}/schemas/{service}/{name}"

    def _validator(self, uri: str):
        if uri not in self._validators:
            self._validators[uri] = _Validator(self.docs[uri], registry=self.registry, format_checker=_FORMATS)
        return self._validators[uri]

    def _resolve(self, base: str, ref: str):
        target = urljoin(base, ref)
        doc_uri, _, frag = target.partition("#")
        node = self.docs[doc_uri]
        for part in [p for p in frag.split("/") if p]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, doc_uri

    def _sort_key(self, uri: str, instance, e: ValidationError):
        node, base = self.docs[uri], uri
        inst = instance
        spath, ipath = list(e.absolute_schema_path), list(e.absolute_path)
        key: list[tuple] = []
        i = ii = 0
        while True:
            while isinstance(node, dict) and "$ref" in node:  # draft-06: $ref siblings are ignored
                key.append((0, 0))
                node, base = self._resolve(base, node["$ref"])
            if i >= len(spath) - 1:
                kw = spath[i] if i < len(spath) else None
                key.append((_keyword_rank(kw, e.schema, e.instance) if kw else 99, 0))
                return key
            kw = spath[i]
            if kw == "properties":
                name = spath[i + 1]
                key.append((_keyword_rank(kw, node, inst), list(node["properties"]).index(name)))
                node, inst = node["properties"][name], inst[name]
                i, ii = i + 2, ii + 1
            elif kw == "items":
                if isinstance(node["items"], list):
                    idx = spath[i + 1]
                    node, i = node["items"][idx], i + 2
                else:
                    idx = ipath[ii]
                    node, i = node["items"], i + 1
                key.append((_keyword_rank(kw, node, inst), idx))
                inst, ii = inst[idx], ii + 1
            elif kw in ("additionalProperties", "patternProperties", "propertyNames") and not isinstance(spath[i + 1], str):
                name = ipath[ii]
                key.append((_keyword_rank(kw, node, inst), list(inst).index(name)))
                node, inst = node[kw], inst[name]
                i, ii = i + 1, ii + 1
            elif kw in ("allOf", "anyOf", "oneOf"):
                idx = spath[i + 1]
                key.append((_UNTYPED[kw], idx))
                node, i = node[kw][idx], i + 2
            elif kw == "not":
                key.append((_UNTYPED[kw], 0))
                node, i = node[kw], i + 1
            else:
                key.append((_keyword_rank(kw, node, inst), 0))
                return key

    def errors(self, service: str, schema_name: str, instance) -> list[str]:
        """ajv-style error lines ('data/path message'), in ajv's order; [] when valid."""
        return self._errors(self.schema_uri(service, schema_name), instance)

    def _errors(self, uri: str, instance, name_extras: bool = True) -> list[str]:
        raw = list(self._validator(uri).iter_errors(instance))
        if not raw:
            return []
        keyed = []
        missing_iters: dict = {}
        for n, e in enumerate(raw):
            key = self._sort_key(uri, instance, e)
            sub = 0
            if e.validator in ("anyOf", "oneOf"):
                # ajv (allErrors) keeps every branch's errors, in branch order, before its own
                for c in sorted(e.context, key=lambda c: list(c.relative_schema_path)[:1]):
                    for msg in _ajv_messages(c, iter([p for p in c.validator_value if p not in c.instance])
                                             if c.validator == "required" else None, name_extras):
                        keyed.append((key, n, sub, "data" + _pointer(c.absolute_path) + " " + msg))
                        sub += 1
            mk = (tuple(e.absolute_path), tuple(e.absolute_schema_path))
            if e.validator == "required" and mk not in missing_iters:
                missing_iters[mk] = iter([p for p in e.validator_value if p not in e.instance])
            for msg in _ajv_messages(e, missing_iters.get(mk), name_extras):
                keyed.append((key, n, sub, "data" + _pointer(e.absolute_path) + " " + msg))
                sub += 1
        keyed.sort(key=lambda t: (t[0], t[1], t[2]))
        return [line for _k, _n, _s, line in keyed]

    def message(self, service: str, schema_name: str, instance, root_url: str) -> str | None:
        """lib-validate's message, or None when valid."""
        lines = self.errors(service, schema_name, instance)
        if not lines:
            return None
        name = re.sub(r"\.ya?ml$", ".json", schema_name.split("#")[0])
        return ("\nSchema Validation Failed!\nRejecting Schema: "
                f"{root_url}/schemas/{service}/{name}#\nErrors:\n  * " + "\n  * ".join(lines))

    def apply_defaults(self, service: str, schema_name: str, instance) -> None:
        """ajv useDefaults: fill in missing properties whose schema has a `default`, in place."""
        uri = self.schema_uri(service, schema_name)
        self._defaults(self.docs[uri], uri, instance, 0)

    def _defaults(self, node, base, inst, depth):
        if depth > 64 or not isinstance(node, dict):
            return
        while "$ref" in node:
            node, base = self._resolve(base, node["$ref"])
        if isinstance(inst, dict) and isinstance(node.get("properties"), dict):
            for name, sub in node["properties"].items():
                if name not in inst and isinstance(sub, dict) and "default" in sub:
                    inst[name] = copy.deepcopy(sub["default"])
            for name, sub in node["properties"].items():
                if name in inst:
                    self._defaults(sub, base, inst[name], depth + 1)
        if isinstance(inst, list) and isinstance(node.get("items"), dict):
            for x in inst:
                self._defaults(node["items"], base, x, depth + 1)


# ---------------------------------------------------------------------------
# schemas that come with the data: a hook's triggerSchema (ajv 8, draft-07, ajv-formats)

DRAFT7_META = "http://json-schema.org/draft-07/schema"
_Draft7 = jsonschema.validators.extend(jsonschema.Draft7Validator, validators={"pattern": _pattern})
# what ajv 8 (draft-07 vocabulary, strict mode) compiles without "unknown keyword"
DRAFT7_KEYWORDS = {
    "$id", "$schema", "$ref", "$comment", "definitions", "title", "description", "default", "examples", "readOnly",
    "writeOnly", "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "format", "items", "additionalItems", "maxItems", "minItems", "uniqueItems",
    "contains", "maxProperties", "minProperties", "required", "properties", "patternProperties",
    "additionalProperties", "dependencies", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
    "contentMediaType", "contentEncoding", "nullable", "discriminator",
}
# ajv-formats' full set: formats ajv knows (only date-time, email, uri and regex are checked here)
AJV_FORMATS = {
    "date", "time", "date-time", "iso-time", "iso-date-time", "duration", "uri", "uri-reference", "uri-template",
    "url", "email", "hostname", "ipv4", "ipv6", "regex", "uuid", "json-pointer", "json-pointer-uri-fragment",
    "relative-json-pointer", "byte", "int32", "int64", "float", "double", "password", "binary",
}
_SUBSCHEMA = {"additionalItems", "additionalProperties", "contains", "propertyNames", "if", "then", "else", "not"}
_SUBSCHEMA_MAPS = {"definitions", "properties", "patternProperties", "dependencies"}


class AdhocSchema(SchemaSet):
    """One schema given as data, validated as ajv 8 validates with the draft-07 vocabulary."""

    def __init__(self, schema: dict, validator=_Draft7):
        self.uri = INTERNAL_BASE + "/adhoc/schema.json"
        doc = dict(schema)
        doc["$id"] = self.uri + "#"
        doc.pop("$schema", None)
        self.docs = {self.uri: doc}
        self.references = {}
        self.registry = referencing.Registry().with_resources(
            [(self.uri, referencing.Resource(doc, referencing.jsonschema.DRAFT7))])
        self._validators = {}
        self._validator_class = validator

    def _validator(self, uri: str):
        if uri not in self._validators:
            self._validators[uri] = self._validator_class(self.docs[uri], registry=self.registry,
                                                          format_checker=_FORMATS)
        return self._validators[uri]

    def ajv_errors(self, instance) -> list[str]:
        """ajv's own error lines ('data/path message'), in ajv's order."""
        return self._errors(self.uri, instance, name_extras=False)


def meta_schema_errors(schema) -> list[tuple[str, str]]:
    """ajv.validateSchema(schema) with ajv 8's default meta-schema (draft-07): [(instancePath,
    message)] in ajv's order; [] when valid or when `$schema` names a meta-schema ajv does not
    have (ajv then only warns)."""
    if isinstance(schema, dict) and "$schema" in schema and \
            str(schema["$schema"]).split("#")[0] != DRAFT7_META:
        return []
    meta = AdhocSchema(jsonschema.Draft7Validator.META_SCHEMA)
    out = []
    for line in meta.ajv_errors(schema):
        path, _, msg = line[len("data"):].partition(" ")
        out.append((path, msg))
    return out


def strict_mode_error(schema, path: str = "#") -> str | None:
    """The error ajv 8's strict mode throws when compiling `schema`, or None."""
    if not isinstance(schema, dict):
        return None
    for k, v in schema.items():
        if k not in DRAFT7_KEYWORDS:
            return f'strict mode: unknown keyword: "{k}"'
        if k == "format" and isinstance(v, str) and v not in AJV_FORMATS:
            return f'unknown format "{v}" ignored in schema at path "{path}"'
        subs = []
        if k in _SUBSCHEMA:
            subs = [(f"{path}/{k}", v)]
        elif k in _SUBSCHEMA_MAPS and isinstance(v, dict):
            subs = [(f"{path}/{k}/{n}", x) for n, x in v.items()]
        elif k in ("allOf", "anyOf", "oneOf") and isinstance(v, list):
            subs = [(f"{path}/{k}/{i}", x) for i, x in enumerate(v)]
        elif k == "items":
            subs = [(f"{path}/{k}/{i}", x) for i, x in enumerate(v)] if isinstance(v, list) else [(f"{path}/{k}", v)]
        for p, sub in subs:
            err = strict_mode_error(sub, p)
            if err:
                return err
    return None
