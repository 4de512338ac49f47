//! One file per command: turn arguments into calls of the pure modules and adapters, print.

use std::path::PathBuf;

use crate::cli::Command;
use crate::interrupt::{Cancel, Interrupted};

pub mod base_ami;
pub mod build;
pub mod change;
pub mod cleanup;
pub mod deploy;
pub mod diff;
pub mod history;
pub mod pin;
pub mod promote;
pub mod rollback;
pub mod status;

pub struct Ctx {
    pub config_dir: PathBuf,
    pub json: bool,
    pub cancel: Cancel,
}

impl Ctx {
    /// Prints the result: the JSON document with --json, else the human text, on stdout.
    pub fn emit(&self, human: &str, json: &serde_json::Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        } else if !human.is_empty() {
            println!("{human}");
        }
    }
}

pub enum Outcome {
    /// Finished with this exit code (0, or 2 for "diff found changes").
    Done(u8),
    /// Stopped by a signal; the message says what was cleaned up.
    Interrupted(Interrupted, String),
    Failed(anyhow::Error),
}

impl From<anyhow::Result<u8>> for Outcome {
    fn from(r: anyhow::Result<u8>) -> Self {
        match r {
            Ok(code) => Outcome::Done(code),
            Err(e) => {
                let interrupted = e.downcast_ref::<Interrupted>().copied().or_else(|| {
                    e.downcast_ref::<crate::build::BuildFailed>()
                        .and_then(|b| b.interrupted())
                });
                match interrupted {
                    Some(i) => Outcome::Interrupted(i, format!("{e:#}")),
                    None => Outcome::Failed(e),
                }
            }
        }
    }
}

pub async fn run(ctx: &Ctx, command: Command) -> Outcome {
    match command {
        Command::BaseAmi { worker_type } => read_only(ctx, base_ami::run(ctx, &worker_type)).await,
        Command::Build { worker_type } => build::run(ctx, &worker_type).await.into(),
        Command::Diff {
            worker_type,
            images,
            unified,
        } => read_only(ctx, diff::run(ctx, &worker_type, &images, unified)).await,
        Command::Deploy {
            worker_type,
            images,
            dry_run,
            yes,
        } => deploy::run(ctx, &worker_type, &images, dry_run, yes)
            .await
            .into(),
        Command::Rollback {
            worker_type,
            to,
            dry_run,
            yes,
        } => rollback::run(ctx, &worker_type, to.as_deref(), dry_run, yes)
            .await
            .into(),
        Command::History { worker_type } => read_only(ctx, history::run(ctx, &worker_type)).await,
        Command::Promote {
            from,
            to,
            dry_run,
            yes,
        } => promote::run(ctx, &from, &to, dry_run, yes).await.into(),
        // Its only write comes after the last await and is atomic: an interrupt stops it cleanly.
        Command::Pin {
            worker_type,
            check,
            force,
        } => read_only(ctx, pin::run(ctx, worker_type.as_deref(), check, force)).await,
        Command::Status { worker_type } => {
            read_only(ctx, status::run(ctx, worker_type.as_deref())).await
        }
        Command::Cleanup {
            worker_type,
            keep,
            dry_run,
            yes,
        } => cleanup::run(ctx, worker_type.as_deref(), keep, dry_run, yes)
            .await
            .into(),
    }
}

/// Runs a command that changes nothing: an interrupt simply stops it.
async fn read_only(ctx: &Ctx, f: impl std::future::Future<Output = anyhow::Result<u8>>) -> Outcome {
    tokio::select! {
        r = f => r.into(),
        i = ctx.cancel.cancelled() => Outcome::Interrupted(i, format!("{i}")),
    }
}
