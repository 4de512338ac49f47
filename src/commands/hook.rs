//! `tc-ami hook -w W [--config-repo URL [--config-ref REF]] [--apply]`: the hook that runs
//! `tc-ami auto -w W` nightly inside Taskcluster (on a checkout of the config repository, or
//! the config directory in the image), printed as a createHook request body, or created or
//! updated through the Hooks service after the usual diff and confirmation.

use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::Ctx;
use super::change::confirm;
use crate::config::{WorkerType, valid_worker_pool_id};
use crate::config_dir::load_worker_type;
use crate::diff::{pretty, unified_diff, use_color};
use crate::hook::{
    ConfigRepo, DEFAULT_SCHEDULE, Grantor, HookSpec, ScopeFacts, auto_scopes, check_config_ref,
    check_config_repo, comparable, default_hook_group, default_hook_id, grantor, hook_definition,
    max_run_time, project_of_pool, role_scopes, try_task_facts, valid_hook_group, valid_hook_id,
    valid_image,
};
use crate::taskcluster::{TcEnv, WorkerManagerApi};
use crate::taskcluster_hooks::HooksApi;
use crate::try_pool::parse_task_file;

/// What was asked on the command line.
#[derive(Debug, Clone, Default)]
pub struct HookAsk {
    pub worker_type: String,
    pub schedule: Option<String>,
    pub image: Option<String>,
    pub task_queue: Option<String>,
    pub hook_group: Option<String>,
    pub hook_id: Option<String>,
    pub owner: Option<String>,
    /// The config repository the task checks out (else the image holds the config).
    pub config_repo: Option<String>,
    pub config_ref: Option<String>,
    pub apply: bool,
    pub yes: bool,
}

/// The inputs that cannot be found out, each from its flag or worker type key.
struct Inputs {
    schedule: String,
    image: String,
    task_queue: String,
    group: String,
    id: String,
    /// The config repository and its ref (None: the remote's default branch).
    config_repo: Option<(String, Option<String>)>,
}

/// The config repository and ref, from the flags or the worker type's keys (which
/// `config.rs` already checked), each checked; a ref needs a repository.
fn config_repo(ask: &HookAsk, wt: &WorkerType) -> Result<Option<(String, Option<String>)>> {
    let file = wt.file.display();
    if let Some(url) = &ask.config_repo {
        check_config_repo(url).map_err(|m| anyhow!("--config-repo: {m}"))?;
    }
    if let Some(r) = &ask.config_ref {
        check_config_ref(r).map_err(|m| anyhow!("--config-ref: {m}"))?;
    }
    let url = ask.config_repo.clone().or(wt.hook_config_repo.clone());
    let git_ref = ask.config_ref.clone().or(wt.hook_config_ref.clone());
    match (url, git_ref) {
        (Some(url), r) => Ok(Some((url, r))),
        (None, Some(r)) => bail!(
            "a config ref `{r}` without a config repository: pass --config-repo URL or set hook_config_repo in {file} (or drop --config-ref / hook_config_ref)"
        ),
        (None, None) => Ok(None),
    }
}

fn inputs(ask: &HookAsk, wt: &WorkerType) -> Result<Inputs> {
    let file = wt.file.display();
    let schedule = ask.schedule.clone().unwrap_or(DEFAULT_SCHEDULE.to_string());
    crate::cron::check(&schedule).map_err(|m| {
        anyhow!("--schedule `{schedule}` is not a pattern the Hooks service accepts: {m} (cron-parser's syntax: six fields with seconds first, e.g. \"{DEFAULT_SCHEDULE}\" for 03:00 UTC)")
    })?;
    let image = ask.image.clone().or(wt.hook_image.clone()).ok_or_else(|| {
        anyhow!("no Docker image for the hook's task: pass --image IMAGE or set hook_image in {file} (an image holding tc-ami, and git with --config-repo, else this config directory as its working directory)")
    })?;
    if !valid_image(&image) {
        bail!(
            "--image `{image}` is not a Docker image reference (no spaces or control characters)"
        );
    }
    let task_queue = ask.task_queue.clone().or(wt.hook_task_queue.clone()).ok_or_else(|| {
        anyhow!("no task queue for the hook's task: pass --task-queue Q or set hook_task_queue in {file} (the worker pool of a docker-worker, e.g. proj-<project>/docker)")
    })?;
    if !valid_worker_pool_id(&task_queue) {
        bail!("--task-queue `{task_queue}` is not a task queue id like proj-servo/docker");
    }
    let group = match &ask.hook_group {
        Some(g) => g.clone(),
        None => default_hook_group(&wt.worker_pool_id).ok_or_else(|| {
            anyhow!("pool {} is not named proj-<project>/…, so there is no default hook group: pass --hook-group G", wt.worker_pool_id)
        })?,
    };
    if !valid_hook_group(&group) {
        bail!("--hook-group `{group}`: use 1 to 1000 letters, digits, - or _");
    }
    let id = ask.hook_id.clone().unwrap_or(default_hook_id(&wt.name));
    if !valid_hook_id(&id) {
        bail!("--hook-id `{id}`: use 1 to 1000 letters, digits, -, _ or /");
    }
    Ok(Inputs {
        schedule,
        image,
        task_queue,
        group,
        id,
        config_repo: config_repo(ask, wt)?,
    })
}

/// The scopes `auto` on W needs; reads the try task file and the pool (its provider and owner).
async fn task_scopes(wt: &WorkerType, pool: &Value) -> Result<Vec<String>> {
    let try_task = match &wt.try_task {
        Some(path) => {
            super::try_cmd::check_task_file(wt, path)?;
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the task file {file}"))?;
            Some(try_task_facts(&parse_task_file(&file, &text)?))
        }
        None => None,
    };
    let provider_id = pool["providerId"]
        .as_str()
        .ok_or_else(|| anyhow!("worker pool {} has no providerId", wt.worker_pool_id))?;
    let password_prefix = match &wt.password {
        crate::config::PasswordDestination::Secret { prefix, .. } => Some(prefix.as_str()),
        crate::config::PasswordDestination::Print => None,
    };
    Ok(auto_scopes(&ScopeFacts {
        pool_id: &wt.worker_pool_id,
        provider_id,
        history_secret: &wt.history_secret,
        password_prefix,
        regions_set: !wt.regions.is_empty(),
        try_task,
        aws_credentials_secret: wt.aws_credentials_secret.as_deref(),
    }))
}

pub async fn run(ctx: &Ctx, ask: &HookAsk) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, &ask.worker_type)?;
    let inputs = inputs(ask, &wt)?;
    let env = TcEnv::from_env(ask.apply)?;
    let pool = WorkerManagerApi::new(&env)?
        .get_pool(&wt.worker_pool_id)
        .await?;
    let scopes = task_scopes(&wt, &pool).await?;
    let owner = match (&ask.owner, pool["owner"].as_str()) {
        (Some(o), _) => o.clone(),
        (None, Some(o)) => o.to_string(),
        (None, None) => bail!(
            "worker pool {} has no owner to name as the hook's owner: pass --owner EMAIL",
            wt.worker_pool_id
        ),
    };
    let run_time = max_run_time(wt.build_timeout, wt.image_timeout, wt.try_task.is_some());
    let definition = hook_definition(&HookSpec {
        worker_type: &wt.name,
        pool_id: &wt.worker_pool_id,
        hook_group: &inputs.group,
        hook_id: &inputs.id,
        image: &inputs.image,
        task_queue_id: &inputs.task_queue,
        schedule: &inputs.schedule,
        owner: &owner,
        scopes: &scopes,
        max_run_time: run_time,
        root_url: &env.root_url,
        config_repo: inputs.config_repo.as_ref().map(|(url, r)| ConfigRepo {
            url,
            git_ref: r.as_deref(),
        }),
    });
    let role = role_doc(&wt, &inputs, &scopes);
    if !ask.apply {
        ctx.shell.result(
            pretty(&definition).trim_end(),
            &json!({"hookGroupId": inputs.group, "hookId": inputs.id, "definition": definition, "role": role}),
        );
        show_role(ctx, &role);
        return Ok(0);
    }
    apply(ctx, &env, ask.yes, &inputs, &definition, role).await
}

/// The hook's role: its id, and each scope with who may grant it.
fn role_doc(wt: &WorkerType, inputs: &Inputs, task_scopes: &[String]) -> Value {
    let project =
        project_of_pool(&wt.worker_pool_id).or_else(|| inputs.group.strip_prefix("project-"));
    let scopes: Vec<Value> = role_scopes(task_scopes, &inputs.task_queue)
        .into_iter()
        .map(|s| {
            let by = match project.map(|p| grantor(p, &s)) {
                Some(Grantor::Anonymous) => "anonymous",
                Some(Grantor::ProjectAdmin) => "project-admin",
                Some(Grantor::Deployment) | None => "deployment-admin",
            };
            json!({"scope": s, "grantedBy": by})
        })
        .collect();
    json!({
        "roleId": format!("hook-id:{}/{}", inputs.group, inputs.id),
        "project": project,
        "scopes": scopes,
    })
}

/// On stderr: the scopes the hook's role must hold and who can grant each.
fn show_role(ctx: &Ctx, role: &Value) {
    let role_id = role["roleId"].as_str().unwrap_or_default();
    let project = role["project"].as_str().unwrap_or("<project>");
    ctx.shell.note(&format!(
        "the role {role_id} must hold these scopes (the task's, and createTask's for the task itself):"
    ));
    let empty = vec![];
    for s in role["scopes"].as_array().unwrap_or(&empty) {
        let by = match s["grantedBy"].as_str() {
            Some("anonymous") => "held by every client: role anonymous".to_string(),
            Some("project-admin") => format!("held by a project administrator of {project}"),
            _ => "held only by the deployment's administrators".to_string(),
        };
        ctx.shell.note(&format!(
            "  {}  ({by})",
            s["scope"].as_str().unwrap_or_default()
        ));
    }
    ctx.shell.note(&format!(
        "the project's administrators define that role (auth:create-role:hook-id:project-{project}/*; for Servo, in servo/taskcluster-config's config/roles.yml) and may put into it only scopes they hold; the deployment's administrators (community-tc-config) grant the others"
    ));
}

async fn apply(
    ctx: &Ctx,
    env: &TcEnv,
    yes: bool,
    inputs: &Inputs,
    definition: &Value,
    role: Value,
) -> Result<u8> {
    let (g, h) = (inputs.group.as_str(), inputs.id.as_str());
    let hooks = HooksApi::new(env)?;
    let live = hooks.get(g, h).await?;
    let after = comparable(definition);
    let before = live.as_ref().map(comparable).unwrap_or(json!({}));
    let doc = |action: &str| json!({"hookGroupId": g, "hookId": h, "action": action, "definition": definition, "role": role});
    if live.is_some() && before == after {
        ctx.shell.note(&format!(
            "hook {g}/{h} is up to date at {}; nothing changed",
            env.root_url
        ));
        ctx.shell.json_doc(&doc("unchanged"));
        show_role(ctx, &role);
        return Ok(0);
    }
    let no_color = std::env::var("NO_COLOR").ok();
    ctx.shell.document(|terminal| {
        format!(
            "hook {g}/{h} at {}{}\n{}",
            env.root_url,
            if live.is_none() { " (new)" } else { "" },
            unified_diff(
                &before,
                &after,
                &format!("{g}/{h}"),
                3,
                use_color(terminal, no_color.as_deref())
            )
        )
    });
    let action = if live.is_some() { "update" } else { "create" };
    if !yes && !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {action} hook {g}/{h} without confirmation: stdin is not a terminal; pass --yes to go ahead (without --apply, tc-ami hook only prints the definition)"
        );
    }
    confirm(&ctx.shell, yes, &format!("{action} hook {g}/{h}")).await?;
    match live {
        Some(_) => hooks.update(g, h, definition).await?,
        None => hooks.create(g, h, definition).await?,
    };
    let done = if action == "update" {
        "updated"
    } else {
        "created"
    };
    ctx.shell
        .note(&format!("{done} hook {g}/{h} at {}", env.root_url));
    ctx.shell.json_doc(&doc(done));
    show_role(ctx, &role);
    Ok(0)
}
