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
use crate::history::{self, Deployment, History, Kind};
use crate::image_arg::ImageArgs;
use crate::model::codes::{IMAGE_UNUSABLE, NO_SUCH_IMAGE};
use crate::model::{Image, tags};
use crate::ops::build::leftover_text;
use crate::ops::deployments;
use crate::ops::images::{ImageCopy, ImageMarks, copy_image_to};
use crate::ops::teardown::Teardown;
use crate::pool::{
    Patched, definition, new_deployment_id, patch_pool, update_payload, verify_pushed,
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
        let ec2 = Ec2::load().await;
        Ok(Target {
            wt,
            env,
            wm,
            live,
            regions,
            ec2,
        })
    }

    /// Who pushes, for the history.
    pub fn who(&self) -> String {
        self.env.client_id.clone().unwrap_or_default()
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
    pub fn new(
        pool_id: &str,
        root_url: &str,
        live: &Value,
        images: BTreeMap<String, String>,
    ) -> Result<Change> {
        let before = definition(live);
        let managed = crate::managed::pool_is_managed(&before, None);
        let now = chrono::Utc::now();
        // Fresh: never one the pool carries already (a rollback within the same second).
        let current = crate::pool::deployment_ids(&before);
        let patched = patch_pool(pool_id, &before, &images, |image| {
            let id = new_deployment_id(image, now);
            if current.contains(&id) {
                format!("{id}-2")
            } else {
                id
            }
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
    let td = Teardown::new();
    let copying = copy_image_to(ec2, &td, &ctx.cancel, &progress, &copy, dests);
    let result = td.undo_on_failure(POLL_INTERVAL, copying, |_| {}).await;
    progress.finish();
    match result {
        Ok((copies, steps)) => {
            td.keep(&steps);
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

/// Asks on the terminal whether to do `action` ("push this change to …"), unless `yes`.
pub fn confirm(shell: &Shell, yes: bool, action: &str) -> Result<()> {
    refuse_without_terminal(yes, action)?;
    if yes {
        return Ok(());
    }
    let mut question = action.to_string();
    if let Some(first) = question.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    let answer = shell.ask(&format!("{question}? [y/N]"))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("nothing changed: the answer was not yes")
    }
}

/// Pushes the change: checks that the pool is still what the diff was computed against
/// (someone else's change is never overwritten), updates it, fetches it again and checks
/// it holds what was pushed. Returns the pool as the service now has it.
pub async fn push(wm: &WorkerManagerApi, change: &Change) -> Result<Value> {
    let pool_id = &change.pool_id;
    let now = wm.get_pool(pool_id).await?;
    if definition(&now) != change.before {
        bail!(
            "worker pool {pool_id} changed at {} after the diff was computed (lastModified {}); nothing was pushed: run the command again to review the new change",
            change.root_url,
            now["lastModified"].as_str().unwrap_or("unknown")
        );
    }
    wm.update_pool(pool_id, &update_payload(&change.patched.after))
        .await?;
    let after = wm.get_pool(pool_id).await?;
    verify_pushed(&change.patched.after, &after).map_err(|e| {
        anyhow!("pushed to {pool_id}, but the pool does not hold what was pushed: {e}")
    })?;
    Ok(after)
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
    pub wm: &'a WorkerManagerApi,
    pub secrets: &'a SecretsApi,
    /// The Taskcluster clientId, for the history.
    pub who: &'a str,
}

/// What the person asked for: `--dry-run`, `--yes`.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub dry_run: bool,
    pub yes: bool,
}

/// The end of deploy, rollback and promote: shows the change, then (unless nothing changes or
/// it is a dry run) asks, pushes, verifies and appends the deployment to the pool's history.
/// `history` is the pool's history as loaded (None: load it now, after the confirmation).
/// Prints the JSON document with --json. Returns whether it pushed.
pub async fn review_and_push(
    ctx: &Ctx,
    to: &PushTo<'_>,
    change: &Change,
    history: Option<History>,
    record: RecordAs,
    asked: Asked,
) -> Result<bool> {
    let no_files = FilePlan::default();
    review_and_push_with_files(ctx, to, change, history, record, asked, &no_files).await
}

/// [`review_and_push`], and the files that declare the pool's image ids: their change is shown
/// after the pool diff, and they are written once the push is verified (not on a dry run, not
/// when the push fails).
pub async fn review_and_push_with_files(
    ctx: &Ctx,
    to: &PushTo<'_>,
    change: &Change,
    history: Option<History>,
    record: RecordAs,
    asked: Asked,
    files: &FilePlan,
) -> Result<bool> {
    change.show(ctx, crate::diff::DEFAULT_CONTEXT);
    files.show(&ctx.shell);
    let mut report = change.to_json();
    let pushed = if !change.patched.changed {
        ctx.shell.note(&format!(
            "worker pool {} is up to date: {}; nothing to push",
            change.pool_id,
            change.images_text()
        ));
        false
    } else if asked.dry_run {
        ctx.shell.note(&format!(
            "dry run: nothing pushed to worker pool {}",
            change.pool_id
        ));
        false
    } else {
        confirm(
            &ctx.shell,
            asked.yes,
            &format!(
                "push this change to worker pool {} at {}",
                change.pool_id, change.root_url
            ),
        )?;
        let done = match record.kind {
            Kind::Deploy => "deployed",
            Kind::Rollback => "rolled back",
            Kind::Promote => "promoted",
        };
        push_and_record(to, change, history, record, files, &ctx.shell).await?;
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
        true
    };
    report["pushed"] = Value::Bool(pushed);
    if !files.is_empty() {
        report["files"] = files.to_json(pushed);
    }
    ctx.shell.json_doc(&report);
    Ok(pushed)
}

/// Pushes the change, writes the files once the push is verified, and appends the change to
/// the pool's history (read before the push: a client that cannot record the deployment does
/// not push). A file that cannot be written does not stop the record.
async fn push_and_record(
    to: &PushTo<'_>,
    change: &Change,
    history: Option<History>,
    record: RecordAs,
    files: &FilePlan,
    shell: &Shell,
) -> Result<()> {
    let history = match history {
        Some(h) => h,
        None => deployments::load(to.secrets, &change.pool_id).await?,
    };
    push(to.wm, change).await?;
    let written = files.write(shell).map_err(|e| {
        anyhow!(
            "pushed to worker pool {}, but {e:#} (or `tc-admin apply` will put the old images back)",
            change.pool_id
        )
    });
    let deployment = Deployment {
        seq: history.next_seq(),
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
    };
    let recorded = deployments::append(to.secrets, &change.pool_id, history, deployment)
        .await
        .map_err(|e| {
            anyhow!(
                "pushed to worker pool {}, but the deployment could not be recorded in the secret {}: {e:#}",
                change.pool_id,
                history::secret_name(&change.pool_id)
            )
        });
    match (written, recorded) {
        (Err(w), Err(r)) => Err(anyhow!("{w:#}; and {r:#}")),
        (w, r) => w.and(r),
    }
}
