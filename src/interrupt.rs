//! Ctrl-C and SIGTERM: the first one asks the running command to stop at its next safe point
//! (a build then removes what it created); tc-ami then exits 130 (SIGINT) or 143 (SIGTERM).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

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
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens for SIGINT and SIGTERM for the rest of the process; a second one is answered on
    /// `shell`.
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
                if me.token.is_cancelled() {
                    shell.error(
                        "already stopping; finishing what must not be left half done, please wait",
                    );
                } else {
                    me.cancel(sig);
                }
            }
        });
        Ok(())
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
}
