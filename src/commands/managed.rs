//! Pools managed as code (tc-admin) for `diff` and `deploy`: the warning and the refusal, and
//! the files that declare the pool's image ids (`--update-file`, or the worker type's
//! `config_files`): read before anything else, their change shown after the pool diff, written
//! only after the push is verified, atomically, every other byte kept.
//!
//! The rules are [`crate::managed`]'s; this file reads, prints and writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::config::WorkerType;
use crate::diff::{DEFAULT_CONTEXT, use_color};
use crate::managed::{
    Replaced, TC_ADMIN_MARKER, file_diff, image_replacements, pool_is_managed, replace_image_ids,
};
use crate::pool::definition;
use crate::shell::Shell;

/// What the command line says about the files and managed pools.
#[derive(Debug, Clone, Default)]
pub struct FilesAsked {
    /// `--update-file PATH`, repeatable; none: the worker type's `config_files`.
    pub update_files: Vec<PathBuf>,
    /// `--managed-ok`: deploy to a tc-admin-managed pool without updating any file.
    pub managed_ok: bool,
}

/// A file that declares image ids, as read before the review.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
}

/// The files to update: `--update-file`, else the worker type's `config_files`. Each must be
/// readable UTF-8 text; read now, before anything is built or pushed.
pub fn read_files(wt: &WorkerType, asked: &FilesAsked) -> Result<Vec<ConfigFile>> {
    let (paths, from) = if asked.update_files.is_empty() {
        (
            &wt.config_files,
            format!("config_files in {}", wt.file.display()),
        )
    } else {
        (&asked.update_files, "--update-file".to_string())
    };
    let mut files: Vec<ConfigFile> = Vec::new();
    for path in paths {
        if files.iter().any(|f| &f.path == path) {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} ({from})", path.display()))?;
        files.push(ConfigFile {
            path: path.clone(),
            text,
        });
    }
    Ok(files)
}

/// Warns when the pool's description marks it as managed by tc-admin; with `refuse` (a deploy
/// that would push), refuses unless files are to be updated or `--managed-ok` was given.
pub fn check_managed(
    shell: &Shell,
    wt: &WorkerType,
    live: &Value,
    files: &[ConfigFile],
    asked: &FilesAsked,
    refuse: bool,
) -> Result<()> {
    if !pool_is_managed(&definition(live), None) {
        return Ok(());
    }
    let pool = &wt.worker_pool_id;
    let why = format!(
        "worker pool {pool} is managed by tc-admin (its description starts with `{TC_ADMIN_MARKER}`): its next `tc-admin apply` puts back the image ids its configuration declares"
    );
    if refuse && files.is_empty() && !asked.managed_ok {
        bail!(
            "refusing to deploy: {why}; pass --update-file PATH (the file that declares them, e.g. config/worker-pools.yml) to update it too, set config_files in {}, or pass --managed-ok to deploy anyway",
            wt.file.display()
        );
    }
    let what = if !files.is_empty() {
        format!("updating {}", paths_text(files))
    } else if asked.managed_ok {
        "no file is updated (--managed-ok)".to_string()
    } else {
        "no file is updated; `tc-ami deploy` refuses it without --update-file PATH, config_files or --managed-ok".to_string()
    };
    shell.warn(&format!("{why}; {what}"));
    Ok(())
}

fn paths_text(files: &[ConfigFile]) -> String {
    files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One file's change: the old ids replaced by the new ones.
#[derive(Debug, Clone)]
pub struct FileChange {
    pub file: ConfigFile,
    pub replaced: Replaced,
}

impl FileChange {
    fn changed(&self) -> bool {
        !self.replaced.changes.is_empty()
    }
}

/// What a change does to the files: the ids replaced (old → new), and each file's change.
#[derive(Debug, Clone, Default)]
pub struct FilePlan {
    pub ids: BTreeMap<String, String>,
    pub changes: Vec<FileChange>,
}

impl FilePlan {
    /// Each file with the old image ids of the pool definition `before` replaced by the new
    /// ones of `images` (per region).
    pub fn new(
        files: &[ConfigFile],
        before: &Value,
        images: &BTreeMap<String, String>,
    ) -> Result<FilePlan> {
        if files.is_empty() {
            return Ok(FilePlan::default());
        }
        let ids = image_replacements(before, images).map_err(|e| {
            anyhow!(
                "{e}, so tc-ami cannot tell which to write in {}; edit it by hand",
                paths_text(files)
            )
        })?;
        let changes = files
            .iter()
            .map(|f| FileChange {
                file: f.clone(),
                replaced: replace_image_ids(&f.text, &ids),
            })
            .collect();
        Ok(FilePlan { ids, changes })
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Shows each file's change (after the pool diff), and warns about a file that holds none
    /// of the old ids (it is left as it is).
    pub fn show(&self, shell: &Shell) {
        let no_color = std::env::var("NO_COLOR").ok();
        for c in &self.changes {
            let path = c.file.path.display().to_string();
            if c.changed() {
                shell.document(|terminal| {
                    file_diff(
                        &path,
                        &c.file.text,
                        &c.replaced.text,
                        DEFAULT_CONTEXT,
                        use_color(terminal, no_color.as_deref()),
                    )
                });
            } else if !self.ids.is_empty() {
                let old: Vec<&str> = self.ids.keys().map(String::as_str).collect();
                shell.warn(&format!(
                    "{path} holds none of the old image ids ({}); it is left as it is",
                    old.join(", ")
                ));
            }
        }
    }

    /// The files for `--json`: each with its replacements and whether it was written.
    pub fn to_json(&self, written: bool) -> Value {
        let files: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                json!({
                    "path": c.file.path,
                    "changes": c.replaced.changes,
                    "written": written && c.changed(),
                })
            })
            .collect();
        json!(files)
    }

    /// Writes every changed file (after the push was verified), each atomically with its
    /// permissions kept, refusing one that changed since it was read. Every file is tried; the
    /// error names each one that was not written and what to replace by hand.
    pub fn write(&self, shell: &Shell) -> Result<()> {
        let mut failed = Vec::new();
        for c in self.changes.iter().filter(|c| c.changed()) {
            let path = &c.file.path;
            let changed = "since tc-ami read it, so it was not written";
            match crate::files::write_in_place(path, &c.file.text, &c.replaced.text, changed) {
                Ok(()) => shell.note(&format!(
                    "updated {}: {} image id(s) replaced",
                    path.display(),
                    c.replaced.changes.len()
                )),
                Err(e) => failed.push(format!("{e:#}; replace {} by hand", by_hand(c))),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{}", failed.join("; ")))
        }
    }
}

fn by_hand(c: &FileChange) -> String {
    c.replaced
        .changes
        .iter()
        .map(|x| format!("{} by {} on line {}", x.old, x.new, x.line))
        .collect::<Vec<_>>()
        .join(", ")
}
