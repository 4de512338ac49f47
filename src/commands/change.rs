//! What `diff`, `deploy`, `rollback` and `promote` share: finding the images, copying them to
//! the regions that lack them, the change to the pool, showing it, asking, pushing, verifying
//! and recording.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Result, anyhow, bail};
use futures::future::try_join_all;
use serde_json::{Value, json};

use crate::base_ami::choose_base_ami;
use crate::commands::Ctx;
use crate::commands::managed::FilePlan;
use crate::config::WorkerType;
use crate::diff::{json_patch, unified_diff, use_color};
use crate::ec2::{Ec2, has_code};
use crate::history::{Deployment, History, Kind};
use crate::image_arg::ImageArgs;
use crate::interrupt::{Cancel, ShieldKind};
use crate::model::codes::{IMAGE_UNUSABLE, NO_SUCH_IMAGE};
use crate::model::{Image, tags};
use crate::ops::build::leftover_text;
use crate::ops::deployments::{HistorySecret, Loaded};
use crate::ops::images::{ImageCopy, ImageMarks, copy_image_to};
use crate::ops::teardown::Teardown;
use crate::pool::{
    Patched, definition, patch_pool, unique_deployment_id, update_payload, verify_pushed,
};
use crate::shell::Shell;
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};
use crate::wait::POLL_INTERVAL;

/// The pool a command works on, fetched live, and the clients to work on it.
pub struct Target {
    pub wt: WorkerType,
    pub env: TcEnv,
    pub wm: WorkerManagerApi,
    /// The pool as the service returned it.
    pub live: Value,
    /// The regions of its launch configs.
    pub regions: Vec<String>,
    pub ec2: Ec2,
    pub secrets: SecretsApi,
}

impl Target {
    /// Loads the worker type and fetches its pool: a missing pool, bad credentials or a missing
    /// scope stop a command here, before it builds or copies anything.
    pub async fn load(ctx: &Ctx, worker_type: &str) -> Result<Target> {
        let wt = crate::config_dir::load_worker_type(&ctx.config_dir, worker_type)?;
        let env = TcEnv::from_env(true)?;
        let wm = WorkerManagerApi::new(&env)?;
        let live = wm.get_pool(&wt.worker_pool_id).await?;
        let regions = crate::pool::pool_regions(&wt.worker_pool_id, &definition(&live))?;
        let ec2 = crate::ops::aws_credentials::ec2_for(&wt).await?;
        let secrets = SecretsApi::new(&env)?;
        Ok(Target {
            wt,
            env,
            wm,
            live,
            regions,
            ec2,
            secrets,
        })
    }

    /// The pool's history secret.
    pub fn history(&self) -> HistorySecret<'_> {
        HistorySecret::new(
            &self.secrets,
            &self.wt.worker_pool_id,
            &self.wt.history_secret,
        )
    }

    /// Who pushes, for the history.
    pub fn who(&self) -> String {
        self.env.identity()
    }
}

/// The change to one pool, computed against the live definition.
pub struct Change {
    pub pool_id: String,
    pub root_url: String,
    /// The definition as fetched, without server-only fields.
    pub before: Value,
    pub patched: Patched,
    pub images: BTreeMap<String, String>,
    /// Whether the pool's description marks it as managed by tc-admin.
    pub managed: bool,
}

impl Change {
    /// `history` is the pool's deployment history: the new deploymentId is one it has never
    /// recorded, nor one the pool carries (a rollback within the same second).
    pub fn new(
        pool_id: &str,
        root_url: &str,
        live: &Value,
        images: BTreeMap<String, String>,
        history: &History,
    ) -> Result<Change> {
        let before = definition(live);
        let managed = crate::managed::pool_is_managed(&before, None);
        let now = chrono::Utc::now();
        let current = crate::pool::deployment_ids(&before);
        let patched = patch_pool(pool_id, &before, &images, |image| {
            unique_deployment_id(image, now, |id| {
                current.iter().any(|c| c == id) || history.deployment_ids().any(|h| h == id)
            })
        })?;
        Ok(Change {
            pool_id: pool_id.to_string(),
            root_url: root_url.to_string(),
            before,
            patched,
            images,
            managed,
        })
    }

    pub fn diff_text(&self, context: usize, color: bool) -> String {
        let body = unified_diff(
            &self.before,
            &self.patched.after,
            &self.pool_id,
            context,
            color,
        );
        if body.is_empty() {
            return body;
        }
        format!(
            "diff tc-ami {}/api/worker-manager/v1/worker-pool/{}\n{body}",
            self.root_url, self.pool_id
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "workerPoolId": self.pool_id,
            "rootUrl": self.root_url,
            "changed": self.patched.changed,
            "managed": self.managed,
            "images": self.images,
            "deploymentId": self.patched.deployment_id,
            "patch": json_patch(&self.before, &self.patched.after),
            "before": self.before,
            "after": self.patched.after,
        })
    }

    pub fn images_text(&self) -> String {
        self.images
            .iter()
            .map(|(r, i)| format!("{r} {i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Prints the diff: on stdout, or on stderr when stdout carries the JSON document.
    pub fn show(&self, ctx: &Ctx, context: usize) {
        let no_color = std::env::var("NO_COLOR").ok();
        ctx.shell
            .document(|terminal| self.diff_text(context, use_color(terminal, no_color.as_deref())));
    }
}

/// The images to deploy, per pool region, from `--image` arguments.
pub async fn resolve_images(
    ec2: &Ec2,
    wt: &WorkerType,
    pool_id: &str,
    regions: &[String],
    args: &ImageArgs,
) -> Result<BTreeMap<String, String>> {
    let mut images = BTreeMap::new();
    for (region, ami) in &args.by_region {
        if !regions.contains(region) {
            bail!(
                "--image {region}={ami}: worker pool {pool_id} has no launch configs in {region} (its regions: {})",
                regions.join(", ")
            );
        }
        images.insert(region.clone(), ami.clone());
    }
    let mut named: Option<(String, String)> =
        images.iter().next().map(|(r, i)| (r.clone(), i.clone()));
    if let Some(source) = &args.source {
        let found = ec2
            .describe_images(&wt.build_region, std::slice::from_ref(source))
            .await;
        match found {
            Ok(list) if !list.is_empty() => {}
            Err(e) if !has_code(&e, NO_SUCH_IMAGE) => {
                return Err(e);
            }
            _ => bail!(
                "image {source} does not exist in {} (the build region of {}); for an image of another region write --image REGION={source}",
                wt.build_region,
                wt.name
            ),
        }
        if regions.contains(&wt.build_region) {
            images
                .entry(wt.build_region.clone())
                .or_insert_with(|| source.clone());
        }
        named = Some((wt.build_region.clone(), source.clone()));
    }
    // In the pool's other regions, the copies of the given image: a build's copies, and those
    // deploy made, carry the source's name. Regions without one stay missing: deploy copies
    // the image there ([`copy_missing`]); diff says which region lacks one.
    let missing: Vec<&String> = regions
        .iter()
        .filter(|r| !images.contains_key(*r))
        .collect();
    if let (Some((region, id)), false) = (named, missing.is_empty()) {
        let name = match ec2
            .describe_images(&region, std::slice::from_ref(&id))
            .await
        {
            Ok(list) => list.into_iter().next().map(|i| i.name),
            Err(e) if has_code(&e, NO_SUCH_IMAGE) => None,
            Err(e) => return Err(e),
        };
        if let Some(name) = name {
            let copies = try_join_all(missing.iter().map(|r| async {
                let found = ec2.find_own_images_by_name(r, &name).await?;
                Ok::<_, anyhow::Error>((
                    (*r).clone(),
                    choose_base_ami(&found, "*").map(|i| i.id.clone()),
                ))
            }))
            .await?;
            images.extend(copies.into_iter().filter_map(|(r, c)| c.map(|c| (r, c))));
        }
    }
    Ok(images)
}

/// Copies an image to the `regions` that have none in `images` (all at once), and adds the
/// copies to `images`. The source is the build region's image if there is one. On failure or
/// interrupt, the copies it started are removed, as a build removes its own. With `dry_run`,
/// copies nothing and returns the regions that would get a copy.
pub async fn copy_missing(
    ctx: &Ctx,
    ec2: &Ec2,
    wt: &WorkerType,
    images: &mut BTreeMap<String, String>,
    regions: &[String],
    dry_run: bool,
) -> Result<Vec<String>> {
    let missing: Vec<String> = regions
        .iter()
        .filter(|r| !images.contains_key(*r))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let (source_region, source_id) = images
        .get_key_value(&wt.build_region)
        .or_else(|| images.iter().next())
        .map(|(r, i)| (r.clone(), i.clone()))
        .ok_or_else(|| anyhow!("no image to copy to {}", missing.join(", ")))?;
    if dry_run {
        return Ok(missing);
    }
    let source = ec2
        .describe_images(&source_region, std::slice::from_ref(&source_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("image {source_id} does not exist in {source_region}"))?;
    let copies = copy_to(ctx, ec2, wt, &source_region, &source, &missing).await?;
    images.extend(copies);
    Ok(missing)
}

/// Copies `source` to `dests`; what it started is removed if that fails.
async fn copy_to(
    ctx: &Ctx,
    ec2: &Ec2,
    wt: &WorkerType,
    source_region: &str,
    source: &Image,
    dests: &[String],
) -> Result<BTreeMap<String, String>> {
    let tags: Vec<(String, String)> = source.tags.clone().into_iter().collect();
    let description = format!("{} copied from {source_region} by tc-ami", source.name);
    let token = format!(
        "{}-{}",
        source.id,
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    let copy = ImageCopy {
        source_region,
        image_id: &source.id,
        // The copies share the source's name: only what this run started is swept.
        marks: ImageMarks {
            name: source.name.clone(),
            build_id: None,
        },
        description: &description,
        tags: &tags,
        token_prefix: &token,
        timeout: wt.image_timeout,
    };
    let progress = ctx.shell.progress();
    progress.stage(&format!(
        "copying {} from {source_region} to {}",
        source.id,
        dests.join(", ")
    ));
    let td = Teardown::watched(&ctx.cancel, copies_remedy(wt, source));
    // The copies stop themselves when interrupted, and are removed.
    let copying_shield = ctx.cancel.shield(ShieldKind::Own, "the copies");
    let copying = copy_image_to(ec2, &td, &ctx.cancel, &progress, &copy, dests);
    let result = td.undo_on_failure(POLL_INTERVAL, copying, |_| {}).await;
    progress.finish();
    drop(copying_shield);
    match result {
        Ok((copies, steps)) => {
            td.keep(&steps);
            ctx.cancel.stays(format!(
                "the copies made stay ({})",
                copies
                    .iter()
                    .map(|(r, i)| format!("{r} {i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Ok(copies)
        }
        Err((e, removal)) => {
            let removed = if !removal.left.is_empty() {
                leftover_text(&removal.left)
            } else if removal.removed.is_empty() {
                String::new()
            } else {
                format!(
                    "; removed the copies it started ({})",
                    removal.removed.join(", ")
                )
            };
            Err(e.context(format!(
                "copying {} to {}{removed}",
                source.id,
                dests.join(", ")
            )))
        }
    }
}

/// How `tc-ami cleanup` removes copies of `source` that a second Ctrl-C left: they carry the
/// source's tags, so the cleanup of the worker type that built it finds them in its regions.
fn copies_remedy(wt: &WorkerType, source: &Image) -> String {
    match source.tags.get(tags::WORKER_TYPE) {
        Some(built_by) if *built_by == wt.name => format!(
            "`tc-ami cleanup -w {built_by}` removes them once they are too old to belong to a build in progress"
        ),
        Some(built_by) => format!(
            "`tc-ami cleanup -w {built_by}` removes those in the regions of {built_by} once they are too old to belong to a build in progress; deregister the others by hand"
        ),
        None => "deregister them by hand (the source was not built by tc-ami)".to_string(),
    }
}

/// The newest available image tc-ami built for `wt` in each region.
pub async fn newest_built_images(
    ec2: &Ec2,
    wt: &WorkerType,
    regions: &[String],
) -> Result<BTreeMap<String, String>> {
    let found = try_join_all(regions.iter().map(|r| async move {
        let images = ec2
            .find_own_images_by_tag(r, tags::WORKER_TYPE, &wt.name)
            .await?;
        Ok::<_, anyhow::Error>((
            r.clone(),
            choose_base_ami(&images, "*").map(|i| i.id.clone()),
        ))
    }))
    .await?;
    let mut out = BTreeMap::new();
    for (region, image) in found {
        match image {
            Some(id) => {
                out.insert(region, id);
            }
            None => bail!(
                "no image built by tc-ami for {} in {region}: run `tc-ami build -w {}`, or name images with --image",
                wt.name,
                wt.name
            ),
        }
    }
    Ok(out)
}

/// Every image exists and is available in its region (all regions asked at once).
pub async fn check_available(ec2: &Ec2, images: &BTreeMap<String, String>) -> Result<()> {
    try_join_all(images.iter().map(|(region, id)| async move {
        let found = match ec2.describe_images(region, std::slice::from_ref(id)).await {
            Ok(list) => list.into_iter().next(),
            Err(e) if has_code(&e, IMAGE_UNUSABLE) => None,
            Err(e) => return Err(e),
        };
        match found {
            None => Err(anyhow!(
                "image {id} does not exist in {region} (deregistered, or in another region)"
            )),
            Some(i) if !i.is_available() => Err(anyhow!(
                "image {id} in {region} is {}, not available",
                i.state
            )),
            Some(_) => Ok(()),
        }
    }))
    .await?;
    Ok(())
}

/// Refuses to change anything without `--yes` or a person at a terminal who says yes.
pub fn refuse_without_terminal(yes: bool, what: &str) -> Result<()> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    bail!(
        "refusing to {what} without confirmation: stdin is not a terminal; pass --yes to go ahead, or --dry-run to only look"
    )
}

/// Asks on the terminal whether to do `action` ("push this change to …"), unless `yes`. An
/// interrupt at the prompt drops the question at once.
pub async fn confirm(shell: &Shell, yes: bool, action: &str) -> Result<()> {
    refuse_without_terminal(yes, action)?;
    if yes {
        return Ok(());
    }
    let mut question = action.to_string();
    if let Some(first) = question.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    let answer = shell.ask(&format!("{question}? [y/N]")).await?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("nothing changed: the answer was not yes")
    }
}

/// What became of a push that went out.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// The pool, fetched again (as here), holds what was pushed.
    Verified(Value),
    /// It could not be shown to (why): changed again at once, or not readable.
    Unverified(String),
}

/// Fetches the pool and stops unless it is still `expected` (the definition a diff was
/// computed against): someone else's change is never overwritten. Returns the pool as fetched.
async fn unchanged_since(
    wm: &WorkerManagerApi,
    pool_id: &str,
    expected: &Value,
    since: &str,
    then: &str,
) -> Result<Value> {
    let now = wm.get_pool(pool_id).await?;
    if definition(&now) != *expected {
        bail!(
            "worker pool {pool_id} changed at {} {since} (lastModified {}); {then}: run the command again to review the new change",
            wm.root_url(),
            now["lastModified"].as_str().unwrap_or("unknown")
        );
    }
    Ok(now)
}

/// Checks that the pool is still what the diff was computed against: someone else's change is
/// never overwritten.
pub async fn recheck(wm: &WorkerManagerApi, change: &Change) -> Result<()> {
    unchanged_since(
        wm,
        &change.pool_id,
        &change.before,
        "after the diff was computed",
        "nothing was pushed",
    )
    .await
    .map(|_| ())
}

/// Pushes the change (after [`recheck`]): updates the pool, fetches it again and checks it
/// holds what was pushed. An error means nothing was pushed; after the update, the outcome
/// says whether the pool was seen to hold the push.
pub async fn push(wm: &WorkerManagerApi, change: &Change) -> Result<Pushed> {
    let pool_id = &change.pool_id;
    wm.update_pool(pool_id, &update_payload(&change.patched.after))
        .await?;
    Ok(match wm.get_pool(pool_id).await {
        Ok(after) => match verify_pushed(&change.patched.after, &after) {
            Ok(()) => Pushed::Verified(after),
            Err(e) => Pushed::Unverified(e),
        },
        Err(e) => Pushed::Unverified(format!("{e:#}")),
    })
}

/// What [`prove_access`] comes before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Before {
    /// A build or a copy (the pool was read when the command started).
    BuildOrCopy,
    /// A try of the change's images (the pool was read for the diff).
    Try,
    /// The push (the pool was read for the diff).
    Push,
}

/// Proves, before anything is built, copied or pushed and with no lasting effect, that the
/// client may do what a deploy does at its end: write the pool's history (written back
/// unchanged, or a probe set and removed where there is none yet) and update the pool (its
/// definition posted back unchanged, which worker-manager accepts and which changes nothing,
/// only after checking that it is still `expected`). A missing scope is one line naming it.
pub async fn prove_access(
    env: &TcEnv,
    wm: &WorkerManagerApi,
    store: &HistorySecret<'_>,
    expected: &Value,
    before: Before,
) -> Result<()> {
    let (since, then) = match before {
        Before::BuildOrCopy => ("since it was read", "nothing was built, copied or pushed"),
        Before::Try => ("after the diff was computed", "nothing was tried or pushed"),
        Before::Push => ("after the diff was computed", "nothing was pushed"),
    };
    let pool_id = &store.pool_id;
    store.prove_writable().await.map_err(|e| {
        env.refusal(
            e,
            None,
            &format!(
                "record the deployments of worker pool {pool_id} in the secret {}",
                store.name
            ),
            then,
        )
    })?;
    let now = unchanged_since(wm, pool_id, expected, since, then).await?;
    let payload = update_payload(&now);
    let answer = wm
        .update_pool(pool_id, &payload)
        .await
        .map_err(|e| env.refusal(e, None, &format!("update worker pool {pool_id}"), then))?;
    if let Err(e) = verify_pushed(&payload, &answer) {
        tracing::warn!(
            "the update that proves the scopes for worker pool {pool_id} came back different: {e}"
        );
    }
    Ok(())
}

/// Before a try of the change (which takes a while and makes a temporary pool), proves the
/// scopes of the push as [`prove_access`] does before a build or a copy, unless that was done
/// already or nothing will be tried (`tries` false, nothing to push, a dry run). Returns
/// whether the scopes are proven.
pub async fn prove_before_try(
    to: &PushTo<'_>,
    change: &Change,
    tries: bool,
    dry_run: bool,
) -> Result<bool> {
    if to.proven || !tries || dry_run || !change.patched.changed {
        return Ok(to.proven);
    }
    prove_access(to.env, to.wm, to.store, &change.before, Before::Try).await?;
    Ok(true)
}

/// Reads the pool's deployment history, as deploy, rollback and promote do before anything
/// else: a client that may not read it stops here, with one line naming the scope.
pub async fn load_history(ctx: &Ctx, env: &TcEnv, store: &HistorySecret<'_>) -> Result<Loaded> {
    let loaded = store.load().await.map_err(|e| {
        env.refusal(
            e,
            None,
            &format!(
                "read the deployment history of worker pool {} in the secret {}",
                store.pool_id, store.name
            ),
            "nothing was built, copied or pushed",
        )
    })?;
    if let Some(note) = loaded.legacy_note(store) {
        ctx.shell.note(&note);
    }
    Ok(loaded)
}

/// What the history records about a change, besides its images.
pub struct RecordAs {
    pub kind: Kind,
    pub worker_type: String,
    pub undoes: Option<u64>,
    pub undoes_outside_change: bool,
    pub from: Option<String>,
}

/// Where a change is pushed and recorded, and who pushes it.
pub struct PushTo<'a> {
    pub env: &'a TcEnv,
    pub wm: &'a WorkerManagerApi,
    /// The pool's history secret, and the history as loaded before anything started.
    pub store: &'a HistorySecret<'a>,
    pub loaded: &'a Loaded,
    /// The Taskcluster clientId, for the history.
    pub who: &'a str,
    /// Whether [`prove_access`] already ran (before a build, a copy or a try).
    pub proven: bool,
}

/// What the person asked for: `--dry-run`, `--yes`.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub dry_run: bool,
    pub yes: bool,
}

/// The end of deploy, rollback and promote: shows the change, then (unless nothing changes or
/// it is a dry run) asks, proves the scopes (unless done already), pushes, verifies and
/// appends the deployment to the pool's history. Prints the JSON document with --json.
/// Returns whether it pushed.
pub async fn review_and_push(
    ctx: &Ctx,
    to: &PushTo<'_>,
    change: &Change,
    record: RecordAs,
    asked: Asked,
) -> Result<bool> {
    let no_files = FilePlan::default();
    review_and_push_with_files(ctx, to, change, record, asked, &no_files)
        .await
        .map(|verified| verified.is_some())
}

/// [`review_and_push`], and the files that declare the pool's image ids: their change is shown
/// after the pool diff, and they are written once the push is verified (not on a dry run, not
/// when the push fails or cannot be verified). Returns the pool as read back after the push,
/// holding what was pushed (None: nothing was pushed).
pub async fn review_and_push_with_files(
    ctx: &Ctx,
    to: &PushTo<'_>,
    change: &Change,
    record: RecordAs,
    asked: Asked,
    files: &FilePlan,
) -> Result<Option<Value>> {
    change.show(ctx, crate::diff::DEFAULT_CONTEXT);
    files.show(&ctx.shell);
    let mut report = change.to_json();
    let verified = if !change.patched.changed {
        ctx.shell.note(&format!(
            "worker pool {} is up to date: {}; nothing to push",
            change.pool_id,
            change.images_text()
        ));
        None
    } else if asked.dry_run {
        ctx.shell.note(&format!(
            "dry run: nothing pushed to worker pool {}",
            change.pool_id
        ));
        None
    } else {
        confirm(
            &ctx.shell,
            asked.yes,
            &format!(
                "push this change to worker pool {} at {}",
                change.pool_id, change.root_url
            ),
        )
        .await?;
        let done = match record.kind {
            Kind::Deploy => "deployed",
            Kind::Rollback => "rolled back",
            Kind::Promote => "promoted",
            Kind::Try => "tried",
        };
        if !to.proven {
            prove_access(to.env, to.wm, to.store, &change.before, Before::Push).await?;
        }
        let verified = push_and_record(ctx, to, change, record, files).await?;
        ctx.shell.note(&format!(
            "{done} to worker pool {}: {}{}",
            change.pool_id,
            change.images_text(),
            change
                .patched
                .deployment_id
                .as_deref()
                .map(|d| format!(" (deploymentId {d})"))
                .unwrap_or_default()
        ));
        Some(verified)
    };
    report["pushed"] = Value::Bool(verified.is_some());
    if !files.is_empty() {
        report["files"] = files.to_json(verified.is_some());
    }
    ctx.shell.json_doc(&report);
    Ok(verified)
}

/// Pushes the change and appends it to the pool's history, also when the push could not be
/// verified (the record says so): the pool may have changed, and the history must know. Until
/// the push starts, an interrupt stops it with nothing changed; from then on, the push, its
/// verification and the record are finished (they cannot be undone half-way). Returns the pool
/// as read back, holding what was pushed.
async fn push_and_record(
    ctx: &Ctx,
    to: &PushTo<'_>,
    change: &Change,
    record: RecordAs,
    files: &FilePlan,
) -> Result<Value> {
    // Read again even right after the scope check: its update came in between, and someone
    // else's change after it must stop the push too (tests/scopes.rs).
    recheck(to.wm, change).await?;
    let _pushing = start_push(&ctx.cancel, &change.pool_id)?;
    ctx.shell.note(&format!(
        "pushing to worker pool {} (updateWorkerPool, its verification, the history record)",
        change.pool_id
    ));
    let pushed = push(to.wm, change).await?;
    // The files only once the pool is seen to hold the push; a file that cannot be written does
    // not stop the record.
    let written = match pushed {
        Pushed::Verified(_) => files.write(&ctx.shell).map_err(|e| {
            anyhow!(
                "pushed to worker pool {}, but {e:#} (or `tc-admin apply` will put the old images back)",
                change.pool_id
            )
        }),
        Pushed::Unverified(_) => Ok(()),
    };
    let deployment = Deployment {
        seq: to.loaded.history.next_seq(),
        time: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0),
        who: to.who.to_string(),
        kind: record.kind,
        worker_type: record.worker_type,
        before: crate::pool::live_images(&change.before),
        after: change.images.clone(),
        deployment_id: change.patched.deployment_id.clone(),
        undoes: record.undoes,
        undoes_outside_change: record.undoes_outside_change,
        from: record.from,
        tried: None,
        unverified: !matches!(pushed, Pushed::Verified(_)),
    };
    let recorded = match to.store.record(&deployment).await {
        Ok(recorded) => recorded,
        Err(e) => {
            let e = anyhow!(
                "pushed to worker pool {}, but the deployment could not be recorded in the secret {}: {e:#}",
                change.pool_id,
                to.store.name
            );
            return Err(match written {
                Err(w) => anyhow!("{w:#}; and {e:#}"),
                Ok(()) => e,
            });
        }
    };
    match pushed {
        Pushed::Verified(after) => written.map(|()| after),
        Pushed::Unverified(why) => bail!(
            "pushed to {}, but the pool does not hold what was pushed: {why}; recorded as #{} (unverified) in the secret {}; the files that declare its images were not changed",
            change.pool_id,
            recorded.seq,
            to.store.name
        ),
    }
}

/// The push begins unless an interrupt has arrived: from here on it is finished whatever
/// happens, while the guard lives.
fn start_push(cancel: &Cancel, pool_id: &str) -> Result<crate::interrupt::Shield> {
    cancel.check()?;
    Ok(cancel.shield(
        ShieldKind::Finish,
        format!(
            "the push to worker pool {pool_id} (updateWorkerPool, its verification and the history record cannot be stopped half-way)"
        ),
    ))
}
