//! Reading the config directory (local files, no network): the worker type files and
//! base-ami.txt, validated by [`crate::config`].

use std::path::Path;

use crate::config::{ConfigError, WorkerType, parse_worker_type, valid_worker_type_name};

/// The config directory's worker type names, sorted.
pub fn list_worker_types(config_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(config_dir.join("worker-types"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().and_then(|x| x.to_str()) == Some("toml"))
                .then(|| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                .flatten()
        })
        .collect();
    names.sort();
    names
}

/// Reads `worker-types/<name>.toml` and `base-ami.txt` from `config_dir` and validates them.
pub fn load_worker_type(config_dir: &Path, name: &str) -> Result<WorkerType, ConfigError> {
    if !valid_worker_type_name(name) {
        return Err(ConfigError::BadWorkerTypeName(name.to_string()));
    }
    let file = config_dir.join("worker-types").join(format!("{name}.toml"));
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let known = list_worker_types(config_dir);
            return Err(ConfigError::UnknownWorkerType {
                name: name.to_string(),
                path: file.display().to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        }
        Err(e) => {
            return Err(ConfigError::Unreadable {
                file: file.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    let base_ami_file = config_dir.join("base-ami.txt");
    let base_ami_txt = match std::fs::read_to_string(&base_ami_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ConfigError::Unreadable {
                file: base_ami_file.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    let wt = parse_worker_type(name, &file, &text, base_ami_txt.as_deref(), config_dir)?;
    if let Some(to) = &wt.promote_to {
        let target = config_dir.join("worker-types").join(format!("{to}.toml"));
        if !target.is_file() {
            return Err(ConfigError::BadValue {
                file: file.display().to_string(),
                key: "promote_to".into(),
                problem: format!(
                    "there is no worker type `{to}` (no file {})",
                    target.display()
                ),
                expected: "the name of another worker type of worker-types/".into(),
            });
        }
    }
    Ok(wt)
}
