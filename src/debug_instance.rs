//! `tc-ami debug-instance` (pure): the TTL and its cap, the `--cidr` check, the names and tags
//! of a debug instance, its user data (the scheduled shutdown), the `.rdp` file, which regions
//! `--list` and `--stop` look in, and the listing's table.
//!
//! A debug instance is a Windows instance launched from a worker type's image for someone to
//! log in to over RDP. It carries the tag `tc-ami:debug-id` (never `tc-ami:build-id`: it is not
//! a build), `tc-ami:worker-type` and `tc-ami:expires-at` (launch + TTL), and ends itself: its
//! user data runs `shutdown /s /t <TTL in seconds>` and its shutdown behaviour is `terminate`.
//! If the guest never shuts down, `cleanup` removes it once `tc-ami:expires-at` has passed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::duration::{format_duration, parse_duration};
use crate::model::Tags;
use crate::model::tags::{CREATED_AT, DEBUG_ID, EXPIRES_AT, NAME, WORKER_TYPE};
use crate::text::table;

/// The TTL when `--ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);

/// The longest TTL: `shutdown /t` accepts 0 to 315360000 seconds (10 years), per
/// `shutdown /?` on Windows Server 2008 R2 and later (and `MAX_SHUTDOWN_TIMEOUT` =
/// 10 × 365 × 24 × 60 × 60 in winreg.h).
pub const MAX_TTL: Duration = Duration::from_secs(315_360_000);

/// How the names of a debug instance's key pair, group and instance begin.
pub const NAME_PREFIX: &str = "tc-ami-debug-";

/// The RDP port the security group opens.
pub const RDP_PORT: u16 = 3389;

/// The Windows administrator account EC2 sets the password of.
pub const USER: &str = "Administrator";

/// `--ttl`: a duration (`4h`, `90m`), not zero, at most [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text).map_err(|e| format!("--ttl {text}: {e}"))?;
    if ttl.is_zero() {
        return Err(format!(
            "--ttl {text}: the instance would shut down at once; give a duration such as 4h"
        ));
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "--ttl {text}: at most {} (3650d): Windows' `shutdown /t` accepts no longer delay",
            MAX_TTL.as_secs()
        ));
    }
    Ok(ttl)
}

/// An address range RDP is admitted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub text: String,
    pub ipv6: bool,
}

/// `--cidr`: an IPv4 or IPv6 network in CIDR notation whose host bits are zero (EC2 takes the
/// network, not an address in it), and not the whole Internet.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let text = text.trim();
    let hint = "e.g. 203.0.113.7/32 for one address (tc-ami does not guess yours)";
    let (addr, len) = text.split_once('/').ok_or_else(|| {
        format!("--cidr {text}: not in CIDR notation; give ADDRESS/LENGTH, {hint}")
    })?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("--cidr {text}: `{addr}` is not an IP address; {hint}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u32 =
        len.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
            format!("--cidr {text}: the prefix length must be 0 to {max}; {hint}")
        })?;
    if len == 0 {
        return Err(format!(
            "--cidr {text}: that admits RDP from every address; give your own network, {hint}"
        ));
    }
    let network = mask(addr, len);
    if network != addr {
        return Err(format!(
            "--cidr {text}: host bits are set; the network is {network}/{len} (or use /{max} for the address alone)"
        ));
    }
    Ok(Cidr {
        text: format!("{addr}/{len}"),
        ipv6: addr.is_ipv6(),
    })
}

fn mask(addr: IpAddr, len: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

/// What a debug instance is called and tagged with.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugPlan {
    pub worker_type: String,
    pub debug_id: String,
    /// The key pair's, the security group's and the instance's `Name`:
    /// `tc-ami-debug-<W>-<debug id>`.
    pub name: String,
    pub ttl: Duration,
    pub launched: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub tags: Tags,
    pub user_data: String,
}

/// Plans a debug instance of `worker_type` launched `now` for `ttl` (already checked by
/// [`parse_ttl`]); None when `now + ttl` is past what a date can hold.
pub fn plan(
    worker_type: &str,
    debug_id: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Option<DebugPlan> {
    let expires_at = now.checked_add_signed(chrono::Duration::from_std(ttl).ok()?)?;
    let name = format!("{NAME_PREFIX}{worker_type}-{debug_id}");
    let tags = vec![
        (NAME.to_string(), name.clone()),
        (DEBUG_ID.to_string(), debug_id.to_string()),
        (WORKER_TYPE.to_string(), worker_type.to_string()),
        (CREATED_AT.to_string(), rfc3339(now)),
        (EXPIRES_AT.to_string(), rfc3339(expires_at)),
    ];
    Some(DebugPlan {
        worker_type: worker_type.to_string(),
        debug_id: debug_id.to_string(),
        user_data: user_data(ttl, expires_at),
        name,
        ttl,
        launched: now,
        expires_at,
        tags,
    })
}

/// RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The user data: a PowerShell block EC2Launch runs at first boot, scheduling the shutdown
/// after the TTL (`/t` seconds, at most [`MAX_TTL`]; with `/t` over 0 Windows implies `/f`).
/// With the instance's shutdown behaviour `terminate`, the shutdown terminates it. A reboot
/// cancels a scheduled shutdown; `cleanup` removes the instance after its `tc-ami:expires-at`
/// all the same.
pub fn user_data(ttl: Duration, expires_at: DateTime<Utc>) -> String {
    let seconds = ttl.min(MAX_TTL).as_secs();
    format!(
        "<powershell>\nshutdown.exe /s /t {seconds} /c \"tc-ami debug instance: TTL {}, until {}\"\n</powershell>\n",
        format_duration(ttl),
        rfc3339(expires_at)
    )
}

/// The `.rdp` file: `full address` (the only setting RDP requires) and `username`, CRLF line
/// ends as Windows writes them; never the password.
pub fn render_rdp(host: &str) -> String {
    format!("full address:s:{host}\r\nusername:s:{USER}\r\n")
}

/// An EC2 instance id: `i-` and 8 or 17 hexadecimal digits.
pub fn valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// A debug instance as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DebugInstance {
    pub instance_id: String,
    pub region: String,
    pub state: String,
    /// Its `tc-ami:debug-id` tag (None: not a tc-ami debug instance).
    pub debug_id: Option<String>,
    pub worker_type: Option<String>,
    /// Public DNS name, else public IPv4 address.
    pub address: Option<String>,
    pub launched: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
}

impl DebugInstance {
    /// Whether its `tc-ami:expires-at` has passed at `now` (false when it has none).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The regions `--list` and `--stop` look in: the build region of each worker type given
/// (`(name, build region)`), only `only`'s when given. Sorted, each once.
pub fn list_regions(worker_types: &[(String, String)], only: Option<&str>) -> BTreeSet<String> {
    worker_types
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .map(|(_, region)| region.clone())
        .collect()
}

/// The `--list` table, oldest launch first; `-` for what is unknown.
pub fn render_list(instances: &[DebugInstance], now: DateTime<Utc>) -> String {
    let mut sorted: Vec<&DebugInstance> = instances.iter().collect();
    sorted.sort_by(|a, b| (a.launched, &a.instance_id).cmp(&(b.launched, &b.instance_id)));
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|i| {
            vec![
                i.instance_id.clone(),
                i.worker_type.clone().unwrap_or_else(dash),
                i.region.clone(),
                i.state.clone(),
                i.address.clone().unwrap_or_else(dash),
                i.launched.map(rfc3339).unwrap_or_else(dash),
                i.expires_at.map(rfc3339).unwrap_or_else(dash),
                if i.expired(now) { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE",
            "WORKER TYPE",
            "REGION",
            "STATE",
            "ADDRESS",
            "LAUNCHED",
            "EXPIRES",
            "EXPIRED",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_ttl_is_a_duration_up_to_what_shutdown_accepts() {
        assert_eq!(parse_ttl("4h"), Ok(DEFAULT_TTL));
        assert_eq!(parse_ttl("3650d"), Ok(MAX_TTL));
        assert!(
            parse_ttl("3650d1s")
                .unwrap_err()
                .contains("at most 315360000")
        );
        assert!(parse_ttl("0s").unwrap_err().contains("at once"));
        assert!(
            parse_ttl("4x")
                .unwrap_err()
                .starts_with("--ttl 4x: unknown unit")
        );
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    #[test]
    fn the_cidr_is_a_network_and_never_everything() {
        assert_eq!(
            parse_cidr("203.0.113.7/32"),
            Ok(Cidr {
                text: "203.0.113.7/32".into(),
                ipv6: false
            })
        );
        assert_eq!(parse_cidr("10.1.0.0/16").unwrap().text, "10.1.0.0/16");
        assert!(parse_cidr("2001:db8::/32").unwrap().ipv6);
        assert!(
            parse_cidr("10.1.2.3/16")
                .unwrap_err()
                .contains("the network is 10.1.0.0/16")
        );
        assert!(
            parse_cidr("0.0.0.0/0")
                .unwrap_err()
                .contains("every address")
        );
        assert!(parse_cidr("::/0").unwrap_err().contains("every address"));
        assert!(
            parse_cidr("203.0.113.7")
                .unwrap_err()
                .contains("CIDR notation")
        );
        assert!(
            parse_cidr("203.0.113.7/33")
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            parse_cidr("example.com/32")
                .unwrap_err()
                .contains("not an IP")
        );
        for bad in ["", "/", "1.2.3.4/", "1.2.3.4/x", "1.2.3.4/-1"] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_plan_names_tags_and_schedules_the_shutdown() {
        let now = t("2026-11-30T05:00:00Z");
        let p = plan("w", "20261130T050000Z-abcdef", DEFAULT_TTL, now).unwrap();
        assert_eq!(p.name, "tc-ami-debug-w-20261130T050000Z-abcdef");
        assert_eq!(p.expires_at, t("2026-11-30T09:00:00Z"));
        let tag = |k: &str| {
            p.tags
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(tag(DEBUG_ID), Some("20261130T050000Z-abcdef"));
        assert_eq!(tag(WORKER_TYPE), Some("w"));
        assert_eq!(tag(EXPIRES_AT), Some("2026-11-30T09:00:00Z"));
        assert_eq!(tag(CREATED_AT), Some("2026-11-30T05:00:00Z"));
        assert_eq!(tag(NAME), Some(p.name.as_str()));
        assert!(tag(crate::model::tags::BUILD_ID).is_none());
        assert_eq!(
            p.user_data,
            "<powershell>\nshutdown.exe /s /t 14400 /c \"tc-ami debug instance: TTL 4h, until 2026-11-30T09:00:00Z\"\n</powershell>\n"
        );
        assert!(plan("w", "x", MAX_TTL, DateTime::<Utc>::MAX_UTC).is_none());
    }

    #[test]
    fn instance_ids_are_checked_before_any_call() {
        assert!(valid_instance_id("i-0123456789abcdef0"));
        assert!(valid_instance_id("i-0123abcd"));
        for bad in [
            "i-",
            "i-xyz",
            "ami-0123456789abcdef0",
            "0123abcd",
            "i-0123abcd0",
        ] {
            assert!(!valid_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_rdp_file_names_host_and_user_only() {
        assert_eq!(
            render_rdp("ec2-54-1-2-3.us-west-2.compute.amazonaws.com"),
            "full address:s:ec2-54-1-2-3.us-west-2.compute.amazonaws.com\r\nusername:s:Administrator\r\n"
        );
    }

    #[test]
    fn the_list_looks_in_each_build_region_once() {
        let wts = vec![
            ("a".to_string(), "us-west-2".to_string()),
            ("b".to_string(), "us-west-2".to_string()),
            ("c".to_string(), "eu-west-1".to_string()),
        ];
        assert_eq!(
            list_regions(&wts, None).into_iter().collect::<Vec<_>>(),
            ["eu-west-1", "us-west-2"]
        );
        assert_eq!(
            list_regions(&wts, Some("c"))
                .into_iter()
                .collect::<Vec<_>>(),
            ["eu-west-1"]
        );
        assert!(list_regions(&wts, Some("zz")).is_empty());
    }

    #[test]
    fn the_list_says_what_has_expired() {
        let now = t("2026-11-30T10:00:00Z");
        let one = |id: &str, launched: &str, expires: &str| DebugInstance {
            instance_id: id.into(),
            region: "us-west-2".into(),
            state: "running".into(),
            debug_id: Some("d".into()),
            worker_type: Some("w".into()),
            address: None,
            launched: Some(t(launched)),
            expires_at: Some(t(expires)),
            key_name: None,
            security_groups: vec![],
        };
        let rows = vec![
            one("i-2", "2026-11-30T08:00:00Z", "2026-11-30T12:00:00Z"),
            one("i-1", "2026-11-30T05:00:00Z", "2026-11-30T09:00:00Z"),
        ];
        let text = render_list(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("INSTANCE"), "{text}");
        assert!(
            lines[1].starts_with("i-1") && lines[1].ends_with("yes"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("i-2") && lines[2].ends_with("no"),
            "{text}"
        );
        assert!(lines[1].contains(" - "), "{text}");
    }
}
