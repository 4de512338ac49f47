//! Registered cleanups, run in reverse (Packer's multistep): every step that creates something
//! registers how to remove it before it sends the create call — a sweep by name or tag, for a
//! call whose answer never arrives — and replaces that with the removal by id the moment the
//! answer arrives. Whatever ends the work (an error, an interrupt that surfaces as an error at
//! the next wait, a panic), what is still registered is removed, the newest first. Nothing here
//! knows what it removes: a cleanup is a description and an async closure, so instances,
//! images, security groups and worker pools alike can be registered.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

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
    /// `run(pace)` removes it, polling every `pace` when it has to wait.
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

/// The cleanups registered so far, in the order of registration.
#[derive(Default)]
pub struct Teardown<'a> {
    steps: Mutex<Vec<(Step, Undo<'a>)>>,
    next: Mutex<usize>,
}

impl<'a> Teardown<'a> {
    pub fn new() -> Teardown<'a> {
        Teardown::default()
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, Vec<(Step, Undo<'a>)>> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, undo: Undo<'a>) -> Step {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let step = Step(*next);
        *next += 1;
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
        run_in_reverse(chosen, pace).await
    }

    /// Runs every cleanup still registered, the newest first. Never cancelled.
    pub async fn run(&self, pace: Duration) -> Removal {
        let all = std::mem::take(&mut *self.steps());
        run_in_reverse(all, pace).await
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

async fn run_in_reverse(steps: Vec<(Step, Undo<'_>)>, pace: Duration) -> Removal {
    let mut removal = Removal::default();
    for (_, undo) in steps.into_iter().rev() {
        removal.add((undo.run)(pace).await);
    }
    removal
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
    use std::sync::Arc;

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
}
