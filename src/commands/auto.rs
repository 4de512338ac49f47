//! `tc-ami auto -w W [--max-age D]`, for a scheduled run: rebuilds W's image when the live one
//! is stale ([`crate::staleness`]), deploys it to W as `deploy --yes` does (trying it first when
//! W has a `try_task`), never promotes, and reports. [`auto_one`] is the whole run for one
//! worker type, for a runner of several.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::commands::base_ami::find_base_image;
use crate::commands::build::script_user_data;
use crate::commands::change::Asked;
use crate::commands::deploy::{DeployAsked, Deployed, deploy};
use crate::commands::each;
use crate::commands::managed::FilesAsked;
use crate::commands::try_cmd::{TryFirst, TryNotPassed};
use crate::config::WorkerType;
use crate::config_dir::load_worker_type;
use crate::ec2::{Ec2, has_code};
use crate::interrupt::Interrupted;
use crate::model::Image;
use crate::model::codes::NO_SUCH_IMAGE;
use crate::model::tags::{BASE_IMAGE_ID, CREATED_AT, USER_DATA_SHA256};
use crate::pool::{definition, live_images};
use crate::staleness::{Decision, Facts, auto_selection, decide};
use crate::taskcluster::{TcEnv, WorkerManagerApi};
use crate::user_data::user_data_sha256;

/// What `auto` was asked besides the worker type.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoAsked {
    pub max_age: Option<Duration>,
}

/// What one worker type's run found and did: the report on stdout (`--json`: its document).
#[derive(Debug, Clone, Default)]
pub struct AutoReport {
    pub worker_type: String,
    pub pool_id: String,
    pub region: String,
    /// Known once the facts are gathered.
    pub decision: Option<Decision>,
    /// The pool's images when the run started, region → id.
    pub live_images: BTreeMap<String, String>,
    /// The live image in the build region as described: its tags that the decision reads.
    pub live: Value,
    pub base_image: Option<Image>,
    pub script_sha256: Option<String>,
    /// What the rebuild deployed (or tried), region → id.
    pub images: BTreeMap<String, String>,
    pub pushed: bool,
    pub deployment_id: Option<String>,
    /// The try's document (`tc-ami --json try`'s), when the images were tried.
    pub tried: Option<Value>,
    /// W's `promote_to`.
    pub promote_to: Option<String>,
    pub promote_command: Option<String>,
    pub error: Option<String>,
    pub duration: Duration,
}

pub async fn run(ctx: &Ctx, worker_type: &str, asked: AutoAsked) -> Result<u8> {
    // Never production: the other worker types that can be read name their promote_to.
    let all: Vec<_> = crate::config_dir::list_worker_types(&ctx.config_dir)
        .into_iter()
        .filter_map(|name| {
            let wt = load_worker_type(&ctx.config_dir, &name).ok()?;
            Some((name, wt.promote_to))
        })
        .collect();
    auto_selection(&all, &[worker_type.to_string()]).map_err(anyhow::Error::msg)?;
    let report = auto_one(ctx, worker_type, asked).await?;
    ctx.shell.result(&report.text(), &report.to_json());
    Ok(match &report.error {
        Some(e) => {
            ctx.shell
                .error(&format!("error: auto of {worker_type} failed: {e}"));
            1
        }
        None => 0,
    })
}

/// `auto` on several worker types (`-w` repeated, or `--all`: the staging ones, see
/// [`auto_selection`]), at most `jobs` at once ([`each::run_each`]): a block per worker type
/// in the order given, `--json` one document with each report (a failed run's too).
pub async fn run_several(ctx: &Ctx, given: &[String], jobs: usize, asked: AutoAsked) -> Result<u8> {
    let all = each::worker_types(ctx, &[])?
        .into_iter()
        .map(|name| load_worker_type(&ctx.config_dir, &name).map(|wt| (name, wt.promote_to)))
        .collect::<Result<Vec<_>, _>>()?;
    let names = auto_selection(&all, given).map_err(anyhow::Error::msg)?;
    each::run_each(ctx, &names, jobs, |ctx, name| async move {
        let report = auto_one(&ctx, &name, asked).await?;
        Ok(each::Done {
            human: report.text(),
            json: report.to_json(),
            failed: report.error.as_ref().map(|e| format!("auto failed: {e}")),
        })
    })
    .await
}

/// The whole run for one worker type. A failure is in the report (`error`), with what was
/// known and done until then; only an interrupt is an error, for [`crate::commands::changing`]
/// to report. Progress and the steps' own output go to stderr.
pub async fn auto_one(ctx: &Ctx, worker_type: &str, asked: AutoAsked) -> Result<AutoReport> {
    let started = Instant::now();
    let mut report = AutoReport {
        worker_type: worker_type.to_string(),
        ..AutoReport::default()
    };
    let outcome = steps(ctx, worker_type, asked, &mut report).await;
    report.duration = started.elapsed();
    match outcome {
        Ok(()) => {
            promote_advice(ctx, &mut report);
            Ok(report)
        }
        Err(e) if interrupted(&e) => Err(e),
        Err(e) => {
            if let Some(t) = e.downcast_ref::<TryNotPassed>() {
                report.tried = Some(t.doc.clone());
                report.images = images_of(&t.doc["images"]);
            }
            report.error = Some(crate::text::one_line(&format!("{e:#}")));
            Ok(report)
        }
    }
}

/// Decides, and rebuilds and deploys when the live image is stale.
async fn steps(
    ctx: &Ctx,
    worker_type: &str,
    asked: AutoAsked,
    report: &mut AutoReport,
) -> Result<()> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    report.pool_id = wt.worker_pool_id.clone();
    report.region = wt.build_region.clone();
    report.promote_to = wt.promote_to.clone();
    let decision = look(ctx, &wt, asked, report).await?;
    report.decision = Some(decision.clone());
    let Decision::Rebuild(reasons) = decision else {
        ctx.shell.note(&format!(
            "{worker_type}: the live image is up to date; nothing to build or deploy"
        ));
        return Ok(());
    };
    ctx.shell.note(&format!(
        "{worker_type}: rebuilding and deploying to worker pool {}: {}",
        wt.worker_pool_id,
        reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let nested = Ctx {
        config_dir: ctx.config_dir.clone(),
        shell: ctx.shell.nested(),
        cancel: ctx.cancel.clone(),
    };
    let (no_files, first) = (FilesAsked::default(), TryFirst::default());
    let d = DeployAsked {
        images: &[],
        asked: Asked {
            dry_run: false,
            yes: true,
        },
        keep_on_failure: None,
        try_first: &first,
        files: &no_files,
    };
    let Deployed {
        images,
        pushed,
        deployment_id,
        tried,
    } = deploy(&nested, worker_type, &d).await?;
    report.images = images;
    report.pushed = pushed;
    report.deployment_id = deployment_id;
    report.tried = tried;
    Ok(())
}

/// Gathers the facts, with Describe calls and one read of the pool only, and decides.
async fn look(
    ctx: &Ctx,
    wt: &WorkerType,
    asked: AutoAsked,
    report: &mut AutoReport,
) -> Result<Decision> {
    let (_, user_data) = script_user_data(wt)?;
    let script_sha256 = user_data_sha256(&user_data);
    report.script_sha256 = Some(script_sha256.clone());
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let pool = wm.get_pool(&wt.worker_pool_id).await?;
    report.live_images = live_images(&definition(&pool));
    let ec2 = crate::ops::aws_credentials::ec2_for(wt).await?;
    let live_id = report.live_images.get(&wt.build_region).cloned();
    let live = match &live_id {
        Some(id) => describe(&ec2, &wt.build_region, id).await?,
        None => None,
    };
    let base = find_base_image(&ec2, wt).await?;
    let built_from = match live.as_ref().and_then(|i| i.tags.get(BASE_IMAGE_ID)) {
        Some(id) => describe(&ec2, &wt.build_region, id).await?,
        None => None,
    };
    report.live = live_json(live_id.as_deref(), live.as_ref());
    let facts = Facts {
        region: &wt.build_region,
        live: live_id.as_deref().map(|id| (id, live.as_ref())),
        base: &base,
        built_from: built_from.as_ref(),
        script_sha256: &script_sha256,
        max_age: asked.max_age,
        now: chrono::Utc::now(),
    };
    let decision = decide(&facts);
    ctx.shell
        .verbose(|| format!("auto: {facts:?} → {decision:?}"));
    report.base_image = Some(base);
    Ok(decision)
}

/// One image, or None when it does not exist.
async fn describe(ec2: &Ec2, region: &str, id: &str) -> Result<Option<Image>> {
    match ec2.describe_images(region, &[id.to_string()]).await {
        Ok(list) => Ok(list.into_iter().next()),
        Err(e) if has_code(&e, NO_SUCH_IMAGE) => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot describe the live image {id} in {region}"))
        }
    }
}

fn live_json(id: Option<&str>, image: Option<&Image>) -> Value {
    let tag = |k: &str| image.and_then(|i| i.tags.get(k).cloned());
    json!({
        "image": id,
        "exists": image.is_some(),
        "name": image.map(|i| i.name.clone()),
        "base_image_id": tag(BASE_IMAGE_ID),
        "user_data_sha256": tag(USER_DATA_SHA256),
        "created_at": tag(CREATED_AT),
    })
}

/// The promote command for a person to run (auto never promotes), or why there is none.
fn promote_advice(ctx: &Ctx, report: &mut AutoReport) {
    let w = &report.worker_type;
    let Some(to) = &report.promote_to else {
        ctx.shell.note(&format!(
            "no production worker type is configured for {w} (set promote_to in worker-types/{w}.toml): nothing to promote to"
        ));
        return;
    };
    let dir = ctx.config_dir.display().to_string();
    let config = if dir == "." || dir.is_empty() {
        String::new()
    } else {
        format!("-C {dir} ")
    };
    report.promote_command = Some(format!("tc-ami {config}promote --from {w} --to {to}"));
}

/// Region → id from a JSON object.
fn images_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(r, i)| Some((r.clone(), i.as_str()?.to_string())))
        .collect()
}

/// Whether the error is an interrupt (Ctrl-C, SIGTERM), as [`crate::commands::Outcome`] tells.
fn interrupted(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Interrupted>().is_some()
        || e.downcast_ref::<crate::ops::build::BuildFailed>()
            .and_then(|b| b.interrupted())
            .is_some()
}

impl AutoReport {
    fn decision_name(&self) -> Value {
        match &self.decision {
            Some(Decision::UpToDate) => json!("up_to_date"),
            Some(Decision::Rebuild(_)) => json!("rebuild"),
            None => Value::Null,
        }
    }

    /// The `--json` document (README, "`tc-ami auto`").
    pub fn to_json(&self) -> Value {
        let reasons: Vec<Value> = self
            .decision
            .iter()
            .flat_map(|d| d.reasons())
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["text"] = json!(r.to_string());
                v
            })
            .collect();
        json!({
            "worker_type": self.worker_type,
            "workerPoolId": self.pool_id,
            "region": self.region,
            "decision": self.decision_name(),
            "reasons": reasons,
            "live": self.live,
            "live_images": self.live_images,
            "base_image": self.base_image.as_ref().map(|b| json!({
                "id": b.id, "name": b.name, "creation_date": b.creation_date,
            })),
            "script_sha256": self.script_sha256,
            "images": self.images,
            "pushed": self.pushed,
            "deploymentId": self.deployment_id,
            "try": self.tried,
            "promote": {"to": self.promote_to, "command": self.promote_command},
            "error": self.error,
            "duration_seconds": self.duration.as_secs_f64(),
        })
    }

    /// The human report: what was decided and why, what was done, and what a person does next.
    pub fn text(&self) -> String {
        let mut out = format!("{}  (pool {})\n", self.worker_type, self.pool_id);
        let live = self
            .live_images
            .get(&self.region)
            .map(|i| format!("{} {i}", self.region))
            .unwrap_or_else(|| format!("none in {}", self.region));
        match &self.decision {
            None => {}
            Some(Decision::UpToDate) => out.push_str(&format!(
                "  up to date: {live}, from the newest base image and the current first-boot script\n"
            )),
            Some(Decision::Rebuild(reasons)) => {
                out.push_str(&format!("  rebuild (live image {live}):\n"));
                for r in reasons {
                    out.push_str(&format!("    - {r}\n"));
                }
            }
        }
        for (region, id) in &self.images {
            out.push_str(&format!("  {region}  {id}\n"));
        }
        if let Some(t) = &self.tried {
            out.push_str(&format!(
                "  try: {} ({} task(s), task group {})\n",
                t["outcome"].as_str().unwrap_or("-"),
                t["tasks"].as_array().map_or(0, Vec::len),
                t["taskGroupId"].as_str().unwrap_or("-")
            ));
        }
        if let Some(d) = &self.deployment_id {
            out.push_str(&format!(
                "  deployed to worker pool {} (deploymentId {d})\n",
                self.pool_id
            ));
        }
        match (&self.error, &self.promote_command) {
            (Some(e), _) => out.push_str(&format!("  error: {e}\n")),
            (None, Some(c)) => out.push_str(&format!("  to promote (a person decides): {c}\n")),
            (None, None) => {
                out.push_str("  promote: no production worker type is configured (promote_to)\n")
            }
        }
        out.trim_end().to_string()
    }
}
