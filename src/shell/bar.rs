//! A progress bar on stderr: a bar with a count and a message on a terminal, plain timestamped
//! lines otherwise (CI logs, pipes), one each time the message changes.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar {
    started: Instant,
    bar: Option<ProgressBar>,
    last: Mutex<String>,
}

impl Bar {
    /// Made by [`super::Shell::bar`].
    pub(super) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("[{elapsed:>4}] {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_secs(1));
            bar
        });
        Bar {
            started: Instant::now(),
            bar,
            last: Mutex::new(String::new()),
        }
    }

    /// `done` of `total`, and what that means; off a terminal, a line when `text` changed.
    pub fn update(&self, done: u64, total: u64, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_string());
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last != text {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            eprintln!(
                "{now} [{:>7.1}s] {text}",
                self.started.elapsed().as_secs_f64()
            );
            *last = text.to_string();
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
