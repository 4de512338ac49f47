"""Routing and the taskcluster-lib-api request pipeline, with the worker-manager and secrets handlers.

Per matched endpoint, in lib-api's order:
  parse body (MalformedPayload) -> authenticate/authorize when the scope expression needs only
  URL parameters (401/403) -> URL parameter patterns (InvalidRequestArguments) -> query string
  (InvalidRequestArguments) -> input schema (MalformedPayload for a non-JSON content type,
  InputValidationError) -> handler (create/update authorize with `providerId` from the body
  here) -> output schema (500 if the reply does not match).
Errors are rendered as lib-api's expressError renders them.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from . import hawk
from . import scopes as scopelib
from .hashids import paginate
from .jsjson import JSONParseError, has_nul, js_key_order, parse, stringify
from .hooks import HooksError, HooksService
from .queue import QueueError
from .store import NULL_PROVIDER, LaunchConfigConflict, Secret, iso, parse_date, utcnow
from .validation import SERVICES

STATUS = {
    "MalformedPayload": 400, "InvalidRequestArguments": 400, "InputValidationError": 400, "InputError": 400,
    "AuthenticationFailed": 401, "InsufficientScopes": 403, "ResourceNotFound": 404, "RequestConflict": 409,
    "ResourceExpired": 410, "InputTooLarge": 413, "InternalServerError": 500,
}
SERVICE_ERROR_CODES = {"worker-manager": {"ProviderSetupFailed": 503}, "secrets": {}, "queue": {}, "hooks": {}}
SLUGID_PATTERN = r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
GENERIC_ID_PATTERN = r"^[a-zA-Z0-9-_]{1,38}$"

# URL parameter patterns declared by the services (APIBuilder `params`)
PARAM_PATTERNS = {
    "worker-manager": {
        "workerPoolId": r"^[a-zA-Z0-9-_]{1,38}\/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$",
        "workerGroup": r"^([a-zA-Z0-9-_]{1,38})$",
        "workerId": r"^([a-zA-Z0-9-_]{1,38})$",
    },
    "secrets": {},
    "queue": {  # services/queue/src/api.js
        "taskId": SLUGID_PATTERN,
        "taskGroupId": SLUGID_PATTERN,
        "taskQueueId": r"^[A-Za-z0-9_-]{1,38}\/[A-Za-z0-9_-]{1,38}$",
        "provisionerId": GENERIC_ID_PATTERN,
        "workerType": GENERIC_ID_PATTERN,
        "workerGroup": GENERIC_ID_PATTERN,
        "workerId": GENERIC_ID_PATTERN,
        "runId": r"^[1-9]*[0-9]+$",
        "name": r"^[\x20-\x7e]+$",
    },
    "hooks": {  # services/hooks/src/api.js (as JS prints the RegExp source)
        "hookGroupId": r"^[a-zA-Z0-9-_]{1,1000}$",
        "hookId": r"^[a-zA-Z0-9-_\/]{1,1000}$",
    },
}
# query-string patterns per endpoint (declared in the handlers' `query`)
PAGINATION_QUERY = {"continuationToken": r".", "limit": r"^[0-9]+$"}
WORKER_STATE = r"^(requested|running|stopping|stopped)$"
LAUNCH_CONFIG_ID = r"^([a-zA-Z0-9-_]*)$"
QUERY_PATTERNS = {
    ("worker-manager", "listWorkerPools"): PAGINATION_QUERY,
    ("worker-manager", "listWorkerPoolLaunchConfigs"): {**PAGINATION_QUERY, "includeArchived": r"^(true|false)$"},
    ("worker-manager", "listWorkersForWorkerPool"): {**PAGINATION_QUERY, "launchConfigId": LAUNCH_CONFIG_ID,
                                                     "state": WORKER_STATE},
    ("worker-manager", "listWorkers"): {**PAGINATION_QUERY, "quarantined": r"^(true|false)$",
                                        "workerState": WORKER_STATE, "launchConfigId": LAUNCH_CONFIG_ID},
    ("secrets", "list"): PAGINATION_QUERY,
    ("queue", "listTaskGroup"): PAGINATION_QUERY,
    ("queue", "listWorkers"): {**PAGINATION_QUERY, "quarantined": r"^(true|false)$"},
}
CLEAN_PAYLOAD = {("secrets", "set")}  # requestInfo shows secret: '(OMITTED)'

START_TIME = time.time()

MISSING_SCOPES = "\n".join([
    "Client ID {clientId} does not have sufficient scopes and is missing the following scopes:",
    "", "```", "{{unsatisfied}}", "```", "",
    "This request requires the client to satisfy the following scope expression:",
    "", "```", "{{required}}", "```"])
NO_CREDENTIALS = "\n".join([
    "This request requires Taskcluster credentials that satisfy the following scope expression:",
    "", "```", "{{required}}", "```"])
PAYLOAD_HASH = ("Invalid payload hash: {{hash}}\nComputed payload hash: {{computedHash}}\n"
                "This happens when your request carries a signed hash of the payload and the hash "
                "doesn't match the hash we've computed on the server-side.")


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: dict | None = None, *, request_info: bool = True,
                 headers: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}
        self.request_info = request_info
        self.headers = headers or {}


@dataclass
class Route:
    service: str
    entry: dict
    regex: re.Pattern
    params: list


def _route_regex(service: str, route: str):
    """path-to-regexp 0.1 as Express 4 uses it (case-insensitive, optional trailing slash);
    worker pool ids and secret names are declared `(*)` and take slashes."""
    params = []
    out = ""
    pos = 0
    for m in re.finditer(r"<([^>]+)>", route):
        out += re.escape(route[pos:m.start()])
        name = m.group(1)
        params.append(name)
        wildcard = ((name == "workerPoolId" and (route.startswith("/worker-pool") or route == "/workers/<workerPoolId>"))
                    or (service == "secrets" and name == "name")
                    or (name == "taskQueueId" and route.startswith(("/claim-work/", "/pending/"))))
        out += "(.*)" if wildcard else "([^/]+?)"
        pos = m.end()
    out += re.escape(route[pos:])
    return re.compile("^" + out + r"\/?$", re.I), params


class Response:
    def __init__(self, status: int, body, headers: dict | None = None, content_type="application/json; charset=utf-8"):
        self.status, self.body, self.headers, self.content_type = status, body, headers or {}, content_type

    def bytes(self) -> bytes:
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        if isinstance(self.body, str):
            return self.body.encode("utf-8", "backslashreplace")
        return stringify(self.body).encode("utf-8", "backslashreplace")


@dataclass
class Request:
    method: str
    raw_uri: str  # path and query exactly as sent (what Hawk signs)
    headers: object  # case-insensitive mapping
    body: bytes
    remote_addr: str = "127.0.0.1"

    @property
    def path(self) -> str:
        return self.raw_uri.split("?", 1)[0]

    @property
    def query_string(self) -> str:
        return self.raw_uri.split("?", 1)[1] if "?" in self.raw_uri else ""


@dataclass
class Ctx:
    """One API request as lib-api's middleware sees it."""
    req: Request
    service: str
    entry: dict
    params: dict
    route_params: list = field(default_factory=list)
    query: dict = field(default_factory=dict)
    text: str = ""
    body: object = field(default_factory=dict)
    raw_payload: object = None  # the unparsed text when JSON.parse failed
    auth: object = None  # hawk.AuthResult or ApiError (failed)
    response_headers: dict = field(default_factory=dict)


class Api:
    def __init__(self, emulator):
        self.em = emulator  # server.Emulator: store, schemas, root_url, lock
        self.routes: list[Route] = []
        for service in SERVICES:
            for entry in self.em.schemas.references[service]["entries"]:
                regex, params = _route_regex(service, entry["route"])
                self.routes.append(Route(service, entry, regex, params))
        self.handlers = {
            ("worker-manager", "ping"): self.ping,
            ("worker-manager", "lbheartbeat"): self.lbheartbeat,
            ("worker-manager", "version"): self.version,
            ("worker-manager", "heartbeat"): self.lbheartbeat,
            ("worker-manager", "workerPool"): self.worker_pool,
            ("worker-manager", "createWorkerPool"): self.create_worker_pool,
            ("worker-manager", "updateWorkerPool"): self.update_worker_pool,
            ("worker-manager", "deleteWorkerPool"): self.delete_worker_pool,
            ("worker-manager", "listWorkerPools"): self.list_worker_pools,
            ("worker-manager", "listWorkerPoolLaunchConfigs"): self.list_launch_configs,
            ("worker-manager", "listProviders"): self.list_providers,
            ("secrets", "ping"): self.ping,
            ("secrets", "lbheartbeat"): self.lbheartbeat,
            ("secrets", "version"): self.version,
            ("secrets", "heartbeat"): self.lbheartbeat,
            ("secrets", "set"): self.secret_set,
            ("secrets", "get"): self.secret_get,
            ("secrets", "remove"): self.secret_remove,
            ("secrets", "list"): self.secret_list,
            ("worker-manager", "listWorkersForWorkerPool"): self.list_workers_for_worker_pool,
            ("worker-manager", "worker"): self.worker,
            ("worker-manager", "removeWorker"): self.remove_worker,
            ("worker-manager", "listWorkers"): self.wm_list_workers,
            ("queue", "ping"): self.ping,
            ("queue", "lbheartbeat"): self.lbheartbeat,
            ("queue", "version"): self.version,
            ("queue", "heartbeat"): self.lbheartbeat,
            ("queue", "createTask"): self.create_task,
            ("queue", "task"): self.task,
            ("queue", "status"): self.task_status,
            ("queue", "listTaskGroup"): self.list_task_group,
            ("queue", "cancelTask"): self.cancel_task,
            ("queue", "listWorkers"): self.queue_list_workers,
            ("queue", "getWorker"): self.queue_get_worker,
            ("hooks", "ping"): self.ping,
            ("hooks", "lbheartbeat"): self.lbheartbeat,
            ("hooks", "version"): self.version,
            ("hooks", "heartbeat"): self.lbheartbeat,
        }
        self.hooks = HooksService(self)
        for name, fn in self.hooks.handlers().items():
            self.handlers[("hooks", name)] = fn

    # ------------------------------------------------------------------ routing

    def match(self, method: str, path: str):
        """(route, params) or (None, None); params are decodeURIComponent'ed."""
        for service in SERVICES:
            prefix = f"/api/{service}/v1"
            if not path.lower().startswith(prefix.lower()):
                continue
            rest = path[len(prefix):]
            if rest and not rest.startswith("/"):
                continue
            for route in self.routes:
                if route.service != service:
                    continue
                if route.entry["method"].upper() != method and not (method == "HEAD" and route.entry["method"] == "get"):
                    continue
                m = route.regex.match(rest or "/")
                if m:
                    values = {}
                    for name, raw in zip(route.params, m.groups()):
                        values[name] = _decode_uri_component(raw)
                    return route, values
        return None, None

    def path_exists(self, path: str) -> bool:
        return any(self.match(m, path)[0] for m in ("GET", "PUT", "POST", "DELETE"))

    # ------------------------------------------------------------------ pipeline

    def handle(self, req: Request, route: Route, params: dict) -> tuple[Response, Ctx]:
        ctx = Ctx(req, route.service, route.entry, params, route.params)
        try:
            self._parse_body(ctx)
            self._auth_middleware(ctx)
            self._check_params(ctx)
            self._check_query(ctx)
            self._check_input(ctx)
            handler = self.handlers.get((ctx.service, ctx.entry["name"]))
            if handler is None:
                return Response(501, {
                    "code": "NotImplemented",
                    "message": f"tc-emulator: {ctx.service}.{ctx.entry['name']} exists in the real service "
                               "but is not implemented by this emulator"}), ctx
            try:
                reply = handler(ctx)
            except (QueueError, HooksError) as e:  # res.reportError in a handler of the queue or hooks
                raise ApiError(e.code, e.message, e.details)
            return self._reply(ctx, reply), ctx
        except ApiError as err:
            return self.error_response(ctx, err), ctx
        except Exception as exc:  # an internal error, reported as the real service does
            self.em.log.exception("internal error in %s", ctx.entry["name"])
            return self.error_response(ctx, internal_error(exc)), ctx

    def _parse_body(self, ctx: Ctx):
        h = ctx.req.headers
        ctype = (h.get("Content-Type") or "").split(";")[0].strip().lower()
        has_body = h.get("Transfer-Encoding") is not None or _is_int(h.get("Content-Length"))
        if ctype == "application/json" and has_body and ctx.req.body:
            ctx.text = ctx.req.body.decode("utf-8", "replace")
            try:
                body = parse(ctx.text)
                if not isinstance(body, (dict, list)):
                    raise JSONParseError("Must be an object or array")
            except JSONParseError as e:
                ctx.raw_payload = ctx.text
                raise ApiError("MalformedPayload", "Failed to parse JSON: {{errMsg}}", {"errMsg": str(e)})
            ctx.body = body
        else:
            ctx.text, ctx.body = "", {}

    def authenticate(self, ctx: Ctx):
        if ctx.auth is None:
            try:
                res = hawk.authenticate(
                    clients=self.em.store.clients, method=ctx.req.method, resource=ctx.req.raw_uri,
                    host_header=ctx.req.headers.get("Host"), headers=ctx.req.headers, expand=self.em.store.expand)
                ctx.auth = res
                if res.status == "auth-success" and res.hash is not None:
                    # lib-api checks the payload hash itself, over the body text it parsed
                    computed = hawk.payload_hash(ctx.text, ctx.req.headers.get("Content-Type"))
                    if computed != res.hash:
                        ctx.auth = ApiError("AuthenticationFailed", PAYLOAD_HASH, {
                            "status": "auth-failed", "message": PAYLOAD_HASH, "computedHash": computed},
                            headers={"www-authenticate": "hawk"})
            except hawk.AuthFailed as e:
                ctx.auth = ApiError("AuthenticationFailed", str(e), {"status": "auth-failed", "message": str(e)},
                                    headers={"www-authenticate": "hawk"})
        return ctx.auth

    def authorize(self, ctx: Ctx, params: dict):
        res = self.authenticate(ctx)
        if isinstance(res, ApiError):
            raise res
        required = scopelib.render(ctx.entry["scopes"], params)
        if res.status == "no-auth":
            if not scopelib.satisfies(self.em.store.expand(["assume:anonymous"]), required):
                raise ApiError("InsufficientScopes", NO_CREDENTIALS, {"required": required}, request_info=False)
            return
        if not scopelib.satisfies(res.scopes, required):
            raise ApiError("InsufficientScopes", MISSING_SCOPES.replace("{clientId}", res.client_id), {
                "scopes": res.scopes, "required": required,
                "unsatisfied": scopelib.remove_given_scopes(res.scopes, required)})

    def _auth_middleware(self, ctx: Ctx):
        scopes = ctx.entry.get("scopes")
        if not scopes:
            # credentials are checked even where no scopes are needed (a bad MAC is refused)
            res = self.authenticate(ctx)
            if isinstance(res, ApiError):
                raise res
            return
        if scopelib.template_params(scopes) <= set(ctx.route_params):
            self.authorize(ctx, ctx.params)

    def _check_params(self, ctx: Ctx):
        errors = []
        for name, value in ctx.params.items():
            pat = PARAM_PATTERNS[ctx.service].get(name)
            # JS `$` matches only at the very end; the message shows the RegExp as JS prints it
            if pat and not re.search(pat[:-1] + r"\Z", value):
                errors.append(f"URL parameter '{name}' given as '{value}' must match regular expression: '/{pat}/'")
        if errors:
            raise ApiError("InvalidRequestArguments", "Invalid URL patterns:\n" + "\n".join(errors), {"errors": errors})

    def _check_query(self, ctx: Ctx):
        patterns = QUERY_PATTERNS.get((ctx.service, ctx.entry["name"]), {})
        query: dict = {}
        for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True):
            query[k] = query[k] + "," + v if k in query else v
        errors = []
        for k, v in query.items():
            if k not in patterns:
                if k != "bewit":
                    errors.append(f"Query-string parameter: {k} is not supported!")
                continue
            if not re.search(patterns[k], v):
                errors.append(f'Query-string parameter: {k}="{v}" does not match expression: /{patterns[k]}/')
        if errors:
            raise ApiError("InvalidRequestArguments", "\n".join(errors), {"errors": errors})
        ctx.query = query

    def _check_input(self, ctx: Ctx):
        schema = ctx.entry.get("input")
        if not schema:
            return
        h = ctx.req.headers
        has_body = h.get("Transfer-Encoding") is not None or _is_int(h.get("Content-Length"))
        ctype = (h.get("Content-Type") or "").split(";")[0].strip().lower()
        if not has_body or ctype != "application/json":
            raise ApiError("MalformedPayload", "Payload must be JSON with content-type: application/json "
                           "got content-type: {{contentType}}", {"contentType": h.get("Content-Type")})
        if ctx.service in ("queue", "hooks") and self.em.store.options.get("applySchemaDefaults", True):
            self.em.schemas.apply_defaults(ctx.service, schema, ctx.body)  # ajv useDefaults, as it validates
        msg = self.em.schemas.message(ctx.service, schema, ctx.body, self.em.root_url)
        if msg:
            raise ApiError("InputValidationError", msg, {"schema": f"{self.em.root_url}/schemas/{ctx.service}/{schema}"})

    def _reply(self, ctx: Ctx, reply) -> Response:
        out = ctx.entry.get("output")
        if out and out != "blob":
            lines = self.em.schemas.errors(ctx.service, out, json.loads(stringify(reply)))
            if lines:
                self.em.log.error("output schema validation error in %s: %s", ctx.entry["name"], lines)
                return self.error_response(ctx, internal_error(RuntimeError("Output schema validation error")))
        return Response(200, reply if reply is not None else {}, ctx.response_headers)

    # ------------------------------------------------------------------ errors

    def error_response(self, ctx: Ctx | None, err: ApiError) -> Response:
        service = ctx.service if ctx else "worker-manager"
        name = ctx.entry["name"] if ctx else "unknown"
        codes = {**STATUS, **SERVICE_ERROR_CODES.get(service, {})}
        code, message, details = err.code, err.message, err.details
        status = codes.get(code)
        if status is None:
            message = f"Internal error, unknown error code: {code}\n{message or 'Missing message!'}"
            code, status = "InternalServerError", 500
        t = iso(utcnow())
        message = _substitute(message, details) + "\n".join([
            "\n\n---\n", "* method:     " + name, "* errorCode:  " + code,
            "* statusCode: " + str(status), "* time:       " + t])
        body = {"code": code, "message": message}
        if err.request_info:
            body["requestInfo"] = {
                "method": name,
                "params": dict(ctx.params) if ctx else {},
                "payload": self._request_info_payload(ctx) if ctx else {},
                "time": t,
            }
        headers = dict(ctx.response_headers) if ctx else {}
        headers.update(err.headers)
        return Response(status, body, headers)

    def fault_response(self, req: Request, route: Route | None, params: dict | None, status: int, code: str,
                       message: str) -> Response:
        """An injected failure, in the shape of the real service's error bodies."""
        name = route.entry["name"] if route else "unknown"
        payload = {}
        try:
            if req.body:
                parsed = parse(req.body.decode("utf-8", "replace"))
                payload = js_key_order(parsed) if isinstance(parsed, (dict, list)) else {}
        except JSONParseError:
            pass
        t = iso(utcnow())
        message = message.replace("{{incidentId}}", str(uuid.uuid4())) + "\n".join([
            "\n\n---\n", "* method:     " + name, "* errorCode:  " + code,
            "* statusCode: " + str(status), "* time:       " + t])
        return Response(status, {"code": code, "message": message, "requestInfo": {
            "method": name, "params": dict(params or {}), "payload": payload, "time": t}})

    def _request_info_payload(self, ctx: Ctx):
        if ctx.raw_payload is not None:
            return ctx.raw_payload
        payload = js_key_order(copy.deepcopy(ctx.body))
        if (ctx.service, ctx.entry["name"]) in CLEAN_PAYLOAD and isinstance(payload, dict):
            payload["secret"] = "(OMITTED)"
        return payload

    # ------------------------------------------------------------------ common handlers

    def ping(self, ctx):
        return {"alive": True, "uptime": round(time.time() - START_TIME, 3)}

    def lbheartbeat(self, ctx):
        return {}

    def version(self, ctx):
        return {"source": "https://github.com/taskcluster/taskcluster", "version": "tc-emulator",
                "commit": "9d59eb59", "build": "tc-emulator"}

    # ------------------------------------------------------------------ worker-manager

    def _provider(self, provider_id):
        p = self.em.store.providers.get(provider_id)
        if p is None:
            raise ApiError("InputError", "Invalid Provider", {
                "providerId": provider_id, "validProviderIds": sorted(self.em.store.providers)})
        if p.get("setup", "ok") != "ok":
            raise ApiError("ProviderSetupFailed", "Provider backend may be down or misconfigured",
                           {"providerId": provider_id})
        return p

    def _validate_config(self, provider: dict, config):
        schema = "v1/config-null.json#" if provider.get("providerType") == "null" else "v1/config-aws.json#"
        if self.em.store.options.get("applySchemaDefaults", True):
            self.em.schemas.apply_defaults("worker-manager", schema, config)
        msg = self.em.schemas.message("worker-manager", schema, config, self.em.root_url)
        if msg:
            raise ApiError("InputValidationError", msg)
        if has_nul(config):
            raise internal_error(ValueError("unsupported Unicode escape sequence"))

    def worker_pool(self, ctx):
        pool = self.em.store.pools.get(ctx.params["workerPoolId"])
        if pool is None:
            raise ApiError("ResourceNotFound", "Worker pool does not exist")
        return pool.view()

    def create_worker_pool(self, ctx):
        wpid, body = ctx.params["workerPoolId"], ctx.body
        self.authorize(ctx, {"workerPoolId": wpid, "providerId": body["providerId"]})
        provider = self._provider(body["providerId"])
        self._validate_config(provider, body["config"])
        pool = self.em.store.create_pool(wpid, body["providerId"], body["description"], body["config"],
                                         body["owner"], body["emailOnError"], utcnow())
        if pool is None:
            raise ApiError("RequestConflict", "Worker pool already exists")
        return pool.view()

    def update_worker_pool(self, ctx):
        wpid, body = ctx.params["workerPoolId"], ctx.body
        self.authorize(ctx, {"workerPoolId": wpid, "providerId": body["providerId"]})
        provider = self._provider(body["providerId"])
        self._validate_config(provider, body["config"])
        if body.get("workerPoolId") and body["workerPoolId"] != wpid:
            raise ApiError("InputError", "Incorrect workerPoolId in request body")
        pool = self.em.store.pools.get(wpid)
        if pool is None:
            raise ApiError("ResourceNotFound", "Worker pool does not exist")
        try:
            pool.replace(body["providerId"], body["description"], body["config"], body["owner"],
                         body["emailOnError"], utcnow())
        except LaunchConfigConflict as c:
            raise ApiError("RequestConflict", conflict_message(c.launch_config_id))
        return pool.view()

    def delete_worker_pool(self, ctx):
        pool = self.em.store.pools.get(ctx.params["workerPoolId"])
        if pool is None:
            raise ApiError("ResourceNotFound", "Worker pool does not exist")
        pool.replace(NULL_PROVIDER, pool.description, pool.collected_config(), pool.owner, pool.email_on_error,
                     utcnow())
        return pool.view()

    def list_worker_pools(self, ctx):
        rows, token, more = paginate(self.em.store.sorted_pools(), ctx.query)
        out = {"workerPools": [p.view() for p in rows]}
        if more:
            out["continuationToken"] = token
        return out

    def list_launch_configs(self, ctx):
        pool = self.em.store.pools.get(ctx.params["workerPoolId"])
        lcs = [] if pool is None else sorted(pool.launch_configs, key=lambda lc: lc.launch_config_id)
        if ctx.query.get("includeArchived") != "true":
            lcs = [lc for lc in lcs if not lc.is_archived]
        rows, token, more = paginate(lcs, ctx.query)
        out = {"workerPoolLaunchConfigs": [lc.view(pool.worker_pool_id) for lc in rows]}
        if more:
            out["continuationToken"] = token
        return out

    def list_providers(self, ctx):
        return {"providers": [{"providerId": k, "providerType": v.get("providerType", "aws")}
                              for k, v in self.em.store.providers.items()]}

    # ------------------------------------------------------------------ secrets

    def secret_set(self, ctx):
        expires = parse_date(ctx.body["expires"])
        self.em.store.secrets[ctx.params["name"]] = Secret(copy.deepcopy(ctx.body["secret"]), expires)
        return {}

    def secret_get(self, ctx):
        s = self.em.store.live_secret(ctx.params["name"], utcnow())
        if s is None:  # expired secrets are not returned by the database at all
            raise ApiError("ResourceNotFound", "Secret not found")
        return {"secret": js_key_order(copy.deepcopy(s.secret)), "expires": iso(s.expires)}

    def secret_remove(self, ctx):
        self.em.store.secrets.pop(ctx.params["name"], None)
        return {}

    def secret_list(self, ctx):
        now = utcnow()
        names = sorted(n for n in self.em.store.secrets if self.em.store.live_secret(n, now))
        rows, token, more = paginate(names, ctx.query)
        out = {"secrets": rows}
        if more:
            out["continuationToken"] = token
        return out

    # ------------------------------------------------------------------ worker-manager: workers

    def list_workers_for_worker_pool(self, ctx):
        wpid = ctx.params["workerPoolId"]
        if wpid not in self.em.store.pools:
            raise ApiError("ResourceNotFound", "Worker Pool does not exist")
        rows = sorted((w for w in self.em.store.workers.values() if w.worker_pool_id == wpid),
                      key=lambda w: (w.worker_group, w.worker_id))
        if "launchConfigId" in ctx.query:
            rows = [w for w in rows if w.launch_config_id == ctx.query["launchConfigId"]]
        if "state" in ctx.query:
            rows = [w for w in rows if w.state == ctx.query["state"]]
        page, token, more = paginate(rows, ctx.query)
        out = {"workers": [w.view() for w in page]}
        if more:
            out["continuationToken"] = token
        return out

    def worker(self, ctx):
        p = ctx.params
        w = self.em.store.workers.get((p["workerPoolId"], p["workerGroup"], p["workerId"]))
        if w is None:
            raise ApiError("ResourceNotFound", "Worker not found")
        return w.view()

    def remove_worker(self, ctx):
        p = ctx.params
        w = self.em.store.workers.get((p["workerPoolId"], p["workerGroup"], p["workerId"]))
        if w is None:
            raise ApiError("ResourceNotFound", "Worker not found")
        provider = self.em.store.providers.get(w.provider_id)
        if provider is None:
            raise ApiError("ResourceNotFound", f"Provider {w.provider_id} for this worker does not exist")
        if provider.get("setup", "ok") != "ok":
            raise ApiError("ProviderSetupFailed", "Provider backend may be down or misconfigured",
                           {"providerId": w.provider_id})
        if provider.get("providerType") != "aws":
            raise ApiError("InputError", "not supported for this provider")  # Provider.removeWorker
        if w.state in ("requested", "running"):  # the instance is terminated; a task it ran is lost
            self.em.sim.stop(w, utcnow(), orphan_task=True)
        return {}

    def wm_list_workers(self, ctx):
        """worker-manager's listWorkers (Worker Metadata): its workers joined with the queue's data."""
        wpid = f"{ctx.params['provisionerId']}/{ctx.params['workerType']}"
        now = utcnow()
        rows = sorted((w for w in self.em.store.workers.values() if w.worker_pool_id == wpid),
                      key=lambda w: (w.worker_group, w.worker_id))
        page, token, more = paginate(rows, ctx.query)
        q, state, lcid = ctx.query.get("quarantined"), ctx.query.get("workerState"), ctx.query.get("launchConfigId")
        out = []
        for w in page:
            qw = self.em.store.queue_workers.get((wpid, w.worker_group, w.worker_id))
            qu = qw.quarantine_until if qw else None
            if q == "true" and not (qu is not None and qu >= now):
                continue
            if q == "false" and not (qu is not None and qu < now):
                continue
            if not (w.expires >= now or (qu is not None and qu >= now)):
                continue
            if (state and w.state != state) or (lcid and w.launch_config_id != lcid):
                continue
            e = {"workerGroup": w.worker_group, "workerId": w.worker_id}
            if qw:
                e["firstClaim"] = iso(qw.first_claim)
                e["lastDateActive"] = iso(qw.last_date_active)
            e.update({"workerPoolId": wpid, "state": w.state, "capacity": w.capacity, "providerId": w.provider_id})
            if w.launch_config_id is not None:
                e["launchConfigId"] = w.launch_config_id
            if qu is not None:
                e["quarantineUntil"] = iso(qu)
            if qw and qw.recent_tasks:
                e["latestTask"] = dict(qw.recent_tasks[-1])
            out.append(e)
        result = {"workers": out}
        if more:
            result["continuationToken"] = token
        return result

    # ------------------------------------------------------------------ queue

    def create_task(self, ctx):
        status = self.em.queue.create_task(ctx.params["taskId"], ctx.body, lambda params: self.authorize(ctx, params))
        return {"status": status}

    def create_task_as(self, task_id: str, body: dict, scopes: list, client_id: str) -> dict:
        """createTask as a client holding `scopes` calls it (decision tasks' children, hooks):
        URL parameter pattern, input schema with defaults, authorization, then the handler.
        Returns the task status; raises QueueError with the code and message the API would send."""
        if not re.search(SLUGID_PATTERN[:-1] + r"\Z", task_id or ""):
            raise QueueError("InvalidRequestArguments", "Invalid URL patterns:\n" +
                             f"URL parameter 'taskId' given as '{task_id}' must match regular expression: "
                             f"'/{SLUGID_PATTERN}/'")
        body = copy.deepcopy(body)
        try:
            schema = "v1/create-task-request.json#"
            if self.em.store.options.get("applySchemaDefaults", True):
                self.em.schemas.apply_defaults("queue", schema, body)
            msg = self.em.schemas.message("queue", schema, body, self.em.root_url)
            if msg:
                raise QueueError("InputValidationError", msg,
                                 {"schema": f"{self.em.root_url}/schemas/queue/{schema[:-1]}"})
            entry = next(e for e in self.em.schemas.references["queue"]["entries"] if e["name"] == "createTask")

            def authorize(params):
                required = scopelib.render(entry["scopes"], params)
                if not scopelib.satisfies(scopes, required):
                    raise QueueError("InsufficientScopes", MISSING_SCOPES.replace("{clientId}", client_id), {
                        "scopes": scopes, "required": required,
                        "unsatisfied": scopelib.remove_given_scopes(scopes, required)})
            return self.em.queue.create_task(task_id, body, authorize)
        except QueueError as e:
            e.payload = body  # what the API's requestInfo.payload would show (the handler patches it)
            raise

    def queue_error_body(self, e: QueueError, task_id: str) -> dict:
        """The body createTask's error `e` has on the wire (code, message with the `---` block,
        requestInfo), plus `_status` (its HTTP status, not part of the body)."""
        ctx = Ctx(Request("PUT", f"/api/queue/v1/task/{task_id}", {}, b""), "queue",
                  {"name": "createTask"}, {"taskId": task_id})
        ctx.body = getattr(e, "payload", {})
        resp = self.error_response(ctx, ApiError(e.code, e.message, e.details))
        return {**resp.body, "_status": resp.status}

    def _task_or_404(self, ctx, message: str):
        task = self.em.store.tasks.get(ctx.params["taskId"])
        if task is None:
            raise ApiError("ResourceNotFound", message, {"taskId": ctx.params["taskId"]})
        return task

    def task(self, ctx):
        return self._task_or_404(ctx, "`{{taskId}}` does not correspond to a task that exists.\n"
                                      "Are you sure this task has already been submitted?").definition_view()

    def task_status(self, ctx):
        task = self._task_or_404(ctx, "`{{taskId}}` does not correspond to a task that exists.\n"
                                      "Are you sure this task exists?")
        return {"status": task.status()}

    def list_task_group(self, ctx):
        tgid = ctx.params["taskGroupId"]
        group = self.em.store.task_groups.get(tgid)
        rows, token, more = paginate(self.em.queue.group_tasks(tgid), ctx.query)
        if group is None:
            raise ApiError("ResourceNotFound", "No task-group with taskGroupId: `{{taskGroupId}}`", {"taskGroupId": tgid})
        out = {**group.view(), "tasks": [{"status": t.status(), "task": t.definition_view()} for t in rows]}
        if more:
            out["continuationToken"] = token
        return out

    def cancel_task(self, ctx):
        task = self._task_or_404(ctx, "Task `{{taskId}}` not found. Are you sure it was created?")
        d = task.definition
        self.authorize(ctx, {"taskId": task.task_id, "schedulerId": d["schedulerId"],
                             "taskGroupId": d["taskGroupId"], "projectId": d["projectId"]})
        if task.deadline < utcnow():
            raise ApiError("RequestConflict", "Task `{{taskId}}` can't be canceled past its deadline of {{deadline}}.",
                           {"taskId": task.task_id, "deadline": d["deadline"]})
        self.em.queue.cancel(task)
        return {"status": task.status()}

    def queue_list_workers(self, ctx):
        tq = f"{ctx.params['provisionerId']}/{ctx.params['workerType']}"
        now = utcnow()
        rows = sorted((qw for qw in self.em.store.queue_workers.values() if qw.task_queue_id == tq),
                      key=lambda qw: (qw.worker_group, qw.worker_id))
        page, token, more = paginate(rows, ctx.query)
        q = ctx.query.get("quarantined")
        out = []
        for qw in page:  # the real handler filters the page it fetched
            if q == "true" and not qw.quarantine_until >= now:
                continue
            if q == "false" and not qw.quarantine_until < now:
                continue
            if not (qw.expires >= now or qw.quarantine_until >= now):
                continue
            e = {"workerGroup": qw.worker_group, "workerId": qw.worker_id, "firstClaim": iso(qw.first_claim),
                 "lastDateActive": iso(qw.last_date_active)}
            if qw.recent_tasks:
                e["latestTask"] = dict(qw.recent_tasks[-1])
            if qw.quarantine_until > now:
                e["quarantineUntil"] = iso(qw.quarantine_until)
            out.append(e)
        result = {"workers": out}
        if more:
            result["continuationToken"] = token
        return result

    def queue_get_worker(self, ctx):
        p = ctx.params
        tq = f"{p['provisionerId']}/{p['workerType']}"
        now = utcnow()
        qw = self.em.store.queue_workers.get((tq, p["workerGroup"], p["workerId"]))
        if qw is None or (qw.expires < now and qw.quarantine_until < now):
            raise ApiError("ResourceNotFound",
                           "Worker with workerId `{{workerId}}`, workerGroup `{{workerGroup}}`,"
                           "worker-type `{{workerType}}` and provisionerId `{{provisionerId}}` not found. "
                           "Are you sure it was created?", {"workerId": p["workerId"], "workerGroup": p["workerGroup"],
                                                            "workerType": p["workerType"],
                                                            "provisionerId": p["provisionerId"]})
        return {"taskQueueId": tq, "workerGroup": qw.worker_group, "workerId": qw.worker_id,
                "quarantineUntil": iso(qw.quarantine_until), "expires": iso(qw.expires),
                "firstClaim": iso(qw.first_claim), "recentTasks": [dict(t) for t in qw.recent_tasks],
                "lastDateActive": iso(qw.last_date_active), "provisionerId": p["provisionerId"],
                "workerType": p["workerType"]}


def conflict_message(lcid: str) -> str:
    return (f"Launch config with ID `{lcid}` already exists with different configuration\n"
            "WHERE: PL/pgSQL function upsert_worker_pool_launch_configs(text,jsonb) line 34 at RAISE\n"
            "SQL statement \"SELECT * FROM upsert_worker_pool_launch_configs(worker_pool_id_in, config_in)\"\n"
            "PL/pgSQL function update_worker_pool_with_launch_configs(text,text,text,jsonb,timestamp with time zone,"
            "text,boolean) line 51 at SQL statement\nCODE: 23505")


def internal_error(exc: Exception) -> ApiError:
    return ApiError("InternalServerError", "Internal Server Error, incidentId {{incidentId}}.",
                    {"incidentId": str(uuid.uuid4())})


def _substitute(message: str, details: dict) -> str:
    def repl(m):
        key = m.group(1)
        if key not in details:
            return m.group(0)
        v = details[key]
        return v if isinstance(v, str) else stringify(v, indent=2)
    return re.sub(r"{{([a-zA-Z0-9_-]+)}}", repl, message)


def _is_int(v) -> bool:
    try:
        int(v)
        return True
    except (TypeError, ValueError):
        return False


class DecodeParamError(Exception):
    """Express answers 400 'Failed to decode param' itself, before lib-api sees the request."""


def _decode_uri_component(s: str) -> str:
    if re.search(r"%(?![0-9a-fA-F]{2})", s):
        raise DecodeParamError(f"Failed to decode param '{s}'")
    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError:
        raise DecodeParamError(f"Failed to decode param '{s}'")
