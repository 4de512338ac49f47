//! Several worker types in one run (`status -w A -w B`, `build -w A -w B --jobs 2`): a
//! per-worker-type closure, at most `--jobs` at once, each failure its own.
//!
//! Output: each worker type's result (its human text) goes to stdout as a block, in the order
//! the worker types were given, as soon as it and every one before it are done; with `--json`,
//! one document `{"workerTypes": [...]}` at the end, an entry per worker type (its report, or
//! `{worker_type, error}`). What happens meanwhile (progress, notes, warnings) goes to stderr
//! at once, each line starting with the worker type (`Shell::labelled`): a build's progress is
//! what someone watches for an hour, so it is not held back, and a prefix keeps the lines of
//! builds running together apart (each line is one write, so lines do not mix). A failure is
//! said on stderr in its turn (`tc-ami: error: W: …`), and a last line names every worker type
//! that failed; the exit is 1 if any did.
//!
//! An interrupt stops them all: no worker type starts after it, and each one running stops as
//! it does alone (a build at its next step, removing what it made, see
//! `commands::changing`); the error is then the interrupt, naming what stopped.

use std::future::Future;

use anyhow::{Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::config_dir::{list_worker_types, load_worker_type};
use crate::text::one_line;

/// `--jobs` when not given: builds mostly wait, and the EC2 poll budget (`crate::budget`)
/// keeps their polls within one build's, so a few at once cost little; more would mostly wait
/// for the budget.
pub const DEFAULT_JOBS: usize = 4;

/// What one worker type came to: its human text and its JSON entry.
pub struct Done {
    pub human: String,
    pub json: Value,
    /// A failure that still has a report to show (`auto`'s): its block and document are shown
    /// as for a success, the error is said on stderr, and the worker type counts as failed.
    pub failed: Option<String>,
}

impl Done {
    /// A success: its human text and its JSON entry.
    pub fn ok(human: String, json: Value) -> Done {
        Done {
            human,
            json,
            failed: None,
        }
    }

    /// Whether the worker type succeeded.
    fn succeeded(&self) -> bool {
        self.failed.is_none()
    }
}

/// The worker types asked for: the `-w` given (each once, in order), else all of
/// `worker-types/`. Every one is loaded now, so that an unknown or broken worker type is a
/// one-line error before anything starts.
pub fn worker_types(ctx: &Ctx, given: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for name in given {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        names = list_worker_types(&ctx.config_dir);
    }
    if names.is_empty() {
        bail!(
            "no worker types in {}: add worker-types/<W>.toml or pass -C DIR",
            ctx.config_dir.join("worker-types").display()
        );
    }
    for name in &names {
        load_worker_type(&ctx.config_dir, name)?;
    }
    Ok(names)
}

/// One worker type's outcome, in the order given.
struct Slot {
    name: String,
    outcome: Option<Result<Done>>,
}

/// Runs `one(ctx, worker type)` for each of `names`, at most `jobs` at once, and prints as the
/// module says. `Ok(0)`: all succeeded; `Ok(1)`: some failed; an error only for an interrupt.
pub async fn run_each<F, Fut>(ctx: &Ctx, names: &[String], jobs: usize, one: F) -> Result<u8>
where
    F: Fn(Ctx, String) -> Fut,
    Fut: Future<Output = Result<Done>>,
{
    let several = names.len() > 1;
    let started = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let own = Ctx {
                config_dir: ctx.config_dir.clone(),
                shell: if several {
                    ctx.shell.labelled(name)
                } else {
                    ctx.shell
                },
                cancel: ctx.cancel.clone(),
            };
            // Checked when its turn comes, not when the stream is made.
            let cancel = ctx.cancel.clone();
            let run = one(own, name.clone());
            async move {
                match cancel.check() {
                    Ok(()) => (i, run.await),
                    Err(i_) => (i, Err(i_.into())),
                }
            }
        })
        .buffer_unordered(jobs.max(1));
    let mut started = std::pin::pin!(started);
    let mut slots: Vec<Slot> = names
        .iter()
        .map(|n| Slot {
            name: n.clone(),
            outcome: None,
        })
        .collect();
    let mut shown = 0;
    while let Some((i, outcome)) = started.next().await {
        slots[i].outcome = Some(outcome);
        while shown < slots.len() && slots[shown].outcome.is_some() {
            show(ctx, &slots[shown], shown > 0);
            shown += 1;
        }
    }
    finish(ctx, &slots)
}

/// Prints one worker type's block (stdout, without `--json`) or failure (stderr).
fn show(ctx: &Ctx, slot: &Slot, after_another: bool) {
    match &slot.outcome {
        Some(Ok(done)) => {
            if !ctx.shell.is_json() && !done.human.trim().is_empty() {
                if after_another {
                    println!();
                }
                println!("{}", done.human.trim_end());
            }
            if let Some(e) = &done.failed {
                ctx.shell.error(&format!("error: {}: {e}", slot.name));
            }
        }
        Some(Err(e)) => ctx.shell.error(&format!(
            "error: {}: {}",
            slot.name,
            one_line(&format!("{e:#}"))
        )),
        _ => {}
    }
}

/// The JSON document, the line naming the failures, and the exit.
fn finish(ctx: &Ctx, slots: &[Slot]) -> Result<u8> {
    let entries: Vec<Value> = slots
        .iter()
        .map(|s| match &s.outcome {
            Some(Ok(done)) => done.json.clone(),
            Some(Err(e)) => json!({"worker_type": s.name, "error": format!("{e:#}")}),
            None => json!({"worker_type": s.name, "error": "not run"}),
        })
        .collect();
    ctx.shell.json_doc(&json!({ "workerTypes": entries }));
    let failed: Vec<&str> = slots
        .iter()
        .filter(|s| !matches!(&s.outcome, Some(Ok(d)) if d.succeeded()))
        .map(|s| s.name.as_str())
        .collect();
    if let Some(i) = ctx.cancel.interrupted() {
        let done: Vec<&str> = slots
            .iter()
            .filter(|s| matches!(&s.outcome, Some(Ok(d)) if d.succeeded()))
            .map(|s| s.name.as_str())
            .collect();
        let finished = match done.as_slice() {
            [] => String::new(),
            done => format!("; finished first: {}", done.join(", ")),
        };
        return Err(anyhow::Error::new(i).context(format!(
            "stopped {} of {} worker types ({}){finished}",
            failed.len(),
            slots.len(),
            failed.join(", ")
        )));
    }
    if failed.is_empty() {
        return Ok(0);
    }
    if slots.len() > 1 {
        ctx.shell.error(&format!(
            "error: {} of {} worker types failed: {}",
            failed.len(),
            slots.len(),
            failed.join(", ")
        ));
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Cancel;
    use crate::shell::Shell;
    use std::sync::Mutex;
    use std::time::Duration;

    fn ctx() -> Ctx {
        Ctx {
            config_dir: ".".into(),
            shell: Shell::new(true, 0),
            cancel: Cancel::new(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_jobs_at_once_and_a_failure_is_its_own() {
        let ctx = ctx();
        let running = Mutex::new((0usize, 0usize));
        let ran = Mutex::new(Vec::new());
        let code = run_each(&ctx, &names(&["a", "b", "c", "d", "e"]), 2, |_, name| {
            let (running, ran) = (&running, &ran);
            async move {
                {
                    let mut r = running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                let ms = if name == "a" { 5000 } else { 1000 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.lock().unwrap().0 -= 1;
                ran.lock().unwrap().push(name.clone());
                if name == "b" {
                    bail!("b broke");
                }
                Ok(Done::ok(name.clone(), json!({"worker_type": name})))
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 1, "b failed");
        assert_eq!(running.lock().unwrap().1, 2, "never more than 2 at once");
        // a was slow: the others went on beside it, and every one ran.
        assert_eq!(*ran.lock().unwrap(), names(&["b", "c", "d", "e", "a"]));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_starts_after_an_interrupt() {
        let ctx = ctx();
        let cancel = ctx.cancel.clone();
        let started = Mutex::new(Vec::new());
        let err = run_each(&ctx, &names(&["a", "b", "c"]), 1, |c, name| {
            let (started, cancel) = (&started, cancel.clone());
            async move {
                started.lock().unwrap().push(name.clone());
                cancel.cancel(crate::interrupt::SIGINT);
                c.cancel.check()?;
                Ok(Done::ok(String::new(), json!({})))
            }
        })
        .await
        .unwrap_err();
        assert_eq!(*started.lock().unwrap(), names(&["a"]));
        assert!(
            err.downcast_ref::<crate::interrupt::Interrupted>()
                .is_some()
        );
        assert_eq!(
            format!("{err:#}"),
            "stopped 3 of 3 worker types (a, b, c): interrupted by Ctrl-C (SIGINT)"
        );
    }

    #[tokio::test]
    async fn all_succeed() {
        let ctx = ctx();
        let code = run_each(&ctx, &names(&["a"]), DEFAULT_JOBS, |_, name| async move {
            Ok(Done::ok(name.clone(), json!({"worker_type": name})))
        })
        .await
        .unwrap();
        assert_eq!(code, 0);
    }
}
