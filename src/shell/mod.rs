//! The one output channel (cargo's `Shell` is the model). A command's result goes to stdout:
//! its human text, or with `--json` one JSON document and nothing else. Everything else goes to
//! stderr: progress, notes, warnings, questions, errors, and the log of every AWS and
//! Taskcluster call at `-v` (debug) and `-vv` (trace), which never holds a secret.

mod bar;
mod progress;

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;
use tracing_subscriber::EnvFilter;

pub use bar::Bar;
pub use progress::Progress;

#[derive(Debug, Clone, Copy, Default)]
pub struct Shell {
    json: bool,
    verbosity: u8,
    /// A step of a larger command (`auto` runs deploy): its result and documents go to stderr,
    /// its JSON document nowhere, so that stdout carries only the larger command's.
    nested: bool,
    /// When several worker types run at once: the one this shell speaks for, at the start of
    /// each line it writes on stderr (see [`Shell::labelled`]).
    label: Option<&'static str>,
}

impl Shell {
    pub fn new(json: bool, verbosity: u8) -> Shell {
        Shell {
            json,
            verbosity,
            nested: false,
            label: None,
        }
    }

    /// The shell for a step of a larger command: what the step would put on stdout (its result,
    /// its documents: a diff, a table) goes to stderr, and its JSON document nowhere; the
    /// larger command prints its own result.
    pub fn nested(self) -> Shell {
        Shell {
            nested: true,
            ..self
        }
    }

    /// The same shell for one of several worker types running at once: its notes, warnings and
    /// progress lines start with `<label>: `, and progress is plain lines (one spinner per
    /// worker type would overwrite each other). The label lives as long as the process (a few
    /// worker type names per run).
    pub fn labelled(&self, label: &str) -> Shell {
        Shell {
            label: Some(Box::leak(label.to_string().into_boxed_str())),
            ..*self
        }
    }

    /// `<label>: ` when labelled, else nothing.
    fn prefix(&self) -> String {
        self.label.map(|l| format!("{l}: ")).unwrap_or_default()
    }

    /// Sends `tracing`'s events to stderr: warnings by default, tc-ami's debug events (each AWS
    /// and Taskcluster call, with its duration) at `-v`, everything at `-vv`; `RUST_LOG` wins.
    pub fn init_logging(&self) {
        let default_filter = match self.verbosity {
            0 => "warn",
            1 => "warn,tc_ami=debug",
            _ => "info,tc_ami=trace",
        };
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let color = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .with_env_filter(filter)
            .with_target(false)
            .init();
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// The command's result: `human` on stdout, or with `--json` the document `doc`.
    pub fn result(&self, human: &str, doc: &Value) {
        if self.nested {
            if !human.is_empty() {
                eprintln!("{human}");
            }
        } else if self.json {
            self.json_doc(doc);
        } else if !human.is_empty() {
            println!("{human}");
        }
    }

    /// The JSON document, with `--json` only (the human text was shown on the way).
    pub fn json_doc(&self, doc: &Value) {
        if self.json && !self.nested {
            println!(
                "{}",
                serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string())
            );
        }
    }

    /// Text that is the output without `--json` (a diff, a plan): on stdout, or on stderr when
    /// stdout carries the JSON document. `render` learns whether that stream is a terminal.
    pub fn document(&self, render: impl FnOnce(bool) -> String) {
        if self.json || self.nested {
            eprint!("{}", render(std::io::stderr().is_terminal()));
        } else {
            print!("{}", render(std::io::stdout().is_terminal()));
        }
    }

    /// A line for the person at the terminal (stderr).
    pub fn note(&self, text: &str) {
        eprintln!("{}{text}", self.prefix());
    }

    /// A warning for the person at the terminal (stderr): `tc-ami: warning: …`.
    pub fn warn(&self, text: &str) {
        eprintln!("tc-ami: warning: {}{text}", self.prefix());
    }

    /// A line shown only at `-v` or more.
    pub fn verbose(&self, text: impl FnOnce() -> String) {
        if self.verbosity > 0 {
            eprintln!("{}{}", self.prefix(), text());
        }
    }

    /// A line said while a spinner may be drawing on stderr (an interrupt's notice): on a
    /// terminal, the spinner's line is cleared first so the two do not run together.
    pub fn interject(&self, text: &str) {
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{text}");
    }

    /// The final error line: `tc-ami: error: …` (or `tc-ami: …` for an interrupt).
    pub fn error(&self, text: &str) {
        eprintln!("tc-ami: {text}");
    }

    /// A spinner with the stage on a terminal, timestamped lines otherwise (stderr).
    pub fn progress(&self) -> Progress {
        Progress::new(self.label)
    }

    /// A bar with a count on a terminal, a timestamped line per change otherwise (stderr).
    pub fn bar(&self) -> Bar {
        Bar::new()
    }

    /// Asks on stderr and reads one line from stdin, on a thread of its own: the future can be
    /// dropped (Ctrl-C at the prompt) while the read waits, and then ends the prompt's line. The
    /// terminal's mode is never changed (a line is read as typed, echoed by the terminal), so
    /// there is nothing to restore; the thread goes with the process.
    pub async fn ask(&self, question: &str) -> std::io::Result<String> {
        eprint!("{question} ");
        let _ = std::io::stderr().flush();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut answer = String::new();
            let read = std::io::stdin().lock().read_line(&mut answer);
            let _ = tx.send(read.map(|_| answer));
        });
        let mut unanswered = Unanswered(true);
        let answer = rx
            .await
            .map_err(|_| std::io::Error::other("the prompt's reader stopped"))?;
        unanswered.0 = false;
        answer
    }
}

/// Ends the prompt's line when the question is dropped unanswered, so that what follows (the
/// interrupt's message, the shell's prompt) starts on a line of its own.
struct Unanswered(bool);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.0 {
            eprintln!();
        }
    }
}
