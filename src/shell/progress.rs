//! Progress on stderr: a spinner with the stage and elapsed time on a terminal, plain
//! timestamped lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::duration::{format_duration, format_elapsed};

pub struct Progress {
    /// `<worker type>: ` on every line when several run at once (no spinner then).
    prefix: String,
    started: Instant,
    bar: Option<ProgressBar>,
    stage: Mutex<Option<(String, Instant)>>,
    /// When the step shown on the spinner began (see [`Progress::step`]).
    step_started: Arc<Mutex<Option<Instant>>>,
}

impl Progress {
    /// Made by [`super::Shell::progress`].
    pub(super) fn new(label: Option<&str>) -> Self {
        let step_started: Arc<Mutex<Option<Instant>>> = Arc::default();
        let spinner = std::io::stderr().is_terminal() && label.is_none();
        let bar = spinner.then(|| {
            let bar = ProgressBar::new_spinner();
            let since = step_started.clone();
            // The step's own elapsed time, redrawn on every tick: ` (1m3s)`.
            let step_elapsed = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let started = *since.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = started {
                    let secs = Duration::from_secs(t.elapsed().as_secs());
                    let _ = write!(w, " ({})", format_duration(secs));
                }
            };
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}{step_elapsed}")
                    .map(|s| s.with_key("step_elapsed", step_elapsed))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            prefix: label.map(|l| format!("{l}: ")).unwrap_or_default(),
            started: Instant::now(),
            bar,
            stage: Mutex::new(None),
            step_started,
        }
    }

    fn line(&self, text: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let line = format!(
            "{now} [{:>7.1}s] {}{text}",
            self.started.elapsed().as_secs_f64(),
            self.prefix
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// A new stage begins; the previous one, if any, is reported done.
    pub fn stage(&self, text: &str) {
        self.end_stage();
        *self.step_started.lock().unwrap_or_else(|e| e.into_inner()) = None;
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

    /// A step within the stage, reported by someone else (the guest's `TC-AMI-STEP`): a line,
    /// and on a terminal the spinner's text, with the step's elapsed time, until the next step
    /// or stage.
    pub fn step(&self, text: &str) {
        self.line(text);
        if let Some(bar) = &self.bar {
            *self.step_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            bar.set_message(text.to_string());
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
