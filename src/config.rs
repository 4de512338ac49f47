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
/// The temporary pool of `tc-ami try` starts at most this many workers by default.
pub const DEFAULT_TRY_MAX_CAPACITY: u64 = 2;
/// The largest value of each duration key, as written in errors and the README: beyond them a
/// value is a typo, not a plan, and every sum tc-ami makes with them (deadlines, expiry dates,
/// cleanup's in-flight window) stays far from any overflow.
/// A build whose guest has not shut down within a day is stuck (the largest first-boot runs
/// take hours); the instance costs money every hour it waits.
pub const MAX_BUILD_TIMEOUT: (Duration, &str) = (Duration::from_secs(24 * 3600), "24h");
/// EC2 makes or copies even a 16 TiB image within hours.
pub const MAX_IMAGE_TIMEOUT: (Duration, &str) = (Duration::from_secs(24 * 3600), "24h");
/// Ten years: longer than any image lives; rebuilt images get new secrets.
pub const MAX_SECRET_EXPIRES_IN: (Duration, &str) =
    (Duration::from_secs(3650 * 24 * 3600), "3650d");

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
    (
        "build_timeout",
        "a duration from 1s to 24h like \"90m\" or \"1h30m\"",
    ),
    ("image_timeout", "a duration from 1s to 24h like \"60m\""),
    ("regions", "a list of AWS regions"),
    ("share_with_accounts", "a list of 12-digit AWS account ids"),
    ("password_secret_prefix", "a Taskcluster secret name prefix"),
    (
        "password_secret_expires_in",
        "a duration from 1s to 3650d (ten years) like \"365d\"",
    ),
    (
        "try_task",
        "a task file (JSON or YAML), relative to the config directory",
    ),
    ("try_max_capacity", "a whole number of workers, at least 1"),
    (
        "promote_to",
        "the name of another worker type of worker-types/ (the production one `tc-ami auto` names in its promote command)",
    ),
    (
        "history_secret",
        "a Taskcluster secret name like \"project/servo/tc-ami/deployments/proj-servo/win2016\" (printable ASCII, no leading or trailing space or `/`)",
    ),
    (
        "config_files",
        "a list of paths relative to the config directory (files that declare the pool's image ids)",
    ),
    (
        "hook_image",
        "the Docker image (with tc-ami, and this config directory, or git with hook_config_repo) the hook's task runs in, e.g. \"registry/name@sha256:<digest>\"",
    ),
    (
        "hook_config_repo",
        "the config repository the hook's task checks out, e.g. \"https://github.com/servo/tc-ami-config.git\" (https://, ssh://, user@host:path or file:///, no credentials)",
    ),
    (
        "hook_config_ref",
        "the git ref of hook_config_repo the hook's task checks out, e.g. \"main\" or \"refs/heads/main\"",
    ),
    (
        "hook_task_queue",
        "the task queue (a worker pool id like \"proj-servo/docker\") of the docker-worker that runs the hook's task",
    ),
    (
        "aws_credentials_secret",
        "a Taskcluster secret name like \"project/servo/tc-ami/aws\" (printable ASCII, no leading or trailing space or `/`) holding {access_key_id, secret_access_key} and optionally session_token",
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
    /// The task `deploy` and `promote` try the images with first (resolved against the config
    /// directory); None: they push without trying.
    pub try_task: Option<PathBuf>,
    /// The most workers the temporary pool of `tc-ami try` starts.
    pub try_max_capacity: u64,
    /// The worker type `tc-ami auto` tells a person to promote W's images to (production);
    /// [`crate::config_dir::load_worker_type`] checks that its file exists.
    pub promote_to: Option<String>,
    /// The Taskcluster secret holding the pool's deployment history.
    pub history_secret: String,
    /// Files that declare the pool's image ids (a tc-admin configuration), resolved against the
    /// config directory; `deploy` updates them by default.
    pub config_files: Vec<PathBuf>,
    /// `tc-ami hook`: the Docker image of the hook's task, and its task queue.
    pub hook_image: Option<String>,
    pub hook_task_queue: Option<String>,
    /// `tc-ami hook`: the config repository the hook's task checks out, and its ref.
    pub hook_config_repo: Option<String>,
    pub hook_config_ref: Option<String>,
    /// The Taskcluster secret holding the AWS credentials of every EC2 call for this worker
    /// type; None: the standard AWS credential chain.
    pub aws_credentials_secret: Option<String>,
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

    fn duration(
        &self,
        key: &str,
        default: Duration,
        (max, max_text): (Duration, &str),
    ) -> Result<Duration, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some(s) => match parse_duration(&s) {
                Ok(d) if d.is_zero() => Err(self.bad(key, "it is zero")),
                Ok(d) if d > max => Err(self.bad(key, format!("`{s}` is more than {max_text}"))),
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

/// The history secret of a pool when the worker type names none: inside the namespace a
/// project's administrators may write (`secrets:set:project/<p>/*` on the community
/// deployment), for pools named `proj-<p>/…`; None for other pools.
pub fn default_history_secret(pool_id: &str) -> Option<String> {
    let (provisioner, _) = pool_id.split_once('/')?;
    let project = provisioner
        .strip_prefix("proj-")
        .filter(|p| !p.is_empty())?;
    Some(format!("project/{project}/tc-ami/deployments/{pool_id}"))
}

/// A name the secrets API takes: any non-empty name whose scopes (`secrets:get:<name>`,
/// `secrets:set:<name>`) are valid, i.e. printable ASCII; tc-ami also refuses a leading or
/// trailing space or `/`, which would only hide mistakes.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| (' '..='~').contains(&c))
        && !name.starts_with([' ', '/'])
        && !name.ends_with([' ', '/'])
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
    let build_timeout = r.duration("build_timeout", DEFAULT_BUILD_TIMEOUT, MAX_BUILD_TIMEOUT)?;
    let image_timeout = r.duration("image_timeout", DEFAULT_IMAGE_TIMEOUT, MAX_IMAGE_TIMEOUT)?;
    let regions = r.regions(&build_region)?;
    let share_with_accounts = r.accounts()?;
    let password = r.password()?;
    let (try_task, try_max_capacity) = r.try_settings(config_dir)?;
    let history_secret = r.history_secret(&worker_pool_id)?;
    let promote_to = r.promote_to(name)?;
    let config_files = r.config_files()?;
    let aws_credentials_secret = r.aws_credentials_secret()?;
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
        try_task,
        try_max_capacity,
        promote_to,
        history_secret,
        config_files: config_files.iter().map(|f| config_dir.join(f)).collect(),
        hook_image: r.string("hook_image")?,
        hook_task_queue: r.hook_task_queue()?,
        hook_config_repo: r.checked("hook_config_repo", crate::hook::check_config_repo)?,
        hook_config_ref: r.checked("hook_config_ref", crate::hook::check_config_ref)?,
        aws_credentials_secret,
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

    /// `hook_task_queue`: a worker pool id.
    fn hook_task_queue(&self) -> Result<Option<String>, ConfigError> {
        match self.string("hook_task_queue")? {
            Some(q) if !valid_worker_pool_id(&q) => {
                Err(self.bad("hook_task_queue", format!("`{q}` is not a task queue id")))
            }
            q => Ok(q),
        }
    }

    /// A string key that `check` accepts (its message, when not, is the error's).
    fn checked(
        &self,
        key: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(v) => match check(&v) {
                Ok(()) => Ok(Some(v)),
                Err(m) => Err(self.bad(key, m)),
            },
            None => Ok(None),
        }
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
        let expires_in = self.duration(
            "password_secret_expires_in",
            DEFAULT_SECRET_EXPIRES_IN,
            MAX_SECRET_EXPIRES_IN,
        )?;
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

impl Reader<'_> {
    /// `try_task` (resolved against the config directory) and `try_max_capacity`.
    fn try_settings(&self, config_dir: &Path) -> Result<(Option<PathBuf>, u64), ConfigError> {
        let task = self.string("try_task")?.map(|t| config_dir.join(t));
        let max = match self.table.get("try_max_capacity") {
            None => DEFAULT_TRY_MAX_CAPACITY,
            Some(toml::Value::Integer(n)) if *n >= 1 => *n as u64,
            Some(toml::Value::Integer(n)) => {
                return Err(self.bad(
                    "try_max_capacity",
                    format!("{n} would never start a worker"),
                ));
            }
            Some(v) => {
                return Err(self.bad(
                    "try_max_capacity",
                    format!("a {} is not a whole number", v.type_str()),
                ));
            }
        };
        Ok((task, max))
    }

    /// `promote_to`: a worker type name, not W itself (whether its file exists is
    /// [`crate::config_dir::load_worker_type`]'s check).
    fn promote_to(&self, own_name: &str) -> Result<Option<String>, ConfigError> {
        match self.string("promote_to")? {
            Some(to) if !valid_worker_type_name(&to) => Err(self.bad(
                "promote_to",
                format!("`{to}` is not a worker type name (letters, digits, `-` and `_`)"),
            )),
            Some(to) if to == own_name => {
                Err(self.bad("promote_to", format!("`{to}` is this worker type itself")))
            }
            other => Ok(other),
        }
    }

    /// `aws_credentials_secret`: a secret name, when set.
    fn aws_credentials_secret(&self) -> Result<Option<String>, ConfigError> {
        match self.string("aws_credentials_secret")? {
            Some(name) if valid_secret_name(&name) => Ok(Some(name)),
            Some(name) => Err(self.bad(
                "aws_credentials_secret",
                format!("`{name}` is not a secret name the secrets API takes"),
            )),
            None => Ok(None),
        }
    }

    /// `history_secret`, else the default for pools named `proj-<p>/…`; other pools must name
    /// one.
    fn history_secret(&self, pool_id: &str) -> Result<String, ConfigError> {
        match self.string("history_secret")? {
            Some(name) if valid_secret_name(&name) => Ok(name),
            Some(name) => Err(self.bad(
                "history_secret",
                format!("`{name}` is not a secret name the secrets API takes"),
            )),
            None => default_history_secret(pool_id).ok_or_else(|| ConfigError::Missing {
                file: self.file.clone(),
                key: "history_secret".into(),
                expected: format!(
                    "the Taskcluster secret for the deployment history of worker pool {pool_id}, a secret your client may read and write (only pools named proj-<project>/… have a default: project/<project>/tc-ami/deployments/<pool>)"
                ),
            }),
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
        assert_eq!(wt.try_task, None);
        assert_eq!(wt.try_max_capacity, DEFAULT_TRY_MAX_CAPACITY);
    }

    #[test]
    fn try_settings() {
        let wt = parse(&format!(
            "{GOOD}try_task = \"worker-types/try-task.yml\"\ntry_max_capacity = 4\n"
        ))
        .unwrap();
        assert_eq!(
            wt.try_task.as_deref(),
            Some(Path::new("/cfg/worker-types/try-task.yml"))
        );
        assert_eq!(wt.try_max_capacity, 4);
        assert!(message(&format!("{GOOD}try_max_capacity = 0\n")).contains("would never start"));
        assert!(message(&format!("{GOOD}try_task = 3\n")).contains("bad value for `try_task`"));
    }

    #[test]
    fn promote_to() {
        assert_eq!(parse(GOOD).unwrap().promote_to, None);
        let wt = parse(&format!("{GOOD}promote_to = \"servo-win2016-prod\"\n")).unwrap();
        assert_eq!(wt.promote_to.as_deref(), Some("servo-win2016-prod"));
        let bad = message(&format!("{GOOD}promote_to = \"a/b\"\n"));
        assert!(
            bad.contains("bad value for `promote_to`: `a/b` is not a worker type name"),
            "{bad}"
        );
        let own = message(&format!("{GOOD}promote_to = \"servo-win2016\"\n"));
        assert!(own.contains("is this worker type itself"), "{own}");
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
    fn every_duration_key_is_capped() {
        let keys = [
            ("build_timeout", "24h", "24h1s"),
            ("image_timeout", "24h", "1d1s"),
            ("password_secret_expires_in", "3650d", "3651d"),
        ];
        let extremes = [
            "100000000d",
            "18446744073709551615s",
            "99999999999999999999d",
            "213503982334601d",
        ];
        for (key, max, over) in keys {
            let with = |value: &str| {
                let text: String = GOOD
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{key} ")))
                    .chain(std::iter::once(format!("{key} = \"{value}\"").as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                parse(&text)
            };
            assert!(with(max).is_ok(), "{key} = {max}");
            for value in std::iter::once(over).chain(extremes) {
                let err = with(value).unwrap_err().to_string();
                assert!(
                    err.starts_with(&format!(
                        "worker-types/servo-win2016.toml: bad value for `{key}`: `{value}`"
                    )),
                    "{key} = {value}: {err}"
                );
                assert!(err.contains(&format!("to {max}")), "{err}");
                assert!(!err.contains('\n'), "{err}");
            }
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
    fn the_aws_credentials_secret_is_a_secret_name() {
        assert_eq!(parse(GOOD).unwrap().aws_credentials_secret, None);
        let wt = parse(&format!(
            "{GOOD}aws_credentials_secret = \"project/servo/aws\"\n"
        ))
        .unwrap();
        assert_eq!(
            wt.aws_credentials_secret.as_deref(),
            Some("project/servo/aws")
        );
        for bad in ["\"/lead\"", "\"trail/\"", "\"\"", "3"] {
            let err = parse(&format!("{GOOD}aws_credentials_secret = {bad}\n")).unwrap_err();
            assert!(
                err.to_string()
                    .contains("bad value for `aws_credentials_secret`"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_history_secret_defaults_into_the_project_namespace() {
        let wt = parse(GOOD).unwrap();
        assert_eq!(
            wt.history_secret,
            "project/servo/tc-ami/deployments/proj-servo/win2016"
        );
        let wt = parse(&format!("{GOOD}history_secret = \"ops/history/w\"\n")).unwrap();
        assert_eq!(wt.history_secret, "ops/history/w");
        assert_eq!(default_history_secret("proj-/w"), None);
        assert_eq!(default_history_secret("gecko-t/win"), None);
    }

    #[test]
    fn a_pool_outside_proj_needs_a_history_secret() {
        let text = GOOD.replace("proj-servo/win2016", "gecko-t/win2016");
        assert_eq!(
            message(&text),
            "worker-types/servo-win2016.toml: missing key `history_secret`: set it to the Taskcluster secret for the deployment history of worker pool gecko-t/win2016, a secret your client may read and write (only pools named proj-<project>/… have a default: project/<project>/tc-ami/deployments/<pool>)"
        );
        let wt = parse(&format!(
            "{text}history_secret = \"gecko/tc-ami/win2016\"\n"
        ))
        .unwrap();
        assert_eq!(wt.history_secret, "gecko/tc-ami/win2016");
    }

    #[test]
    fn history_secret_names_are_checked() {
        // As TOML writes them: a tab and a non-ASCII letter.
        for bad in ["/abs", "trailing/", " lead", "tab\\there", "caf\u{e9}"] {
            let err = message(&format!("{GOOD}history_secret = \"{bad}\"\n"));
            assert!(
                err.contains("bad value for `history_secret`"),
                "{bad}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(valid_secret_name("project/servo/a b*"));
        assert!(!valid_secret_name(""));
    }

    #[test]
    fn worker_type_names() {
        assert!(valid_worker_type_name("servo-win2016"));
        assert!(!valid_worker_type_name("../etc/passwd"));
        assert!(!valid_worker_type_name(""));
    }
}
