"""The emulator's data: clients, providers, worker pools with their launch configs, secrets.

Worker pools are stored as worker-manager stores them in PostgreSQL: the pool row holds the
config without `launchConfigs`; each launch config is a row of its own (id, configuration as
jsonb, isArchived, created, lastModified). The pool's `config.launchConfigs` is reassembled from
the active rows, each with `workerManager.launchConfigId` injected, in the order the rows sit in
the table (jsonb_agg without ORDER BY). The rows a write touches move to the end of the table in
the order the write touches them: updated active rows, reactivated rows, new rows, then the rows
it archives. That model reproduces every launch config order in the real-service transcripts.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import dataclass, field

from . import scopes as scopelib
from .jsjson import JSONParseError, jsonb_equal, jsonb_order, jsonb_text, parse

NULL_PROVIDER = "null-provider"
COUNT_FIELDS = ("currentCapacity", "requestedCount", "runningCount", "stoppingCount", "stoppedCount",
                "requestedCapacity", "runningCapacity", "stoppingCapacity", "stoppedCapacity")


class SeedError(Exception):
    pass


class LaunchConfigConflict(Exception):
    def __init__(self, launch_config_id: str):
        super().__init__(launch_config_id)
        self.launch_config_id = launch_config_id


def utcnow() -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(t: dt.datetime) -> str:
    """Date.prototype.toJSON: 2026-11-24T13:48:40.652Z"""
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_date(s: str) -> dt.datetime:
    """new Date(s) for the RFC 3339 strings the schemas accept (ms precision)."""
    s = s.strip().replace(" ", "T").replace("t", "T").replace("z", "Z")
    if "." in s:  # fromisoformat wants at most 6 fractional digits
        head, _, rest = s.partition(".")
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac):]
        s = head + "." + (frac[:6] or "0") + tz
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    t = t.astimezone(dt.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def launch_config_id(worker_pool_id: str, config) -> str:
    """get_or_create_launch_config_id: the explicit workerManager.launchConfigId, else
    'lc-' || left(md5(worker_pool_id || (config - 'workerManager')::text), 20)."""
    if isinstance(config, dict):
        wm = config.get("workerManager")
        if isinstance(wm, dict) and wm.get("launchConfigId") is not None:
            lcid = wm["launchConfigId"]
            return lcid if isinstance(lcid, str) else jsonb_text(lcid)
        config = {k: v for k, v in config.items() if k != "workerManager"}
    return "lc-" + hashlib.md5((worker_pool_id + jsonb_text(config)).encode("utf-8")).hexdigest()[:20]


def _without_wm(c):
    return {k: v for k, v in c.items() if k != "workerManager"} if isinstance(c, dict) else c


@dataclass
class LaunchConfig:
    launch_config_id: str
    configuration: object
    is_archived: bool
    created: dt.datetime
    last_modified: dt.datetime

    def view(self, worker_pool_id: str) -> dict:
        return {
            "launchConfigId": self.launch_config_id,
            "workerPoolId": worker_pool_id,
            "isArchived": self.is_archived,
            "configuration": copy.deepcopy(self.configuration),
            "created": iso(self.created),
            "lastModified": iso(self.last_modified),
        }


@dataclass
class WorkerPool:
    worker_pool_id: str
    provider_id: str
    description: str
    config: dict  # without launchConfigs, jsonb key order
    created: dt.datetime
    last_modified: dt.datetime
    owner: str
    email_on_error: bool
    previous_provider_ids: list = field(default_factory=list)
    launch_configs: list = field(default_factory=list)  # table order, archived rows included

    def collected_config(self) -> dict:
        """collect_launch_configs_if_exist: launchConfigs only when an active one exists."""
        config = copy.deepcopy(self.config)
        active = [lc for lc in self.launch_configs if not lc.is_archived]
        if active:
            lcs = []
            for lc in active:
                c = copy.deepcopy(lc.configuration)
                if isinstance(c, dict):
                    wm = c.get("workerManager") if isinstance(c.get("workerManager"), dict) else {}
                    c["workerManager"] = {**wm, "launchConfigId": lc.launch_config_id}
                lcs.append(c)
            config["launchConfigs"] = lcs
        return jsonb_order(config)

    def view(self) -> dict:
        out = {
            "workerPoolId": self.worker_pool_id,
            "providerId": self.provider_id,
            "description": self.description,
            "created": iso(self.created),
            "lastModified": iso(self.last_modified),
            "config": self.collected_config(),
            "owner": self.owner,
            "emailOnError": self.email_on_error,
        }
        for f in COUNT_FIELDS:
            out[f] = 0
        return out

    def upsert_launch_configs(self, config_in, now: dt.datetime) -> None:
        """upsert_worker_pool_launch_configs; raises LaunchConfigConflict before changing anything."""
        elements = config_in.get("launchConfigs") if isinstance(config_in, dict) else None
        if self.provider_id == NULL_PROVIDER or not isinstance(elements, list):
            elements = []
        rows = {lc.launch_config_id: lc for lc in self.launch_configs}
        pending: dict[str, object] = {}
        for el in elements:
            lcid = launch_config_id(self.worker_pool_id, el)
            prior = pending[lcid] if lcid in pending else (rows[lcid].configuration if lcid in rows else None)
            if (lcid in pending or lcid in rows) and not jsonb_equal(_without_wm(prior), _without_wm(el)):
                raise LaunchConfigConflict(lcid)
            pending[lcid] = jsonb_order(copy.deepcopy(el))
        heap = self.launch_configs
        untouched = [lc for lc in heap if lc.launch_config_id not in pending and lc.is_archived]
        updated = [lc for lc in heap if lc.launch_config_id in pending and not lc.is_archived]
        reactivated = [lc for lc in heap if lc.launch_config_id in pending and lc.is_archived]
        inserted = [LaunchConfig(i, c, False, now, now) for i, c in pending.items() if i not in rows]
        archived = [lc for lc in heap if lc.launch_config_id not in pending and not lc.is_archived]
        for lc in updated + reactivated:
            lc.configuration = pending[lc.launch_config_id]
            lc.is_archived = False
            lc.last_modified = now
        for lc in archived:
            lc.is_archived = True  # last_modified is left alone, as the real service does
        self.launch_configs = untouched + updated + reactivated + inserted + archived

    def replace(self, provider_id, description, config, owner, email_on_error, now) -> None:
        """update_worker_pool_with_launch_configs (all API fields overwritten)."""
        old = (self.provider_id, copy.deepcopy(self.launch_configs))
        if provider_id != self.provider_id:
            self.previous_provider_ids = [p for p in self.previous_provider_ids
                                          if p not in (provider_id, self.provider_id)] + [self.provider_id]
        self.provider_id = provider_id
        try:
            self.upsert_launch_configs(config, now)
        except LaunchConfigConflict:
            self.provider_id, self.launch_configs = old
            raise
        self.description = description
        self.config = jsonb_order({k: copy.deepcopy(v) for k, v in config.items() if k != "launchConfigs"})
        self.owner = owner
        self.email_on_error = email_on_error
        self.last_modified = now


@dataclass
class Secret:
    secret: dict
    expires: dt.datetime


class Store:
    def __init__(self):
        self.clients: dict[str, dict] = {}
        self.roles: list[tuple[str, list[str]]] = []  # (roleId, scopes), as the seed lists them
        self.providers: dict[str, dict] = {}
        self.pools: dict[str, WorkerPool] = {}
        self.secrets: dict[str, Secret] = {}
        self.options: dict = {}
        self.simulation: dict = {}  # sim.DEFAULTS merged with the seed's and the command line's
        # the queue (queue.py) and worker-manager's workers (sim.py)
        self.tasks: dict = {}  # taskId -> Task
        self.task_groups: dict = {}  # taskGroupId -> TaskGroup
        self.queue_workers: dict = {}  # (taskQueueId, workerGroup, workerId) -> QueueWorker
        self.workers: dict = {}  # (workerPoolId, workerGroup, workerId) -> Worker
        self.hooks: dict = {}  # (hookGroupId, hookId) -> hooks.Hook

    def expand(self, scopes) -> list[str]:
        """The scopes with everything the roles they assume imply (auth's expandScopes)."""
        return scopelib.expand(scopes, self.roles)

    # -- worker pools
    def create_pool(self, wpid, provider_id, description, config, owner, email_on_error, now) -> WorkerPool | None:
        """None when the pool exists (UNIQUE_VIOLATION)."""
        if wpid in self.pools:
            return None
        pool = WorkerPool(wpid, provider_id, description, {}, now, now, owner, email_on_error)
        try:
            pool.replace(provider_id, description, config, owner, email_on_error, now)
        except LaunchConfigConflict:
            return None  # the real handler maps every 23505 on create to 'Worker pool already exists'
        pool.previous_provider_ids = []
        self.pools[wpid] = pool
        return pool

    def sorted_pools(self) -> list[WorkerPool]:
        return [self.pools[k] for k in sorted(self.pools)]

    def expire(self, now: dt.datetime) -> dict:
        """What the services' periodic jobs eventually do: stopped workers are deleted
        (expire_workers), a previous provider without live workers is dropped from its pool (the
        provisioner), null-provider pools without previous providers are deleted
        (expire_worker_pools), archived launch configs no worker refers to are deleted
        (expire_worker_pool_launch_configs), expired secrets are deleted."""
        stopped = [k for k, w in self.workers.items() if w.state == "stopped"]
        for k in stopped:
            del self.workers[k]
        for p in self.pools.values():
            live = {w.provider_id for w in self.workers.values() if w.worker_pool_id == p.worker_pool_id}
            p.previous_provider_ids = [x for x in p.previous_provider_ids if x in live]
        gone = [k for k, p in self.pools.items() if p.provider_id == NULL_PROVIDER and not p.previous_provider_ids]
        for k in gone:
            del self.pools[k]
        used = {(w.worker_pool_id, w.launch_config_id) for w in self.workers.values()}
        lcs = 0
        for p in self.pools.values():
            before = len(p.launch_configs)
            p.launch_configs = [lc for lc in p.launch_configs
                                if not lc.is_archived or (p.worker_pool_id, lc.launch_config_id) in used]
            lcs += before - len(p.launch_configs)
        secrets = [k for k, s in self.secrets.items() if s.expires < now]
        for k in secrets:
            del self.secrets[k]
        return {"workerPools": gone, "launchConfigs": lcs, "secrets": secrets,
                "workers": ["/".join(k) for k in stopped]}

    # -- secrets
    def live_secret(self, name: str, now: dt.datetime) -> Secret | None:
        s = self.secrets.get(name)
        return s if s is not None and s.expires > now else None


def load_seed(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            seed = parse(f.read())
    except OSError as e:
        raise SeedError(f"cannot read seed {path}: {e.strerror}")
    except JSONParseError as e:
        raise SeedError(f"seed {path} is not JSON: {e}")
    if not isinstance(seed, dict):
        raise SeedError(f"seed {path}: top level must be an object")
    allowed = {"clients", "roles", "providers", "workerPools", "secrets", "hooks", "options", "simulation",
               "_comment", "$comment"}
    for k in seed:
        if k not in allowed:
            raise SeedError(f"seed {path}: unknown key {k!r} (allowed: {', '.join(sorted(allowed))})")
    for i, c in enumerate(seed.get("clients", [])):
        if not isinstance(c, dict) or not isinstance(c.get("clientId"), str) or not isinstance(c.get("accessToken"), str):
            raise SeedError(f"seed {path}: clients[{i}] needs string clientId and accessToken")
        if not isinstance(c.get("scopes", []), list) or not all(isinstance(s, str) for s in c.get("scopes", [])):
            raise SeedError(f"seed {path}: clients[{i}].scopes must be a list of strings")
    if not isinstance(seed.get("roles", []), list):
        raise SeedError(f"seed {path}: roles must be a list of {{roleId, scopes}}")
    for i, r in enumerate(seed.get("roles", [])):
        if not isinstance(r, dict) or not isinstance(r.get("roleId"), str) or not r["roleId"]:
            raise SeedError(f"seed {path}: roles[{i}] needs a non-empty string roleId")
        if set(r) - {"roleId", "scopes", "description"}:
            raise SeedError(f"seed {path}: roles[{i}] ({r['roleId']}): unknown keys "
                            f"{', '.join(sorted(set(r) - {'roleId', 'scopes', 'description'}))}")
        if not isinstance(r.get("scopes", []), list) or not all(scopelib.valid_scope(s) for s in r.get("scopes", [])):
            raise SeedError(f"seed {path}: roles[{i}] ({r['roleId']}).scopes must be a list of scopes "
                            "(printable ASCII strings)")
    if not isinstance(seed.get("hooks", []), list):
        raise SeedError(f"seed {path}: hooks must be a list of hook definitions")
    for pid, p in seed.get("providers", {}).items():
        if not isinstance(p, dict):
            raise SeedError(f"seed {path}: providers.{pid} must be an object")
        if p.get("setup", "ok") not in ("ok", "failed"):
            raise SeedError(f"seed {path}: providers.{pid}.setup must be \"ok\" or \"failed\"")
        if p.get("providerType", "aws") not in ("aws", "null"):
            raise SeedError(f"seed {path}: providers.{pid}.providerType must be \"aws\" or \"null\"")
    if not isinstance(seed.get("workerPools", []), list):
        raise SeedError(f"seed {path}: workerPools must be a list")
    if not isinstance(seed.get("secrets", {}), dict):
        raise SeedError(f"seed {path}: secrets must be an object (name -> {{secret, expires}})")
    if not isinstance(seed.get("simulation", {}), dict):
        raise SeedError(f"seed {path}: simulation must be an object (see sandbox/TASKCLUSTER.md)")
    return seed
