//! Worker type configuration: `worker-types/<W>.toml` plus the top-level `base-ami.txt`.
//!
//! Pure: takes text, returns a validated [`WorkerType`] or an error that names the file, the
//! key and what is allowed. [`crate::config_dir`] reads the files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::duration::{format_duration, parse_duration};

/// The owner alias EC2 gives Amazon's own public images.
pub const DEFAULT_BASE_AMI_OWNER: &str = "amazon";
pub const DEFAULT_FIRST_BOOT_SCRIPT: &str = "scripts/first-boot.ps1";
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(90 * 60);
pub const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_SECRET_EXPIRES_IN: Duration = Duration::from_secs(365 * 24 * 3600);

/// Every key a worker type file may hold, with what it takes (shown in errors).
const KEYS: &[(&str, &str)] = &[
    (
        "worker_pool_id",
        "a Taskcluster worker pool id like \"proj-servo/win2016\"",
    ),
    ("base_ami_pattern", "an image name pattern with * and ?"),
    (
        "base_ami_owner",
        "\"amazon\", \"self\" or a 12-digit AWS account id",
    ),
    (
        "first_boot_script",
        "a path relative to the config directory",
    ),
    ("build_region", "an AWS region like \"us-west-2\""),
    ("instance_type", "an EC2 instance type like \"c5.4xlarge\""),
    ("root_volume_gb", "a whole number of GiB from 30 to 16384"),
    ("build_timeout", "a duration like \"90m\" or \"1h30m\""),
    ("image_timeout", "a duration like \"60m\""),
    ("regions", "a list of AWS regions"),
    ("share_with_accounts", "a list of 12-digit AWS account ids"),
    ("password_secret_prefix", "a Taskcluster secret name prefix"),
    ("password_secret_expires_in", "a duration like \"365d\""),
    (
        "config_files",
        "a list of paths relative to the config directory (files that declare the pool's image ids)",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerType {
    /// The file stem: `servo-win2016`.
    pub name: String,
    /// Where it was read from, for messages.
    pub file: PathBuf,
    pub worker_pool_id: String,
    pub base_ami_pattern: String,
    pub base_ami_owner: String,
    /// Resolved against the config directory.
    pub first_boot_script: PathBuf,
    pub build_region: String,
    pub instance_type: String,
    pub root_volume_gb: Option<i32>,
    pub build_timeout: Duration,
    pub image_timeout: Duration,
    /// Extra regions besides `build_region`, without duplicates, in file order.
    pub regions: Vec<String>,
    pub share_with_accounts: Vec<String>,
    pub password: PasswordDestination,
    /// Files that declare the pool's image ids (a tc-admin configuration), resolved against the
    /// config directory; `deploy` updates them by default.
    pub config_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PasswordDestination {
    /// Stored in the Taskcluster secret `<prefix>/<image id>`.
    Secret {
        prefix: String,
        expires_in: Duration,
    },
    /// Printed once at the end of the build.
    Print,
}

impl PasswordDestination {
    pub fn secret_name(&self, image_id: &str) -> Option<String> {
        match self {
            PasswordDestination::Secret { prefix, .. } => Some(format!("{prefix}/{image_id}")),
            PasswordDestination::Print => None,
        }
    }
}

impl WorkerType {
    /// The build region first, then the extra regions.
    pub fn all_regions(&self) -> Vec<String> {
        let mut all = vec![self.build_region.clone()];
        all.extend(
            self.regions
                .iter()
                .filter(|r| **r != self.build_region)
                .cloned(),
        );
        all
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error(
        "unknown worker type `{name}`: no file {path}; known worker types: {known} (or pass -C DIR to pick another config directory)"
    )]
    UnknownWorkerType {
        name: String,
        path: String,
        known: String,
    },
    #[error(
        "invalid worker type name `{0}`: use letters, digits, `-` and `_` only (the file stem of worker-types/<name>.toml)"
    )]
    BadWorkerTypeName(String),
    #[error("{file}: cannot read it: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: not valid TOML: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: unknown key `{key}`; allowed keys: {allowed}")]
    UnknownKey {
        file: String,
        key: String,
        allowed: String,
    },
    #[error("{file}: missing key `{key}`: set it to {expected}")]
    Missing {
        file: String,
        key: String,
        expected: String,
    },
    #[error("{file}: bad value for `{key}`: {problem}; expected {expected}")]
    BadValue {
        file: String,
        key: String,
        problem: String,
        expected: String,
    },
}

fn expected(key: &str) -> String {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, e)| (*e).to_string())
        .unwrap_or_default()
}

pub fn valid_worker_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The first non-empty, non-comment line of base-ami.txt.
pub fn parse_base_ami_txt(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

struct Reader<'a> {
    file: String,
    table: &'a toml::Table,
}

impl Reader<'_> {
    fn bad(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            file: self.file.clone(),
            key: key.to_string(),
            problem: problem.into(),
            expected: expected(key),
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            file: self.file.clone(),
            key: key.to_string(),
            expected: expected(key),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => {
                Err(self.bad(key, "it is empty"))
            }
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.bad(key, format!("a {} is not a string", v.type_str()))),
        }
    }

    fn required_string(&self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?.ok_or_else(|| self.missing(key))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(self.bad(
                        key,
                        format!("the list holds a {}, not a string", other.type_str()),
                    )),
                })
                .collect(),
            Some(v) => Err(self.bad(key, format!("a {} is not a list", v.type_str()))),
        }
    }

    fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some(s) => match parse_duration(&s) {
                Ok(d) if d.is_zero() => Err(self.bad(key, "it is zero")),
                Ok(d) => Ok(d),
                Err(e) => Err(self.bad(key, format!("`{s}`: {e}"))),
            },
        }
    }
}

pub fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
}

/// The worker pool id rule of the worker-manager schema:
/// `^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`.
pub fn valid_worker_pool_id(id: &str) -> bool {
    let Some((provisioner, worker_type)) = id.split_once('/') else {
        return false;
    };
    let prov_ok = (1..=38).contains(&provisioner.len())
        && provisioner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let wt = worker_type.as_bytes();
    let wt_ok = !wt.is_empty()
        && wt.len() <= 38
        && wt[0].is_ascii_lowercase()
        && wt
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && (wt.len() == 1 || wt[wt.len() - 1] != b'-');
    prov_ok && wt_ok
}

/// An image owner DescribeImages takes: `amazon`, `self`, `aws-marketplace` or an account id.
pub fn valid_base_ami_owner(owner: &str) -> bool {
    ["amazon", "self", "aws-marketplace"].contains(&owner)
        || (owner.len() == 12 && owner.chars().all(|c| c.is_ascii_digit()))
}

/// An image name pattern: at most 128 characters (EC2's longest image name), no control
/// characters.
pub fn valid_base_ami_pattern(pattern: &str) -> bool {
    !pattern.chars().any(|c| c.is_control()) && pattern.len() <= 128
}

fn valid_instance_type(t: &str) -> bool {
    match t.split_once('.') {
        Some((family, size)) => {
            !family.is_empty()
                && !size.is_empty()
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }
        None => false,
    }
}

fn valid_secret_prefix(p: &str) -> bool {
    !p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains("//")
        && p.chars().all(|c| c.is_ascii_graphic())
}

/// Validates the text of one worker type file. `base_ami_txt` is the content of the
/// top-level base-ami.txt, if there is one.
pub fn parse_worker_type(
    name: &str,
    file: &Path,
    text: &str,
    base_ami_txt: Option<&str>,
    config_dir: &Path,
) -> Result<WorkerType, ConfigError> {
    let file_s = file.display().to_string();
    let table = parse_table(&file_s, text)?;
    let r = Reader {
        file: file_s,
        table: &table,
    };
    let worker_pool_id = r.required_string("worker_pool_id")?;
    if !valid_worker_pool_id(&worker_pool_id) {
        return Err(r.bad(
            "worker_pool_id",
            format!("`{worker_pool_id}` is not a worker pool id"),
        ));
    }
    let (base_ami_pattern, base_ami_owner) = r.base_ami(base_ami_txt, config_dir)?;
    let script = r
        .string("first_boot_script")?
        .unwrap_or_else(|| DEFAULT_FIRST_BOOT_SCRIPT.to_string());
    let (build_region, instance_type, root_volume_gb) = r.build_machine()?;
    let build_timeout = r.duration("build_timeout", DEFAULT_BUILD_TIMEOUT)?;
    let image_timeout = r.duration("image_timeout", DEFAULT_IMAGE_TIMEOUT)?;
    let regions = r.regions(&build_region)?;
    let share_with_accounts = r.accounts()?;
    let password = r.password()?;
    let config_files = r.config_files()?;
    Ok(WorkerType {
        name: name.to_string(),
        file: file.to_path_buf(),
        worker_pool_id,
        base_ami_pattern,
        base_ami_owner,
        first_boot_script: config_dir.join(&script),
        build_region,
        instance_type,
        root_volume_gb,
        build_timeout,
        image_timeout,
        regions,
        share_with_accounts,
        password,
        config_files: config_files.iter().map(|f| config_dir.join(f)).collect(),
    })
}

/// The file as a TOML table with known keys only.
fn parse_table(file: &str, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: file.to_string(),
            reason: e.message().trim().to_string(),
        })?;
    let allowed: BTreeSet<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    if let Some(key) = table.keys().find(|k| !allowed.contains(k.as_str())) {
        return Err(ConfigError::UnknownKey {
            file: file.to_string(),
            key: key.clone(),
            allowed: KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(table)
}

impl Reader<'_> {
    /// `base_ami_pattern` (else base-ami.txt's) and `base_ami_owner`.
    fn base_ami(
        &self,
        base_ami_txt: Option<&str>,
        config_dir: &Path,
    ) -> Result<(String, String), ConfigError> {
        let pattern =
            match self.string("base_ami_pattern")? {
                Some(p) => p,
                None => base_ami_txt.and_then(parse_base_ami_txt).ok_or_else(|| {
                    ConfigError::Missing {
                        file: self.file.clone(),
                        key: "base_ami_pattern".into(),
                        expected: format!(
                            "an image name pattern, here or as the first line of {}",
                            config_dir.join("base-ami.txt").display()
                        ),
                    }
                })?,
            };
        if !valid_base_ami_pattern(&pattern) {
            return Err(self.bad(
                "base_ami_pattern",
                "it holds control characters or is over 128 characters",
            ));
        }
        let owner = self
            .string("base_ami_owner")?
            .unwrap_or_else(|| DEFAULT_BASE_AMI_OWNER.to_string());
        if !valid_base_ami_owner(&owner) {
            return Err(self.bad("base_ami_owner", format!("`{owner}`")));
        }
        Ok((pattern, owner))
    }

    /// `build_region`, `instance_type` and `root_volume_gb`.
    fn build_machine(&self) -> Result<(String, String, Option<i32>), ConfigError> {
        let build_region = self.required_string("build_region")?;
        if !valid_region(&build_region) {
            return Err(self.bad(
                "build_region",
                format!("`{build_region}` is not a region name"),
            ));
        }
        let instance_type = self.required_string("instance_type")?;
        if !valid_instance_type(&instance_type) {
            return Err(self.bad(
                "instance_type",
                format!("`{instance_type}` is not an instance type name"),
            ));
        }
        let root_volume_gb = match self.table.get("root_volume_gb") {
            None => None,
            Some(toml::Value::Integer(n)) if (30..=16384).contains(n) => Some(*n as i32),
            Some(toml::Value::Integer(n)) => {
                return Err(self.bad("root_volume_gb", format!("{n} is out of range")));
            }
            Some(v) => {
                return Err(self.bad(
                    "root_volume_gb",
                    format!("a {} is not a whole number", v.type_str()),
                ));
            }
        };
        Ok((build_region, instance_type, root_volume_gb))
    }

    /// `regions`, without the build region and duplicates, in file order.
    fn regions(&self, build_region: &str) -> Result<Vec<String>, ConfigError> {
        let mut regions = Vec::new();
        for region in self.strings("regions")? {
            if !valid_region(&region) {
                return Err(self.bad("regions", format!("`{region}` is not a region name")));
            }
            if region != build_region && !regions.contains(&region) {
                regions.push(region);
            }
        }
        Ok(regions)
    }

    fn accounts(&self) -> Result<Vec<String>, ConfigError> {
        let accounts = self.strings("share_with_accounts")?;
        if let Some(bad) = accounts
            .iter()
            .find(|a| a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(self.bad(
                "share_with_accounts",
                format!("`{bad}` is not an account id"),
            ));
        }
        Ok(accounts)
    }

    /// `config_files`: relative paths, each once.
    fn config_files(&self) -> Result<Vec<String>, ConfigError> {
        let mut files: Vec<String> = Vec::new();
        for file in self.strings("config_files")? {
            if file.trim().is_empty() || Path::new(&file).is_absolute() {
                return Err(self.bad("config_files", format!("`{file}` is empty or absolute")));
            }
            if !files.contains(&file) {
                files.push(file);
            }
        }
        Ok(files)
    }

    /// `password_secret_prefix` and `password_secret_expires_in`.
    fn password(&self) -> Result<PasswordDestination, ConfigError> {
        let expires_in = self.duration("password_secret_expires_in", DEFAULT_SECRET_EXPIRES_IN)?;
        match self.string("password_secret_prefix")? {
            Some(prefix) if !valid_secret_prefix(&prefix) => Err(self.bad(
                "password_secret_prefix",
                format!("`{prefix}` has spaces, a leading or trailing `/`, or `//`"),
            )),
            Some(prefix) => Ok(PasswordDestination::Secret { prefix, expires_in }),
            None if self.table.contains_key("password_secret_expires_in") => Err(self.bad(
                "password_secret_expires_in",
                "it needs password_secret_prefix, which is not set",
            )),
            None => Ok(PasswordDestination::Print),
        }
    }
}

impl std::fmt::Display for WorkerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pool {}, build in {}, timeout {})",
            self.name,
            self.worker_pool_id,
            self.build_region,
            format_duration(self.build_timeout)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
worker_pool_id = "proj-servo/win2016"
build_region = "us-west-2"
instance_type = "c5.4xlarge"
root_volume_gb = 150
build_timeout = "90m"
regions = ["us-east-1", "us-west-2", "us-east-1"]
password_secret_prefix = "project/servo/windows-administrator/servo-win2016"
"#;

    fn parse(text: &str) -> Result<WorkerType, ConfigError> {
        parse_worker_type(
            "servo-win2016",
            Path::new("worker-types/servo-win2016.toml"),
            text,
            Some("# pattern\n\nWindows_Server-2016-English-Full-Base-*\n"),
            Path::new("/cfg"),
        )
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn good_file_with_defaults() {
        let wt = parse(GOOD).unwrap();
        assert_eq!(wt.worker_pool_id, "proj-servo/win2016");
        assert_eq!(
            wt.base_ami_pattern,
            "Windows_Server-2016-English-Full-Base-*"
        );
        assert_eq!(wt.base_ami_owner, "amazon");
        assert_eq!(
            wt.first_boot_script,
            Path::new("/cfg/scripts/first-boot.ps1")
        );
        assert_eq!(wt.build_timeout, Duration::from_secs(5400));
        assert_eq!(wt.image_timeout, DEFAULT_IMAGE_TIMEOUT);
        assert_eq!(wt.regions, vec!["us-east-1"]);
        assert_eq!(wt.all_regions(), vec!["us-west-2", "us-east-1"]);
        assert_eq!(
            wt.password.secret_name("ami-1"),
            Some("project/servo/windows-administrator/servo-win2016/ami-1".into())
        );
    }

    #[test]
    fn worker_type_pattern_overrides_base_ami_txt() {
        let wt = parse(&format!(
            "{GOOD}base_ami_pattern = \"Windows_Server-2019-*\"\n"
        ))
        .unwrap();
        assert_eq!(wt.base_ami_pattern, "Windows_Server-2019-*");
    }

    #[test]
    fn no_pattern_anywhere_is_an_error() {
        let err = parse_worker_type(
            "w",
            Path::new("w.toml"),
            GOOD,
            Some("# only a comment\n"),
            Path::new("/cfg"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing key `base_ami_pattern`"), "{err}");
        assert!(err.contains("/cfg/base-ami.txt"), "{err}");
    }

    #[test]
    fn no_secret_prefix_means_print() {
        let text = GOOD.replace("password_secret_prefix", "# password_secret_prefix");
        assert_eq!(parse(&text).unwrap().password, PasswordDestination::Print);
    }

    #[test]
    fn unknown_key_names_file_key_and_allowed() {
        let err = message(&format!("{GOOD}imageid = \"ami-1\"\n"));
        assert!(
            err.starts_with("worker-types/servo-win2016.toml: unknown key `imageid`"),
            "{err}"
        );
        assert!(
            err.contains("allowed keys: worker_pool_id, base_ami_pattern"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                "worker_pool_id = \"proj-servo/Win2016\"",
                "bad value for `worker_pool_id`",
            ),
            ("build_region = \"US West\"", "bad value for `build_region`"),
            ("instance_type = \"big\"", "bad value for `instance_type`"),
            (
                "root_volume_gb = 10",
                "bad value for `root_volume_gb`: 10 is out of range",
            ),
            ("root_volume_gb = \"150\"", "a string is not a whole number"),
            (
                "build_timeout = \"forever\"",
                "bad value for `build_timeout`",
            ),
            ("build_timeout = \"0s\"", "it is zero"),
            ("regions = \"us-east-1\"", "a string is not a list"),
            ("regions = [\"mars-1\"]", "`mars-1` is not a region name"),
            (
                "share_with_accounts = [\"1234\"]",
                "`1234` is not an account id",
            ),
            (
                "password_secret_prefix = \"/abs/\"",
                "bad value for `password_secret_prefix`",
            ),
            (
                "base_ami_owner = \"someone\"",
                "bad value for `base_ami_owner`",
            ),
            ("instance_type = \"\"", "it is empty"),
        ];
        for (line, want) in cases {
            let key = line.split(' ').next().unwrap();
            let text: String = GOOD
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .chain(std::iter::once(line))
                .collect::<Vec<_>>()
                .join("\n");
            let err = message(&text);
            assert!(err.contains(want), "{line}: {err}");
            assert!(
                err.starts_with("worker-types/servo-win2016.toml: "),
                "{err}"
            );
            assert!(err.contains("expected "), "{err}");
        }
    }

    #[test]
    fn config_files_are_relative_paths() {
        let wt = parse(&format!(
            "{GOOD}config_files = [\"../taskcluster-config/config/worker-pools.yml\", \"../taskcluster-config/config/worker-pools.yml\"]\n"
        ))
        .unwrap();
        assert_eq!(
            wt.config_files,
            vec![Path::new(
                "/cfg/../taskcluster-config/config/worker-pools.yml"
            )]
        );
        assert!(parse(GOOD).unwrap().config_files.is_empty());
        let err = message(&format!("{GOOD}config_files = [\"/etc/pools.yml\"]\n"));
        assert!(
            err.contains("bad value for `config_files`: `/etc/pools.yml` is empty or absolute"),
            "{err}"
        );
        let err = message(&format!("{GOOD}config_files = \"pools.yml\"\n"));
        assert!(err.contains("a string is not a list"), "{err}");
    }

    #[test]
    fn missing_required_keys() {
        let text: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("build_region"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            message(&text),
            "worker-types/servo-win2016.toml: missing key `build_region`: set it to an AWS region like \"us-west-2\""
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = message("worker_pool_id = ");
        assert!(
            err.starts_with("worker-types/servo-win2016.toml: not valid TOML"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn pool_id_rule() {
        assert!(valid_worker_pool_id("proj-servo/win2016"));
        assert!(valid_worker_pool_id("a/b"));
        assert!(!valid_worker_pool_id("proj-servo/win2016-"));
        assert!(!valid_worker_pool_id("proj-servo"));
        assert!(!valid_worker_pool_id("proj servo/win"));
        assert!(!valid_worker_pool_id("p/1win"));
    }

    #[test]
    fn worker_type_names() {
        assert!(valid_worker_type_name("servo-win2016"));
        assert!(!valid_worker_type_name("../etc/passwd"));
        assert!(!valid_worker_type_name(""));
    }
}
