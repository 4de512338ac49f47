//! One file per command: turn arguments into calls of the pure modules, the adapters and the
//! lifecycle layer ([`crate::ops`]), and print through the [`Shell`]. The dispatch from the
//! parsed command line is [`crate::cli::run`].

use std::path::PathBuf;

use crate::interrupt::{Cancel, Interrupted};
use crate::shell::Shell;

pub mod auto;
pub mod base_ami;
pub mod build;
pub mod change;
pub mod cleanup;
pub mod debug_instance;
pub mod deploy;
pub mod diff;
pub mod each;
pub mod history;
pub mod hook;
pub mod managed;
pub mod pin;
pub mod promote;
pub mod rollback;
pub mod rollout;
pub mod status;
pub mod try_cmd;

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
        i = ctx.cancel.cancelled() => Outcome::Interrupted(i, format!("{i}; nothing changed")),
    }
}

/// Runs a command that changes things (build, deploy, rollback, promote, cleanup). An interrupt
/// drops it where it waits (every network call and wait is a future), unless it is inside a
/// [`crate::interrupt::Shield`]: a push is finished, and a build, copies or deletions stop
/// themselves and remove what they made; the command is dropped at its next wait after the
/// shield ends. The message says what changed: nothing, what stays, or that the shielded
/// section was finished first.
pub async fn changing(
    ctx: &Ctx,
    f: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> Outcome {
    let cancel = &ctx.cancel;
    let mut f = std::pin::pin!(f);
    // The interrupt, and the shielded section it arrived in.
    let mut seen: Option<(Interrupted, Option<String>)> = None;
    loop {
        tokio::select! {
            biased;
            r = &mut f => {
                return match (Outcome::from(r), seen) {
                    (Outcome::Done(_), Some((i, during))) => {
                        let text = match during {
                            Some(label) => format!("{i} during {label}; it was finished first"),
                            None => cancel.stopped_text(i),
                        };
                        Outcome::Interrupted(i, text)
                    }
                    // A bare interrupt from inside (a check between two steps): it stopped
                    // before changing anything more.
                    (Outcome::Interrupted(i, text), _) if text == i.to_string() => {
                        Outcome::Interrupted(i, cancel.stopped_text(i))
                    }
                    (outcome, _) => outcome,
                };
            }
            i = cancel.cancelled(), if seen.is_none() => {
                seen = Some((i, cancel.shielded().map(|(_, label)| label)));
            }
            _ = cancel.released(), if seen.is_some() => {}
        }
        // The shielded section the interrupt arrived in has ended: what follows it is dropped.
        if let Some((i, during)) = &seen
            && cancel.shielded().is_none()
        {
            let text = match during {
                Some(label) => format!("{i} during {label}; it was finished first"),
                None => cancel.stopped_text(*i),
            };
            return Outcome::Interrupted(*i, text);
        }
    }
}
