"""``POST /_sandbox/seed-owned-images``: images the account owns, registered in bulk.

Making a thousand images through builds takes a thousand builds; this puts them straight into
moto's models (``moto.ec2.models.amis.Ami`` in ``EC2Backend.amis``), as if the account had
made them: owned by the account, with the given tags and creation dates, and one EBS snapshot
per block device (moto gives every image one; extra ones are added as more block devices).
They are ordinary images afterwards: DescribeImages, DeregisterImage and DeleteSnapshot treat
them like any other, and they are not seed images (they show in the state dump and a reset
removes them).

Must be called with the model lock held.
"""

from __future__ import annotations

import datetime
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.parse import default_timestamp_parser
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix, random_ami_id

MAX_COUNT = 5000
MAX_SNAPSHOTS = 8
STATES = ("available", "pending", "failed")
FIELDS = {
    "region",
    "count",
    "name_prefix",
    "tags",
    "creation_date",
    "step_seconds",
    "snapshots_per_image",
    "tag_snapshots",
    "state",
}


def install() -> None:
    """Patches moto (once per process):

    * an image's extra snapshots (``Ami.extra_snapshots``) appear as more EBS block devices in
      DescribeImages (``Ami.block_device_mappings``, a property in moto 5.2.5);
    * a resource's tags are looked up by its id: moto's ``TaggedEC2Resource.get_tags`` runs
      ``describe_tags`` with a resource-id filter, a scan of every tag in the region, for each
      resource it describes or filters by tag, so listing N tagged resources costs N x N regex
      matches (seconds for a thousand images and their snapshots; EC2 has no such cost). Same
      answer: the resource's tags in the order they were set.
    """
    if getattr(Ami, "_sandbox_extra_snapshots", False):
        return

    def get_tags(self: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        tags = self.ec2_backend.tags.get(self.id) or {}
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": resource_type} for k, v in tags.items()]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    orig = Ami.block_device_mappings

    def block_device_mappings(self: Ami) -> list[dict[str, Any]]:
        out = list(orig.fget(self))  # type: ignore[union-attr]
        for n, snap in enumerate(getattr(self, "extra_snapshots", [])):
            out.append(
                {
                    "DeviceName": f"xvd{chr(ord('b') + n)}",
                    "Ebs": {"SnapshotId": snap.id, "VolumeSize": 15, "DeleteOnTermination": False, "VolumeType": "standard"},
                }
            )
        return out

    Ami.block_device_mappings = property(block_device_mappings)  # type: ignore[method-assign,assignment]
    Ami._sandbox_extra_snapshots = True  # type: ignore[attr-defined]


def snapshot_ids(ami: Any) -> list[str]:
    """Every snapshot of the image: moto's own, then the extra ones."""
    return [ami.ebs_snapshot.id] + [s.id for s in getattr(ami, "extra_snapshots", [])]


def _time(value: Any, field: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field}: a string like 2024-06-12T07:00:00Z")
    try:
        t = default_timestamp_parser(value)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{field}: not an ISO 8601 time: {value!r} ({e})") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc)


def _int(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    v = body.get(field, default)
    if not isinstance(v, int) or isinstance(v, bool) or not (low <= v <= high):
        raise ValueError(f"{field}: a whole number from {low} to {high}, got {v!r}")
    return v


def seed_owned_images(body: Any) -> dict[str, Any]:
    """Registers ``count`` images owned by the account in ``region``.  Raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    region = body.get("region")
    if not isinstance(region, str) or region not in set(ec2_backends[DEFAULT_ACCOUNT_ID].regions):
        raise ValueError(f"region: required, an EC2 region name, got {region!r}")
    count = _int(body, "count", 1, 1, MAX_COUNT)
    per_image = _int(body, "snapshots_per_image", 1, 1, MAX_SNAPSHOTS)
    step = _int(body, "step_seconds", 3600, 0, 10 * 365 * 86400)
    prefix = body.get("name_prefix", "tc-ami-sandbox-")
    if not isinstance(prefix, str) or not (1 <= len(prefix) <= 120):
        raise ValueError("name_prefix: a string of 1 to 120 characters")
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError('tags: an object of strings, e.g. {"tc-ami:worker-type": "w", "tc-ami:build-id": "b{n}"}')
    state = body.get("state", "available")
    if state not in STATES:
        raise ValueError(f"state: one of {', '.join(STATES)}; got {state!r}")
    tag_snapshots = body.get("tag_snapshots", True)
    if not isinstance(tag_snapshots, bool):
        raise ValueError("tag_snapshots: true or false")
    now = datetime.datetime.now(datetime.timezone.utc)
    first = _time(body["creation_date"], "creation_date") if "creation_date" in body else now - datetime.timedelta(seconds=step * (count - 1))

    be = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    taken = {a.name for a in be.amis.values() if a.owner_id == be.account_id}
    clash = next((f"{prefix}{n:05d}" for n in range(count) if f"{prefix}{n:05d}" in taken), None)
    if clash is not None:
        raise ValueError(f"an image named {clash} already exists in {region}: pick another name_prefix")
    out = []
    for n in range(count):
        name = f"{prefix}{n:05d}"
        created = first + datetime.timedelta(seconds=step * n)
        ami_id = random_ami_id()
        ami = Ami(
            be,
            ami_id,
            name=name,
            description=f"{name} (sandbox, registered in bulk)",
            owner_id=be.account_id,
            virtualization_type="hvm",
            architecture="x86_64",
            state=state,
            creation_date=created,
            platform="windows",
            hypervisor="xen",
            root_device_type="ebs",
            root_device_name="/dev/sda1",
            region_name=f"{region}a",
            snapshot_description=f"Created by CreateImage(i-0000000000000000{n % 10}) for {ami_id}",
            boot_mode="legacy-bios",
        )
        extra = []
        for _ in range(per_image - 1):
            vol = be.create_volume(size=15, zone_name=f"{region}a")
            extra.append(be.create_snapshot(vol.id, f"Created by CreateImage(i-00000000000000000) for {ami_id}", be.account_id, from_ami=ami_id))
            be.delete_volume(vol.id)
        ami.extra_snapshots = extra  # type: ignore[attr-defined]
        be.amis[ami_id] = ami
        snaps = [ami.ebs_snapshot] + extra
        for snap in snaps:
            snap.start_time = created
        values = {k: v.replace("{n}", str(n)) for k, v in tags.items()}
        if values:
            be.create_tags([ami_id], values)
            if tag_snapshots:
                be.create_tags([s.id for s in snaps], values)
        out.append(
            {
                "id": ami_id,
                "name": name,
                "creation_date": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "snapshot_ids": [s.id for s in snaps],
            }
        )
    return {"region": region, "images": out}
