//! Registered cleanups, run in reverse (Packer's multistep): every step that creates something
//! registers how to remove it before it sends the create call — a sweep by name or tag, for a
//! call whose answer never arrives — and replaces that with the removal by id the moment the
//! answer arrives. Whatever ends the work (an error, an interrupt that surfaces as an error at
//! the next wait, a panic), what is still registered is removed, the newest first. Nothing here
//! knows what it removes: a cleanup is a description and an async closure, so instances,
//! images, security groups and worker pools alike can be registered.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::interrupt::{Cancel, StopReport};

/// What cleanups removed, and what they could not (to be removed by hand).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Removal {
    /// `instance i-…`, `image ami-… in us-east-1 and 1 snapshot(s)`.
    pub removed: Vec<String>,
    /// `security group sg-… in us-west-2 (DependencyViolation: …)`.
    pub left: Vec<String>,
}

impl Removal {
    /// One thing removed (`Ok`), or left with the error.
    pub fn of(removed: String, left: String, result: anyhow::Result<()>) -> Removal {
        match result {
            Ok(()) => Removal {
                removed: vec![removed],
                left: vec![],
            },
            Err(e) => Removal {
                removed: vec![],
                left: vec![format!("{left} ({e:#})")],
            },
        }
    }

    pub fn add(&mut self, other: Removal) {
        self.removed.extend(other.removed);
        self.left.extend(other.left);
    }

    /// A sweep: removes each thing `listed` found, one after the other; if the listing failed,
    /// `what` is left (`what (could not list: …)`).
    pub async fn each<T, Fut>(
        listed: anyhow::Result<Vec<T>>,
        what: &str,
        remove: impl Fn(T) -> Fut,
    ) -> Removal
    where
        Fut: Future<Output = Removal>,
    {
        match listed {
            Ok(found) => {
                let mut removal = Removal::default();
                for thing in found {
                    removal.add(remove(thing).await);
                }
                removal
            }
            Err(e) => Removal {
                removed: vec![],
                left: vec![format!("{what} (could not list: {e})")],
            },
        }
    }
}

type Run<'a> = Box<dyn FnOnce(Duration) -> BoxFuture<'a, Removal> + Send + 'a>;

/// One registered cleanup.
pub struct Undo<'a> {
    what: String,
    run: Run<'a>,
}

impl<'a> Undo<'a> {
    /// `what` names what it removes (for the list of what a dropped teardown leaves);
    /// `run(pace)` removes it; when it has to wait, it polls on the schedule
    /// ([`crate::wait::poll_interval`]) whose first-minute interval is `pace`.
    pub fn new<F, Fut>(what: impl Into<String>, run: F) -> Undo<'a>
    where
        F: FnOnce(Duration) -> Fut + Send + 'a,
        Fut: Future<Output = Removal> + Send + 'a,
    {
        Undo {
            what: what.into(),
            run: Box::new(move |pace| run(pace).boxed()),
        }
    }
}

/// A registered cleanup's place, to replace it (the id has arrived), run it early or keep
/// what it would remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Step(usize);

/// What is registered and not yet removed (waiting, or being removed), by step.
type Left = Arc<Mutex<Vec<(Step, String)>>>;

/// The cleanups registered so far, in the order of registration.
#[derive(Default)]
pub struct Teardown<'a> {
    steps: Mutex<Vec<(Step, Undo<'a>)>>,
    next: Mutex<usize>,
    left: Left,
    _report: Option<StopReport>,
}

fn lock_left(left: &Left) -> std::sync::MutexGuard<'_, Vec<(Step, String)>> {
    left.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Teardown<'a> {
    pub fn new() -> Teardown<'a> {
        Teardown::default()
    }

    /// A teardown that a second Ctrl-C can stop half-way: it then says what is not removed
    /// yet (registered, or being removed) and `remedy` (how `tc-ami cleanup` removes it).
    pub fn watched(cancel: &Cancel, remedy: impl Into<String>) -> Teardown<'a> {
        let left = Left::default();
        let remedy = remedy.into();
        let report = {
            let left = left.clone();
            cancel.on_stop_now(move || {
                let left = lock_left(&left);
                (!left.is_empty()).then(|| {
                    let what: Vec<&str> = left.iter().map(|(_, w)| w.as_str()).collect();
                    format!("LEFT BEHIND: {}; {remedy}", what.join(", "))
                })
            })
        };
        Teardown {
            steps: Mutex::default(),
            next: Mutex::default(),
            left,
            _report: Some(report),
        }
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, Vec<(Step, Undo<'a>)>> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, undo: Undo<'a>) -> Step {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let step = Step(*next);
        *next += 1;
        lock_left(&self.left).push((step, undo.what.clone()));
        self.steps().push((step, undo));
        step
    }

    /// Creates something: registers `sweep` (how to find and remove it if the answer never
    /// arrives), sends `create`, and as soon as it answers puts `by_id` (the removal of what it
    /// answered) in the sweep's place.
    pub async fn create<T>(
        &self,
        sweep: Undo<'a>,
        create: impl Future<Output = anyhow::Result<T>>,
        by_id: impl FnOnce(&T) -> Undo<'a>,
    ) -> anyhow::Result<(T, Step)> {
        let step = self.register(sweep);
        let created = create.await?;
        self.replace(step, by_id(&created));
        Ok((created, step))
    }

    /// Puts `undo` in the place of `step` (a create call answered: remove by id, not sweep).
    pub fn replace(&self, step: Step, undo: Undo<'a>) {
        {
            let mut left = lock_left(&self.left);
            match left.iter_mut().find(|(s, _)| *s == step) {
                Some(slot) => slot.1 = undo.what.clone(),
                None => left.push((step, undo.what.clone())),
            }
        }
        let mut steps = self.steps();
        match steps.iter_mut().find(|(s, _)| *s == step) {
            Some(slot) => slot.1 = undo,
            None => steps.push((step, undo)),
        }
    }

    /// Forgets these cleanups: what they would remove is to stay (the images of a build that
    /// succeeded, an instance meant to outlive the command).
    pub fn keep(&self, steps: &[Step]) {
        self.steps().retain(|(s, _)| !steps.contains(s));
        lock_left(&self.left).retain(|(s, _)| !steps.contains(s));
    }

    /// Whether `step` is still registered (not run, kept or forgotten yet).
    pub fn is_registered(&self, step: Step) -> bool {
        self.steps().iter().any(|(s, _)| *s == step)
    }

    /// What the registered cleanups would remove, oldest first.
    pub fn pending(&self) -> Vec<String> {
        self.steps().iter().map(|(_, u)| u.what.clone()).collect()
    }

    /// Runs these cleanups now, the newest first, and forgets them. Never cancelled.
    pub async fn run_steps(&self, steps: &[Step], pace: Duration) -> Removal {
        let chosen: Vec<(Step, Undo<'a>)> = {
            let mut all = self.steps();
            let (chosen, rest) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(s, _)| steps.contains(s));
            *all = rest;
            chosen
        };
        run_in_reverse(chosen, pace, &self.left).await
    }

    /// Runs every cleanup still registered, the newest first. Never cancelled.
    pub async fn run(&self, pace: Duration) -> Removal {
        let all = std::mem::take(&mut *self.steps());
        run_in_reverse(all, pace, &self.left).await
    }

    /// Runs `work`; if it fails, `on_failure` hears why and then every cleanup still
    /// registered runs before the error is returned with what they did. If it panics, they
    /// run before the panic goes on.
    pub async fn undo_on_failure<T>(
        &self,
        pace: Duration,
        work: impl Future<Output = anyhow::Result<T>>,
        on_failure: impl FnOnce(&anyhow::Error),
    ) -> Result<T, (anyhow::Error, Removal)> {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                on_failure(&e);
                let removal = self.run(pace).await;
                Err((e, removal))
            }
            Err(panic) => {
                let removal = self.run(pace).await;
                if !removal.left.is_empty() {
                    tracing::error!("LEFT BEHIND, remove by hand: {}", removal.left.join(", "));
                }
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// Runs each cleanup, the newest first; one that panics is reported as left (a bug in it must
/// not keep the others from running).
async fn run_in_reverse(steps: Vec<(Step, Undo<'_>)>, pace: Duration, left: &Left) -> Removal {
    let mut removal = Removal::default();
    for (step, undo) in steps.into_iter().rev() {
        let what = undo.what;
        match AssertUnwindSafe((undo.run)(pace)).catch_unwind().await {
            Ok(done) => removal.add(done),
            Err(panic) => removal.left.push(format!(
                "{what} (its removal panicked: {})",
                panic_text(&*panic)
            )),
        }
        // Done with, removed or not: what it could not remove is in the removal's `left`.
        lock_left(left).retain(|(s, _)| *s != step);
    }
    removal
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let pending = self.pending();
        if !pending.is_empty() {
            // Only when the work was dropped half-way (its future cancelled): say what stays.
            tracing::error!(
                "stopped before removing what it created; LEFT BEHIND, remove by hand: {}",
                pending.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(log: &Arc<Mutex<Vec<String>>>, name: &str, fail: bool) -> Undo<'static> {
        let log = log.clone();
        let name = name.to_string();
        Undo::new(name.clone(), move |_| async move {
            log.lock().unwrap().push(name.clone());
            let result = if fail {
                Err(anyhow::anyhow!("boom"))
            } else {
                Ok(())
            };
            Removal::of(name.clone(), name, result)
        })
    }

    #[tokio::test]
    async fn runs_in_reverse_with_replacements_and_early_steps() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let td = Teardown::new();
        let a = td.register(recording(&log, "sweep a", false));
        let b = td.register(recording(&log, "b", true));
        let c = td.register(recording(&log, "c", false));
        let d = td.register(recording(&log, "d", false));
        td.replace(a, recording(&log, "a", false));
        td.keep(&[d]);
        assert!(!td.is_registered(d));
        assert!(td.is_registered(b));
        let early = td.run_steps(&[b, c], Duration::ZERO).await;
        assert_eq!(early.removed, ["c"]);
        assert_eq!(early.left, ["b (boom)"]);
        assert_eq!(td.pending(), ["a"]);
        let rest = td.run(Duration::ZERO).await;
        assert_eq!(rest.removed, ["a"]);
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);
        assert!(td.pending().is_empty());
    }

    #[tokio::test]
    async fn a_create_keeps_its_sweep_until_it_answers() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let td = Teardown::new();
        let (id, _) = td
            .create(recording(&log, "sweep a", false), async { Ok("a") }, |id| {
                recording(&log, id, false)
            })
            .await
            .unwrap();
        assert_eq!(id, "a");
        let lost = td
            .create(
                recording(&log, "sweep b", false),
                async { Err::<&str, _>(anyhow::anyhow!("no answer")) },
                |id| recording(&log, id, false),
            )
            .await;
        assert!(lost.is_err());
        assert_eq!(td.pending(), ["a", "sweep b"]);
        td.run(Duration::ZERO).await;
        assert_eq!(*log.lock().unwrap(), ["sweep b", "a"]);
    }

    #[tokio::test]
    async fn failure_and_panic_both_run_the_cleanups() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let td = Teardown::new();
        let failed = td
            .undo_on_failure(
                Duration::ZERO,
                async {
                    td.register(recording(&log, "x", false));
                    td.register(recording(&log, "y", false));
                    anyhow::bail!("step failed");
                    #[allow(unreachable_code)]
                    Ok(())
                },
                |e| assert_eq!(e.to_string(), "step failed"),
            )
            .await;
        let (e, removal) = failed.unwrap_err();
        assert_eq!(e.to_string(), "step failed");
        assert_eq!(removal.removed, ["y", "x"]);

        let td = Teardown::new();
        let panicked = AssertUnwindSafe(td.undo_on_failure(
            Duration::ZERO,
            async {
                td.register(recording(&log, "z", false));
                panic!("bug");
                #[allow(unreachable_code)]
                Ok(())
            },
            |_| {},
        ))
        .catch_unwind()
        .await;
        assert!(panicked.is_err());
        assert_eq!(log.lock().unwrap().last().map(String::as_str), Some("z"));
        assert!(td.pending().is_empty());
    }

    #[tokio::test]
    async fn a_second_signal_hears_what_is_not_removed_yet() {
        let cancel = Cancel::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let td = Teardown::watched(&cancel, "`tc-ami cleanup -w w` removes them");
        let a = td.register(recording(&log, "sweep a", false));
        let b = td.register(recording(&log, "b", false));
        let c = td.register(recording(&log, "c", false));
        td.replace(a, recording(&log, "image a", false));
        td.keep(&[c]);
        assert_eq!(
            cancel.second_signal().as_deref(),
            Some(
                "stopping now, before the teardown is done: LEFT BEHIND: image a, b; `tc-ami cleanup -w w` removes them"
            )
        );
        // While b is being removed, a (not yet) and b (not done) are left.
        let seen = Arc::new(Mutex::new(None));
        let (c2, s2) = (cancel.clone(), seen.clone());
        td.replace(
            b,
            Undo::new("b", move |_| async move {
                *s2.lock().unwrap() = c2.second_signal();
                Removal::of("b".into(), "b".into(), Ok(()))
            }),
        );
        td.run(Duration::ZERO).await;
        assert!(
            seen.lock()
                .unwrap()
                .as_deref()
                .is_some_and(|s| s.contains("LEFT BEHIND: image a, b;")),
            "{seen:?}"
        );
        assert_eq!(
            cancel.second_signal().as_deref(),
            Some("stopping now; nothing is left half done")
        );
    }

    #[tokio::test]
    async fn a_panicking_cleanup_is_left_and_the_others_still_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let td = Teardown::new();
        td.register(recording(&log, "a", false));
        td.register(Undo::new("b", |_| async {
            panic!("bug in b's removal");
            #[allow(unreachable_code)]
            Removal::default()
        }));
        td.register(recording(&log, "c", false));
        let removal = td.run(Duration::ZERO).await;
        assert_eq!(removal.removed, ["c", "a"]);
        assert_eq!(
            removal.left,
            ["b (its removal panicked: bug in b's removal)"]
        );
        assert_eq!(*log.lock().unwrap(), ["c", "a"]);
    }
}
