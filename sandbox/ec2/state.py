"""``GET /_sandbox/state``: a JSON dump of everything in moto's EC2 backends.

Reads moto's models directly (``moto.ec2.models.ec2_backends[account][region]``:
``reservations``, ``key_pairs``, ``groups``, ``amis``, ``snapshots``,
``volumes``, ``tags``) without creating backends.  Must be called with the
model lock held.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from .events import EventLog, Scheduler
from .owned import snapshot_ids
from .seed import Seeds
from .sim import Simulator


def _iso(t: Any) -> str | None:
    if t is None:
        return None
    if isinstance(t, str):
        return t
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return str(t)


def _tags(be: Any, rid: str) -> dict[str, str]:
    return dict(be.tags.get(rid, {}))


def _instance(be: Any, inst: Any, sim: Simulator) -> dict[str, Any]:
    s = sim.instances.get(inst.id)
    reason = inst.state_reason
    groups = sorted({g.id for g in (inst.security_groups or []) if hasattr(g, "id")})
    return {
        "id": inst.id,
        "state": inst.state,
        "state_code": inst.state_code,
        "state_reason": {"code": reason.code, "message": reason.message} if reason is not None and reason.code else None,
        "state_transition_reason": inst._reason or None,
        "tags": _tags(be, inst.id),
        "image_id": inst.image_id,
        "key_name": inst.key_name,
        "instance_type": inst.instance_type,
        "platform": inst.platform,
        "shutdown_behavior": inst.instance_initiated_shutdown_behavior,
        "security_group_ids": groups,
        "volume_ids": sorted(bdm.volume_id for _, bdm in inst.get_block_device_mapping),
        "launch_time": _iso(inst.launch_time),
        "simulated": s is not None,
        "build_id": s.build_id if s else None,
        "user_data_ok": s.user_data_ok if s else None,
        "user_data_error": s.user_data_error if s else None,
        "password": s.password if s else None,
        "password_ready": bool(s and s.password_data),
        "password_error": s.password_error if s else None,
        "guest": s.kind if s else None,
        "scheduled_shutdown_seconds": s.shutdown_in_seconds if s else None,
        "guest_mode": s.guest_mode if s and s.kind == "build" else None,
        "console_step": s.step if s else None,
        "console_failed": s.failed if s else None,
    }


def _region(be: Any, sim: Simulator, seeded: set[str], include_seeded: bool) -> dict[str, Any]:
    instances = [
        _instance(be, inst, sim) for res in list(be.reservations.values()) for inst in res.instances
    ]
    key_pairs = [
        {
            "name": kp.key_name,
            "id": kp.id,
            "fingerprint": kp.key_fingerprint,
            "key_type": kp.key_type or "rsa",  # moto keeps None when KeyType was not given
            "tags": _tags(be, kp.id),
        }
        for kp in list(be.key_pairs.values())
    ]
    security_groups = []
    for vpc_id, groups in list(be.groups.items()):
        for sg in list(groups.values()):
            security_groups.append(
                {
                    "id": sg.id,
                    "name": sg.name,
                    "vpc_id": vpc_id,
                    "description": sg.description,
                    "tags": _tags(be, sg.id),
                    "default": bool(getattr(sg, "is_default", False) or sg.name == "default"),
                }
            )
    images = []
    for ami in list(be.amis.values()):
        is_seed = ami.id in seeded
        if is_seed and not include_seeded:
            continue
        im = sim.images.get(ami.id)
        reason = getattr(ami, "state_reason", None)
        images.append(
            {
                "id": ami.id,
                "name": ami.name,
                "state": ami.state,
                "state_reason": reason,
                "owner_id": ami.owner_id,
                "tags": _tags(be, ami.id),
                "snapshot_ids": snapshot_ids(ami),
                "creation_date": _iso(ami.creation_date),
                "platform": ami.platform,
                "seeded": is_seed,
                "simulated": im is not None,
                "source_instance_id": ami.instance_id,
                "source_image_id": getattr(ami, "source_image_id", None),
                "source_region": getattr(ami, "source_image_region", None),
            }
        )
    snapshots = []
    for snap in list(be.snapshots.values()):
        is_seed = snap.from_ami in seeded
        if is_seed and not include_seeded:
            continue
        snapshots.append(
            {
                "id": snap.id,
                "volume_id": snap.volume.id,
                "state": snap.status,
                "description": snap.description,
                "owner_id": snap.owner_id,
                "tags": _tags(be, snap.id),
                "from_image": snap.from_ami,
                "seeded": is_seed,
            }
        )
    volumes = []
    for vol in list(be.volumes.values()):
        att = vol.attachment
        volumes.append(
            {
                "id": vol.id,
                "state": vol.status,
                "size": vol.size,
                "attached_to": att.instance.id if att is not None and att.instance is not None else None,
                "snapshot_id": vol.snapshot_id,
                "tags": _tags(be, vol.id),
            }
        )
    return {
        "instances": instances,
        "key_pairs": key_pairs,
        "security_groups": security_groups,
        "images": images,
        "snapshots": snapshots,
        "volumes": volumes,
    }


def _has_anything(r: dict[str, Any]) -> bool:
    return bool(
        r["instances"]
        or r["key_pairs"]
        or r["volumes"]
        or any(not sg["default"] for sg in r["security_groups"])
        or any(not im["seeded"] for im in r["images"])
        or any(not sn["seeded"] for sn in r["snapshots"])
    )


def dump(sim: Simulator, seeds: Seeds, events: EventLog, scheduler: Scheduler, include_seeded: bool = False, all_regions: bool = False) -> dict[str, Any]:
    seeded = seeds.seeded_ids()
    accounts: dict[str, dict[str, Any]] = {}
    for account_id, acct in list(dict.items(ec2_backends)):
        regions = {}
        for region, be in sorted(dict.items(acct)):
            r = _region(be, sim, seeded, include_seeded)
            if all_regions or _has_anything(r):
                regions[region] = r
        accounts[account_id] = regions
    out: dict[str, Any] = {
        "time": time.time(),
        "account_id": DEFAULT_ACCOUNT_ID,
        "regions": accounts.pop(DEFAULT_ACCOUNT_ID, {}),
        "events": events.all(),
        "scheduled": scheduler.pending(),
    }
    others = {a: r for a, r in accounts.items() if r}
    if others:
        out["other_accounts"] = others
    return out
