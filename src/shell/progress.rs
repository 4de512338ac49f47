//! Progress on stderr: a spinner with the stage and elapsed time on a terminal, plain
//! timestamped lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::duration::format_elapsed;

pub struct Progress {
    started: Instant,
    bar: Option<ProgressBar>,
    stage: Mutex<Option<(String, Instant)>>,
}

impl Progress {
    /// Made by [`super::Shell::progress`].
    pub(super) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            started: Instant::now(),
            bar,
            stage: Mutex::new(None),
        }
    }

    fn line(&self, text: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let line = format!(
            "{now} [{:>7.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// A new stage begins; the previous one, if any, is reported done.
    pub fn stage(&self, text: &str) {
        self.end_stage();
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_string());
        }
        self.line(text);
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((text.to_string(), Instant::now()));
    }

    fn end_stage(&self) {
        let prev = self.stage.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((text, t)) = prev
            && t.elapsed() >= Duration::from_secs(2)
        {
            self.line(&format!(
                "  done in {}: {text}",
                format_elapsed(t.elapsed())
            ));
        }
    }

    /// A line that is not a stage.
    pub fn note(&self, text: &str) {
        self.line(text);
    }

    pub fn finish(&self) {
        self.end_stage();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
