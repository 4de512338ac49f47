//! Ctrl-C and SIGTERM: the first one asks the running command to stop (tc-ami then exits 130
//! for SIGINT, 143 for SIGTERM).
//!
//! How a command stops depends on where it is (`commands::changing` carries it out):
//! - anywhere else, it is dropped where it waits: every network call and wait before a change
//!   is a future, so nothing changes;
//! - inside a [`Shield`] it goes on: a [`ShieldKind::Finish`] section (a push, which cannot be
//!   undone half-way) runs to its end; a [`ShieldKind::Own`] section (a build, copies,
//!   cleanup's deletions) stops itself at its next safe point and removes what it made.
//!
//! A second signal during a teardown says what would be left and how `tc-ami cleanup` removes
//! it (from every [`Cancel::on_stop_now`] report), then exits at once.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::shell::Shell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", signal_name(*.signal))]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    pub fn exit_code(&self) -> i32 {
        128 + self.signal
    }
}

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "Ctrl-C (SIGINT)",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

#[derive(Clone, Default)]
pub struct Cancel {
    token: CancellationToken,
    signal: Arc<AtomicI32>,
    state: Arc<State>,
}

/// What a shielded section does when an interrupt arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShieldKind {
    /// Runs to its end: it cannot be undone half-way (a push, its verification and its record).
    Finish,
    /// Stops itself at its next safe point and removes what it made (a build, copies).
    Own,
}

type Report = Box<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Default)]
struct State {
    next_id: AtomicU64,
    /// The sections running that an interrupt must not drop, oldest first.
    shields: Mutex<Vec<(u64, ShieldKind, String)>>,
    /// Told when a shield ends.
    released: Notify,
    /// What a stop now leaves in place on purpose (images built, copies made).
    stays: Mutex<Vec<String>>,
    /// What a stop now would leave half done: one report per teardown under way.
    reports: Mutex<Vec<(u64, Report)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A section that an interrupt does not drop, while this lives.
#[must_use = "the section is shielded while the guard lives"]
pub struct Shield {
    state: Arc<State>,
    id: u64,
}

impl Drop for Shield {
    fn drop(&mut self) {
        lock(&self.state.shields).retain(|(id, _, _)| *id != self.id);
        self.state.released.notify_one();
    }
}

/// A report registered with [`Cancel::on_stop_now`], while this lives.
#[must_use = "the report is registered while the guard lives"]
pub struct StopReport {
    state: Arc<State>,
    id: u64,
}

impl Drop for StopReport {
    fn drop(&mut self) {
        lock(&self.state.reports).retain(|(id, _)| *id != self.id);
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens for SIGINT and SIGTERM for the rest of the process; a second one is answered on
    /// `shell`: during a teardown, what it would leave and how to remove it, then the process
    /// exits; during a push, that it is being finished.
    pub fn install_signal_handlers(&self, shell: Shell) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => SIGINT,
                    _ = term.recv() => SIGTERM,
                };
                match me.interrupted() {
                    None => {
                        me.cancel(sig);
                        if let Some(text) = me.first_signal() {
                            shell.interject(&text);
                        }
                    }
                    Some(first) => {
                        if let Some(text) = me.second_signal() {
                            shell.interject(&format!("tc-ami: {text}"));
                            std::process::exit(first.exit_code());
                        }
                        if let Some(label) = me.finishing() {
                            shell.interject(&format!(
                                "tc-ami: already stopping: finishing {label}, which cannot be stopped half-way; please wait"
                            ));
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// What to say when the first signal arrives inside a shielded section (None: the
    /// command is simply dropped).
    pub fn first_signal(&self) -> Option<String> {
        if let Some(label) = self.finishing() {
            return Some(format!("stopping after {label}; it is finished first"));
        }
        self.shielded().map(|(_, label)| {
            format!(
                "stopping at the next safe point of {label}; press Ctrl-C again to stop at once and hear what is left"
            )
        })
    }

    /// What to say when a second signal stops tc-ami at once (None: it is finishing a push,
    /// and goes on).
    pub fn second_signal(&self) -> Option<String> {
        let reports: Vec<String> = lock(&self.state.reports)
            .iter()
            .filter_map(|(_, report)| report())
            .collect();
        if !reports.is_empty() {
            return Some(format!(
                "stopping now, before the teardown is done: {}",
                reports.join("; ")
            ));
        }
        if self.finishing().is_some() {
            return None;
        }
        Some("stopping now; nothing is left half done".to_string())
    }

    pub fn cancel(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }

    pub fn interrupted(&self) -> Option<Interrupted> {
        self.token.is_cancelled().then(|| Interrupted {
            signal: match self.signal.load(Ordering::SeqCst) {
                0 => SIGINT,
                s => s,
            },
        })
    }

    /// Err when an interrupt has arrived.
    pub fn check(&self) -> Result<(), Interrupted> {
        match self.interrupted() {
            Some(i) => Err(i),
            None => Ok(()),
        }
    }

    pub async fn cancelled(&self) -> Interrupted {
        self.token.cancelled().await;
        self.interrupted().unwrap_or(Interrupted { signal: SIGINT })
    }

    fn next_id(&self) -> u64 {
        self.state.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Shields `label` ("the push to worker pool …") from being dropped by an interrupt until
    /// the guard is dropped.
    pub fn shield(&self, kind: ShieldKind, label: impl Into<String>) -> Shield {
        let id = self.next_id();
        lock(&self.state.shields).push((id, kind, label.into()));
        Shield {
            state: self.state.clone(),
            id,
        }
    }

    /// The innermost shielded section running, if any.
    pub fn shielded(&self) -> Option<(ShieldKind, String)> {
        lock(&self.state.shields)
            .last()
            .map(|(_, kind, label)| (*kind, label.clone()))
    }

    /// The section being finished whatever happens ([`ShieldKind::Finish`]), if any.
    pub fn finishing(&self) -> Option<String> {
        lock(&self.state.shields)
            .iter()
            .rev()
            .find(|(_, kind, _)| *kind == ShieldKind::Finish)
            .map(|(_, _, label)| label.clone())
    }

    /// Returns when a shield ends (maybe spuriously: check [`Cancel::shielded`]).
    pub async fn released(&self) {
        self.state.released.notified().await
    }

    /// Something done that stays if the command stops now ("the images built stay (…)").
    pub fn stays(&self, what: impl Into<String>) {
        lock(&self.state.stays).push(what.into());
    }

    /// The message for a command stopped before it changed anything more.
    pub fn stopped_text(&self, i: Interrupted) -> String {
        let stays = lock(&self.state.stays);
        if stays.is_empty() {
            format!("{i}; nothing changed")
        } else {
            format!("{i}: {}; nothing else changed", stays.join("; "))
        }
    }

    /// Registers `report`: what a stop right now would leave half done and how to remove it
    /// (None: nothing), asked when a second signal arrives.
    pub fn on_stop_now(
        &self,
        report: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> StopReport {
        let id = self.next_id();
        lock(&self.state.reports).push((id, Box::new(report)));
        StopReport {
            state: self.state.clone(),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shields_and_reports_shape_what_a_second_signal_does() {
        let cancel = Cancel::new();
        assert_eq!(
            cancel.second_signal().as_deref(),
            Some("stopping now; nothing is left half done")
        );
        let push = cancel.shield(ShieldKind::Finish, "the push to worker pool p/w");
        let copies = cancel.shield(ShieldKind::Own, "the copies");
        assert_eq!(
            cancel.shielded(),
            Some((ShieldKind::Own, "the copies".to_string()))
        );
        assert_eq!(cancel.second_signal(), None, "a push is finished");
        assert_eq!(
            cancel.first_signal().as_deref(),
            Some("stopping after the push to worker pool p/w; it is finished first")
        );
        let report = cancel.on_stop_now(|| Some("LEFT BEHIND: image ami-1".into()));
        let quiet = cancel.on_stop_now(|| None);
        assert_eq!(
            cancel.second_signal().as_deref(),
            Some("stopping now, before the teardown is done: LEFT BEHIND: image ami-1")
        );
        drop((report, quiet, copies));
        assert_eq!(
            cancel.finishing().as_deref(),
            Some("the push to worker pool p/w")
        );
        drop(push);
        assert_eq!(cancel.shielded(), None);
        assert_eq!(cancel.first_signal(), None);
        let _deleting = cancel.shield(ShieldKind::Own, "the deletions");
        assert_eq!(
            cancel.first_signal().as_deref(),
            Some(
                "stopping at the next safe point of the deletions; press Ctrl-C again to stop at once and hear what is left"
            )
        );
    }

    #[test]
    fn the_stopped_text_says_what_stays() {
        let cancel = Cancel::new();
        cancel.cancel(SIGTERM);
        let i = cancel.check().unwrap_err();
        assert_eq!(
            cancel.stopped_text(i),
            "interrupted by SIGTERM; nothing changed"
        );
        cancel.stays("the images built stay (us-west-2 ami-1)");
        assert_eq!(
            cancel.stopped_text(i),
            "interrupted by SIGTERM: the images built stay (us-west-2 ami-1); nothing else changed"
        );
    }
}
