"""Seed images: the fix-ups moto needs after loading ``MOTO_AMIS_PATH``, and
base images added at run time (``POST /_sandbox/seed-image``).

moto (``moto.ec2.models.amis``) reads the JSON list named by ``MOTO_AMIS_PATH``
once, at import, into the module global ``AMIS``, and every region's backend
builds its images from it in ``AmiBackend._load_amis`` (called from
``EC2Backend.__init__``, so again after every reset).  It honours ``state``
and ``creation_date`` (checked below anyway) but marks every loaded image as
owned by the alias ``amazon``; we give the alias only to Amazon's real owner
ids, so that ``Owners=["amazon"]`` does not match a look-alike image of another
account.

``extra_windows_images`` (config) adds N generated Amazon Windows base images to
every region, named as Amazon names them, to list and page over thousands of
images (see ``windows_image_specs``).
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import inspect
import itertools
import json
import logging
from functools import lru_cache
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.parse import default_timestamp_parser
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.amis import Ami

log = logging.getLogger("ec2-sandbox")

AMAZON_WINDOWS_OWNER = "801119661308"  # owner of Amazon's Windows AMIs
AMAZON_OWNER_IDS = {
    AMAZON_WINDOWS_OWNER,
    "137112412989",  # Amazon Linux
}
REQUIRED_SEED_KEYS = ("ami_id", "name", "owner_id", "state", "creation_date")


def _max_extra() -> int:
    from .config import MAX_EXTRA_WINDOWS_IMAGES

    return MAX_EXTRA_WINDOWS_IMAGES


def load_seed_file(path: str) -> list[dict[str, Any]]:
    """Reads and checks a seed file (the MOTO_AMIS_PATH format).  Raises
    ValueError with a readable message."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read seed file {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"seed file {path} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise ValueError(f"seed file {path}: must be a JSON list of image objects")
    allowed = set(inspect.signature(Ami.__init__).parameters) - {"self", "ec2_backend", "instance", "source_ami"}
    seen = set()
    for i, img in enumerate(data):
        if not isinstance(img, dict):
            raise ValueError(f"seed file {path}: entry {i} is not an object")
        missing = [k for k in REQUIRED_SEED_KEYS if k not in img]
        if missing:
            raise ValueError(f"seed file {path}: entry {i} ({img.get('name')}) lacks {', '.join(missing)}")
        unknown = sorted(set(img) - allowed)
        if unknown:
            raise ValueError(
                f"seed file {path}: entry {i} ({img.get('name')}) has keys moto does not accept: {', '.join(unknown)}"
            )
        if img["ami_id"] in seen:
            raise ValueError(f"seed file {path}: duplicate ami_id {img['ami_id']}")
        seen.add(img["ami_id"])
    return data


# ---------------------------------------------------------------- generated base images
# Synthetic, as the seed file: names follow the pattern of Amazon's Windows AMIs
# (Windows_Server-<version>-<locale>-<Full|Core>-<flavour>-<YYYY.MM.DD>), one release a
# month; which combinations Amazon really publishes, and when, is not checked.
GEN_VERSIONS = ("2016", "2019", "2022")
GEN_FIRST_MONTH = {"2016": (2016, 10), "2019": (2018, 11), "2022": (2021, 9)}
GEN_LAST_MONTH = (2023, 12)  # older than every image of the seed file (2024)
GEN_LOCALES_FULL = (
    "English", "German", "French", "Spanish", "Italian", "Japanese", "Korean", "Chinese_Simplified",
    "Chinese_Traditional", "Portuguese_Brazil", "Portuguese_Portugal", "Dutch", "Czech", "Hungarian",
    "Polish", "Russian", "Swedish", "Turkish",
)
GEN_LOCALES_CORE = ("English", "German", "French", "Spanish", "Japanese", "Korean", "Chinese_Simplified", "Portuguese_Brazil")
GEN_SQL = {
    "2016": ("SQL_2016_SP3_Standard", "SQL_2016_SP3_Enterprise", "SQL_2016_SP3_Express", "SQL_2016_SP3_Web",
             "SQL_2017_Standard", "SQL_2017_Enterprise"),
    "2019": ("SQL_2017_Standard", "SQL_2017_Enterprise", "SQL_2019_Standard", "SQL_2019_Enterprise",
             "SQL_2019_Express", "SQL_2019_Web", "SQL_2022_Standard", "SQL_2022_Enterprise"),
    "2022": ("SQL_2019_Standard", "SQL_2019_Enterprise", "SQL_2022_Standard", "SQL_2022_Enterprise",
             "SQL_2022_Express", "SQL_2022_Web"),
}
GEN_SQL_LOCALES = ("English", "Japanese")
GEN_OTHER = {"2016": (("Full", "ECS_Optimized"),),
             "2019": (("Full", "ContainersLatest"), ("Full", "ECS_Optimized"), ("Core", "ContainersLatest"), ("Core", "ECS_Optimized")),
             "2022": (("Full", "ContainersLatest"), ("Full", "ECS_Optimized"), ("Core", "ContainersLatest"), ("Core", "ECS_Optimized"))}


def _combinations(version: str) -> list[tuple[str, str, str]]:
    """(locale, edition, flavour) published for a version, in a fixed order."""
    out = [(loc, "Full", "Base") for loc in GEN_LOCALES_FULL]
    out += [(loc, "Core", "Base") for loc in GEN_LOCALES_CORE]
    out += [(loc, "Full", sql) for loc in GEN_SQL_LOCALES for sql in GEN_SQL[version]]
    out += [("English", edition, flavour) for edition, flavour in GEN_OTHER[version]]
    return out


def _release_day(year: int, month: int) -> datetime.date:
    """The day after the second Tuesday of the month (Microsoft's monthly updates)."""
    first = datetime.date(year, month, 1)
    second_tuesday = 1 + (calendar.TUESDAY - first.weekday()) % 7 + 7
    return datetime.date(year, month, second_tuesday + 1)


def _describe(version: str, locale: str, edition: str, flavour: str) -> str:
    kind = "with Desktop Experience" if edition == "Full" else "Core"
    extra = ""
    if flavour.startswith("SQL_"):
        parts = flavour.split("_")  # SQL_2019_Standard, SQL_2016_SP3_Web
        extra = f" with SQL {parts[-1]} {parts[1]}"
    elif flavour != "Base":
        extra = f" with {flavour.replace('_', ' ')}"
    return f"Microsoft Windows Server {version} {kind} Locale {locale}{extra} AMI provided by Amazon"


@lru_cache(maxsize=4)
def windows_image_specs(n: int) -> tuple[dict[str, Any], ...]:
    """The first ``n`` generated images, newest release first: every (version, locale,
    edition, flavour) of a month, then the month before.  Deterministic: the same name has
    the same id (``ami-`` + 17 hex digits of its SHA-256) in every run."""
    out: list[dict[str, Any]] = []
    year, month = GEN_LAST_MONTH
    combos = {v: _combinations(v) for v in GEN_VERSIONS}
    while len(out) < n:
        day = _release_day(year, month)
        live = [v for v in GEN_VERSIONS if (year, month) >= GEN_FIRST_MONTH[v]]
        if not live:
            raise ValueError(f"only {len(out)} generated Windows images exist, {n} asked")
        for version in live:
            for locale, edition, flavour in combos[version]:
                name = f"Windows_Server-{version}-{locale}-{edition}-{flavour}-{day:%Y.%m.%d}"
                digest = hashlib.sha256(f"tc-ami-sandbox-generated:{name}".encode()).hexdigest()
                seconds = int(digest[17:23], 16) % 3600
                out.append(
                    {
                        "ami_id": "ami-" + digest[:17],
                        "name": name,
                        "description": _describe(version, locale, edition, flavour),
                        "owner_id": AMAZON_WINDOWS_OWNER,
                        "state": "available",
                        "platform": "windows",
                        "creation_date": f"{day:%Y-%m-%d}T07:{seconds // 60:02d}:{seconds % 60:02d}.000Z",
                        "architecture": "x86_64",
                    }
                )
                if len(out) == n:
                    return tuple(out)
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return tuple(out)


class Seeds:
    """Which images are seed images, and the run-time additions."""

    def __init__(self, seed: list[dict[str, Any]], config: Any = None):
        self.file_seed = {img["ami_id"]: img for img in seed}
        self.runtime: list[dict[str, Any]] = []  # specs added through the control API
        self._counter = itertools.count(1)
        self.config = config  # for extra_windows_images

    def _extra(self) -> tuple[dict[str, Any], ...]:
        n = self.config.get("extra_windows_images") if self.config is not None else 0
        return windows_image_specs(n) if n else ()

    def seeded_ids(self) -> set[str]:
        return set(self.file_seed) | {s["ami_id"] for s in self.runtime} | {s["ami_id"] for s in self._extra()}

    def apply_extra(self) -> int:
        """Brings every existing region to ``extra_windows_images`` generated images (after a
        config change); regions made later get them when moto loads their images.  Returns
        the number of regions changed.  Call with the model lock held."""
        want = self._extra()
        keep = {s["ami_id"] for s in want}
        every = {s["ami_id"] for s in windows_image_specs(_max_extra())}
        changed = 0
        for acct in list(dict.values(ec2_backends)):
            for be in list(dict.values(acct)):
                before = len(be.amis)
                for ami_id in [a for a in be.amis if a in every and a not in keep]:
                    ami = be.amis.pop(ami_id)
                    be.snapshots.pop(ami.ebs_snapshot.id, None)
                for spec in want:
                    self._add_to_backend(be, spec)
                changed += len(be.amis) != before
        return changed

    def reset(self) -> None:
        self.runtime.clear()

    # -------------------------------------------------------------- moto hook

    def install(self) -> None:
        """Wraps EC2Backend._load_amis (moto.ec2.models.amis.AmiBackend._load_amis)."""
        seeds = self
        orig = EC2Backend._load_amis

        def _load_amis(self: Any) -> None:
            orig(self)
            for ami in list(self.amis.values()):
                spec = seeds.file_seed.get(ami.id)
                if spec is None:
                    continue
                ami.owner_alias = "amazon" if ami.owner_id in AMAZON_OWNER_IDS else None
                # moto honours these today; keep them right if a later moto does not.
                if ami.state != spec["state"]:
                    ami.state = spec["state"]
                want = default_timestamp_parser(spec["creation_date"]) if isinstance(spec["creation_date"], str) else spec["creation_date"]
                if ami.creation_date != want:
                    ami.creation_date = want
            for spec in seeds._extra():
                seeds._add_to_backend(self, spec)
            for spec in seeds.runtime:
                if spec["region"] in ("all", self.region_name):
                    seeds._add_to_backend(self, spec)

        EC2Backend._load_amis = _load_amis

    # ------------------------------------------------------- run-time seeding

    @staticmethod
    def _add_to_backend(backend: Any, spec: dict[str, Any]) -> None:
        if spec["ami_id"] in backend.amis:
            return
        ami = Ami(
            backend,
            spec["ami_id"],
            name=spec["name"],
            description=spec["description"],
            owner_id=spec["owner_id"],
            owner_alias="amazon" if spec["owner_id"] in AMAZON_OWNER_IDS else None,
            public=True,
            virtualization_type="hvm",
            architecture=spec["architecture"],
            state=spec["state"],
            creation_date=default_timestamp_parser(spec["creation_date"]),
            platform=spec["platform"],
            hypervisor="xen",
            root_device_type="ebs",
            root_device_name="/dev/sda1" if spec["platform"] == "windows" else "/dev/xvda",
            image_location=f"amazon/{spec['name']}" if spec["owner_id"] in AMAZON_OWNER_IDS else f"{spec['owner_id']}/{spec['name']}",
            boot_mode="legacy-bios" if spec["platform"] == "windows" else "uefi-preferred",
        )
        backend.amis[ami.id] = ami

    def add_runtime(self, body: Any) -> dict[str, Any]:
        """Adds a base image; returns {image_id, regions}.  Raises ValueError."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        known = {"region", "name", "creation_date", "state", "platform", "owner_id", "description", "architecture"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        name = body.get("name")
        if not isinstance(name, str) or not (3 <= len(name) <= 128):
            raise ValueError("name: required, a string of 3 to 128 characters")
        region = body.get("region", "all")
        regions_known = set(ec2_backends[DEFAULT_ACCOUNT_ID].regions)
        if not isinstance(region, str) or (region != "all" and region not in regions_known):
            raise ValueError(f"region: 'all' or an EC2 region name, got {region!r}")
        now = datetime.datetime.now(datetime.timezone.utc)
        creation_date = body.get("creation_date") or now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if not isinstance(creation_date, str):
            raise ValueError("creation_date: must be a string like 2024-06-12T07:00:00.000Z")
        try:
            parsed = default_timestamp_parser(creation_date)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"creation_date: not an ISO 8601 time: {creation_date!r} ({e})") from e
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        creation_date = parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        state = body.get("state", "available")
        if state not in ("available", "pending", "failed", "disabled"):
            raise ValueError(f"state: one of available, pending, failed, disabled; got {state!r}")
        platform = body.get("platform", "windows")
        if platform in ("linux", "", None):
            platform = None
        elif platform != "windows":
            raise ValueError(f"platform: windows or linux, got {platform!r}")
        owner_id = str(body.get("owner_id") or AMAZON_WINDOWS_OWNER)
        if not (owner_id.isdigit() and len(owner_id) == 12):
            raise ValueError(f"owner_id: a 12-digit account id, got {owner_id!r}")
        n = next(self._counter)
        ami_id = "ami-" + hashlib.sha256(f"tc-ami-sandbox-runtime:{owner_id}:{name}:{n}".encode()).hexdigest()[:17]
        spec = {
            "ami_id": ami_id,
            "region": region,
            "name": name,
            "description": body.get("description") or f"{name} (sandbox seed, added at run time)",
            "owner_id": owner_id,
            "state": state,
            "platform": platform,
            "creation_date": creation_date,
            "architecture": body.get("architecture") or "x86_64",
        }
        self.runtime.append(spec)
        added = []
        if region == "all":
            # existing backends now; backends created later get it in _load_amis
            for acct in list(dict.values(ec2_backends)):
                for be in list(dict.values(acct)):
                    self._add_to_backend(be, spec)
                    added.append(be.region_name)
        else:
            for acct_id in set(dict.keys(ec2_backends)) | {DEFAULT_ACCOUNT_ID}:
                be = ec2_backends[acct_id][region]  # creates the backend (and seeds it) if needed
                self._add_to_backend(be, spec)
                added.append(region)
        log.info("seeded %s %s (%s, %s, created %s) in %s", ami_id, name, state, owner_id, creation_date, region)
        return {"image_id": ami_id, "name": name, "region": region, "regions_now": sorted(set(added)), "state": state, "creation_date": creation_date, "owner_id": owner_id}
