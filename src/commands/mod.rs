//! One file per command: turn arguments into calls of the pure modules, the adapters and the
//! lifecycle layer ([`crate::ops`]), and print through the [`Shell`]. The dispatch from the
//! parsed command line is [`crate::cli::run`].

use std::path::PathBuf;

use crate::interrupt::{Cancel, Interrupted};
use crate::shell::Shell;

pub mod base_ami;
pub mod build;
pub mod change;
pub mod cleanup;
pub mod deploy;
pub mod diff;
pub mod history;
pub mod managed;
pub mod pin;
pub mod promote;
pub mod rollback;
pub mod rollout;
pub mod status;

/// What every command gets: where the config is, the output channel, and the interrupt.
pub struct Ctx {
    pub config_dir: PathBuf,
    pub shell: Shell,
    pub cancel: Cancel,
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
                    e.downcast_ref::<crate::ops::build::BuildFailed>()
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

/// Runs a command that changes nothing: an interrupt simply stops it.
pub async fn read_only(
    ctx: &Ctx,
    f: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> Outcome {
    tokio::select! {
        r = f => r.into(),
        i = ctx.cancel.cancelled() => Outcome::Interrupted(i, format!("{i}")),
    }
}
