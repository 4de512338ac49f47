//! The nightly hook that runs `tc-ami auto -w W` inside Taskcluster (`tc-ami hook`).
//!
//! Pure: the scopes `auto` on a worker type needs (the README's "Taskcluster scopes" table,
//! row by row), the scopes the hook's role must hold, which of them a project administrator
//! of the community deployment may grant, the config repository's URL and ref, and the
//! createHook request body.

use std::time::Duration;

use serde_json::{Value, json};

use crate::try_pool::{TRY_INFIX, try_pool_id};

/// Nightly at 03:00:00 UTC (cron-parser's six fields, seconds first; the service runs in UTC).
pub const DEFAULT_SCHEDULE: &str = "0 0 3 * * *";
/// `try`'s default `--timeout`, the time `auto` gives the try's task group.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// What the run needs besides the build, the copies and the try: finding the base image,
/// reading and pushing the pool, the history. Generous: it is a limit, not a plan.
pub const OTHER_WORK: Duration = Duration::from_secs(30 * 60);
/// From the task's creation to its deadline, besides its run time: the wait for a worker.
pub const WAIT_FOR_WORKER: Duration = Duration::from_secs(3600);
/// How long the Queue keeps the task and its log.
pub const EXPIRES: &str = "30 days";
/// The hook's task's priority, scheduler and project: the Queue's defaults, written out so
/// the role's createTask scopes can be read off the definition.
pub const TASK_PRIORITY: &str = "lowest";
pub const TASK_SCHEDULER_ID: &str = "-";
pub const TASK_PROJECT_ID: &str = "none";

/// What the try's task file asks of the Queue (create-task-request's defaults where unset).
#[derive(Debug, Clone, PartialEq)]
pub struct TryTaskFacts {
    pub priority: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
}

/// The facts of a try task file (already checked by `try_pool::validate_task`).
pub fn try_task_facts(task: &Value) -> TryTaskFacts {
    let text = |key: &str, default: &str| {
        task.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let list = |key: &str| -> Vec<String> {
        task.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    TryTaskFacts {
        priority: text("priority", "lowest"),
        scheduler_id: text("schedulerId", "-"),
        project_id: text("projectId", "none"),
        routes: list("routes"),
        scopes: list("scopes"),
    }
}

/// What the scopes of `auto` on a worker type depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeFacts<'a> {
    /// The worker pool `P`.
    pub pool_id: &'a str,
    /// `P`'s `providerId` (`R`).
    pub provider_id: &'a str,
    /// The deployment history secret `H`.
    pub history_secret: &'a str,
    /// `password_secret_prefix` (`S`), when the password goes to a secret.
    pub password_prefix: Option<&'a str>,
    /// Whether the worker type sets `regions` (else `build` reads the pool for them).
    pub regions_set: bool,
    /// The try task's facts, when the worker type has a `try_task`.
    pub try_task: Option<TryTaskFacts>,
    /// `aws_credentials_secret`, when the worker type names one.
    pub aws_credentials_secret: Option<&'a str>,
}

/// The prefix every temporary pool of a try on `pool_id` starts with: `P-try-`, or, for a pool
/// whose name is too long for that, its name cut as `try_pool_id` cuts it (the cut depends on
/// the name's length only).
pub fn try_pool_prefix(pool_id: &str) -> Option<String> {
    let example = try_pool_id(pool_id, "00000000").ok()?;
    let at = example.rfind(TRY_INFIX)?;
    Some(example[..at + TRY_INFIX.len()].to_string())
}

/// The scopes `tc-ami auto` on the worker type needs: `build`'s, `deploy`'s (its rollout
/// line included), `try`'s when it has a try task, and `secrets:get` of its AWS credentials
/// secret; sorted, each once, none that another one's `*` covers.
pub fn auto_scopes(f: &ScopeFacts) -> Vec<String> {
    let p = f.pool_id;
    let h = f.history_secret;
    let mut s = Vec::new();
    // build
    if let Some(prefix) = f.password_prefix {
        s.push(format!("secrets:set:{prefix}/*"));
    }
    if !f.regions_set {
        s.push(format!("worker-manager:get-worker-pool:{p}"));
    }
    // deploy
    s.extend([
        format!("worker-manager:get-worker-pool:{p}"),
        format!("secrets:get:{h}"),
        format!("secrets:set:{h}"),
        format!("worker-manager:manage-worker-pool:{p}"),
        format!("worker-manager:provider:{}", f.provider_id),
        format!("worker-manager:list-workers:{p}"),
    ]);
    if let Some(t) = &f.try_task {
        let prefix = try_pool_prefix(p).unwrap_or_else(|| format!("{p}{TRY_INFIX}"));
        s.extend([
            format!("worker-manager:manage-worker-pool:{prefix}*"),
            format!("queue:create-task:{}:{prefix}*", t.priority),
            format!("queue:scheduler-id:{}", t.scheduler_id),
            format!("queue:create-task:project:{}", t.project_id),
            "queue:list-task-group:*".to_string(),
            format!("queue:cancel-task:{}/*", t.scheduler_id),
        ]);
        s.extend(t.routes.iter().map(|r| format!("queue:route:{r}")));
        s.extend(t.scopes.iter().cloned());
    }
    if let Some(secret) = f.aws_credentials_secret {
        s.push(format!("secrets:get:{secret}"));
    }
    normalize(s)
}

/// Whether `held` satisfies `scope`: equal, or `held` ends in `*` and `scope` starts with the
/// rest (Taskcluster's rule: a `*` matches only at the end).
pub fn satisfies(held: &str, scope: &str) -> bool {
    held == scope
        || held
            .strip_suffix('*')
            .is_some_and(|prefix| scope.starts_with(prefix))
}

/// Sorted, each once, without the scopes another one covers.
pub fn normalize(mut scopes: Vec<String>) -> Vec<String> {
    scopes.sort();
    scopes.dedup();
    let all = scopes.clone();
    scopes.retain(|s| !all.iter().any(|o| o != s && satisfies(o, s)));
    scopes
}

/// The scopes the hook's role `hook-id:<group>/<id>` must hold: the task's scopes and what
/// createTask needs for the task itself (its queue at its priority, its scheduler and project).
pub fn role_scopes(task_scopes: &[String], task_queue_id: &str) -> Vec<String> {
    let mut s = task_scopes.to_vec();
    s.extend([
        format!("queue:create-task:{TASK_PRIORITY}:{task_queue_id}"),
        format!("queue:scheduler-id:{TASK_SCHEDULER_ID}"),
        format!("queue:create-task:project:{TASK_PROJECT_ID}"),
    ]);
    normalize(s)
}

/// The grant of the role `project-admin:*` on the community deployment
/// (taskcluster/community-tc-config `config/grants.yml`), `<..>` standing for the project.
const PROJECT_ADMIN_GRANT: &[&str] = &[
    "project:<..>:*",
    "assume:project:<..>:*",
    "queue:create-task:lowest:proj-<..>/*",
    "queue:create-task:very-low:proj-<..>/*",
    "queue:create-task:low:proj-<..>/*",
    "queue:create-task:medium:proj-<..>/*",
    "queue:create-task:high:proj-<..>/*",
    "queue:create-task:very-high:proj-<..>/*",
    "queue:create-task:highest:proj-<..>/*",
    "queue:claim-work:proj-<..>/*",
    "queue:rerun-task:<..>/*",
    "queue:get-artifact:project/<..>/*",
    "assume:hook-id:project-<..>/*",
    "hooks:modify-hook:project-<..>/*",
    "hooks:trigger-hook:project-<..>/*",
    "assume:worker-id:proj-<..>/*",
    "queue:quarantine-worker:proj-<..>/*",
    "worker-manager:create-worker:proj-<..>/*",
    "worker-manager:remove-worker:proj-<..>/*",
    "index:insert-task:project.<..>.*",
    "queue:route:index.project.<..>.*",
    "worker-manager:manage-worker-pool:proj-<..>/*",
    "assume:worker-pool:proj-<..>/*",
    "secrets:get:worker-pool:proj-<..>/*",
    "secrets:set:worker-pool:proj-<..>/*",
    "secrets:get:project/<..>/*",
    "secrets:set:project/<..>/*",
    "docker-worker:cache:*",
    "generic-worker:cache:*",
    "purge-cache:proj-<..>/*",
    "worker-manager:provider:null-provider",
    "worker-manager:provider:community-tc-workers-*",
];

/// The scopes every login identity holds there (`login-identity:*`): the default scheduler.
const LOGIN_GRANT: &[&str] = &["queue:scheduler-id:-"];

/// The scopes of the role `anonymous` there that `auto` uses; the auth service adds that role
/// to every client, and the hooks service's createTask has it too.
const ANONYMOUS: &[&str] = &[
    "queue:create-task:project:none",
    "queue:list-task-group:*",
    "queue:list-workers:*",
    "queue:status:*",
    "worker-manager:get-worker-pool:*",
    "worker-manager:list-worker-pools",
    "worker-manager:list-workers:*",
];

/// Who may put a scope into the hook's role on the community deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantor {
    /// Every client holds it (the `anonymous` role); listing it in the role does no harm.
    Anonymous,
    /// The project's administrators (`project-admin:<p>` with `auth:create-role:hook-id:project-<p>/*`).
    ProjectAdmin,
    /// Only the deployment's administrators (community-tc-config): the project's admins do not hold it.
    Deployment,
}

/// Who may grant `scope` to the hook's role of project `project`.
pub fn grantor(project: &str, scope: &str) -> Grantor {
    let held = |list: &[&str]| {
        list.iter()
            .any(|g| satisfies(&g.replace("<..>", project), scope))
    };
    if held(ANONYMOUS) {
        Grantor::Anonymous
    } else if held(PROJECT_ADMIN_GRANT) || held(LOGIN_GRANT) {
        Grantor::ProjectAdmin
    } else {
        Grantor::Deployment
    }
}

/// The project of a pool `proj-<p>/…`.
pub fn project_of_pool(pool_id: &str) -> Option<&str> {
    pool_id
        .split_once('/')?
        .0
        .strip_prefix("proj-")
        .filter(|p| !p.is_empty())
}

/// The hook group a project's administrators may write on the community deployment:
/// `project-<p>` (`hooks:modify-hook:project-<p>/*`).
pub fn default_hook_group(pool_id: &str) -> Option<String> {
    project_of_pool(pool_id).map(|p| format!("project-{p}"))
}

pub fn default_hook_id(worker_type: &str) -> String {
    format!("tc-ami-{worker_type}")
}

/// A hook group id (`^[a-zA-Z0-9-_]{1,1000}$`, the createHook URL parameter and schema).
pub fn valid_hook_group(g: &str) -> bool {
    (1..=1000).contains(&g.len())
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A hook id (`^[a-zA-Z0-9-_/]{1,1000}$`).
pub fn valid_hook_id(h: &str) -> bool {
    (1..=1000).contains(&h.len())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/')
}

/// A Docker image reference: non-empty, no whitespace or control characters.
pub fn valid_image(image: &str) -> bool {
    !image.is_empty() && !image.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The task's `maxRunTime`: the build (`build_timeout`), the image and its copies (two
/// `image_timeout`s, as the build's expiry tag counts them), the try when there is one, and
/// the rest of the run.
pub fn max_run_time(build_timeout: Duration, image_timeout: Duration, tries: bool) -> Duration {
    build_timeout
        + image_timeout * 2
        + if tries { TRY_TIMEOUT } else { Duration::ZERO }
        + OTHER_WORK
}

/// The payload `env` variables [`CHECKOUT_SCRIPT`] reads: the config repository, the ref to
/// check out (absent: the remote's default branch) and the worker type.
pub const ENV_CONFIG_REPO: &str = "TC_AMI_CONFIG_REPO";
pub const ENV_CONFIG_REF: &str = "TC_AMI_CONFIG_REF";
pub const ENV_WORKER_TYPE: &str = "TC_AMI_WORKER_TYPE";

/// The task's shell script when the config comes from a repository: fixed text, run as
/// `/bin/sh -c`, that reads every value from the environment (the payload's `env`) and only
/// ever expands it inside double quotes, so no value becomes shell text. A shallow checkout
/// into a fresh directory (a plain clone for the default branch, a fetch of the ref
/// otherwise), the commit it got on stderr, then `tc-ami -C <checkout> auto -w W`. No `${`:
/// the hook's task is a JSON-e template, which would read it as an interpolation.
pub const CHECKOUT_SCRIPT: &str = "set -e
dir=$(mktemp -d)
if [ -n \"$TC_AMI_CONFIG_REF\" ]; then
  git init -q \"$dir\"
  git -C \"$dir\" fetch -q --depth 1 -- \"$TC_AMI_CONFIG_REPO\" \"$TC_AMI_CONFIG_REF\"
  git -C \"$dir\" checkout -q --detach FETCH_HEAD
else
  git clone -q --depth 1 -- \"$TC_AMI_CONFIG_REPO\" \"$dir\"
fi
printf 'tc-ami: config repository %s at commit %s\\n' \"$TC_AMI_CONFIG_REPO\" \"$(git -C \"$dir\" rev-parse HEAD)\" >&2
exec tc-ami -C \"$dir\" auto -w \"$TC_AMI_WORKER_TYPE\"
";

/// The forms of a config repository URL tc-ami accepts, for error messages.
pub const REPO_FORMS: &str =
    "https://host/path, ssh://[user@]host[:port]/path, user@host:path (ssh) or file:///path";

/// A host name as git hands it to ssh or an HTTP client: letters, digits, `.` and `-`, not
/// starting with `-` (an ssh "host" like `-oProxyCommand=…` would be an option).
fn valid_host(h: &str) -> bool {
    h.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// `host[:port]`.
fn valid_host_port(hp: &str) -> bool {
    match hp.split_once(':') {
        Some((h, port)) => {
            valid_host(h) && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())
        }
        None => valid_host(hp),
    }
}

/// A user name in an ssh URL: no password, not an option.
fn valid_user(u: &str) -> bool {
    u.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// A URL as an error message may show it: whatever stands before an `@` in front of the host
/// (a user, or a password) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// Checks a config repository URL: one of [`REPO_FORMS`], no whitespace or control
/// characters, no credentials (the hook's definition is readable by anyone who may read the
/// hook, and its task's log shows the URL). `Err` says what is wrong, for a one-line error.
pub fn check_config_repo(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("it is empty".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it has a space or a control character".into());
    }
    fn with_path(rest: &str) -> Option<(&str, &str)> {
        rest.split_once('/').filter(|(_, p)| !p.is_empty())
    }
    let ok = if let Some(rest) = url.strip_prefix("https://") {
        let Some((authority, _)) = with_path(rest) else {
            return Err(format!(
                "`{}` has no repository path after the host",
                redact_url(url)
            ));
        };
        if authority.contains('@') {
            return Err(format!(
                "`{}` holds credentials, which do not belong in a hook definition anyone may read: use a public repository's URL, or ssh with a key in the image",
                redact_url(url)
            ));
        }
        valid_host_port(authority)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        match with_path(rest) {
            Some((authority, _)) => match authority.split_once('@') {
                Some((user, hp)) => valid_user(user) && valid_host_port(hp),
                None => valid_host_port(authority),
            },
            None => false,
        }
    } else if let Some(path) = url.strip_prefix("file://") {
        path.starts_with('/') && path.len() > 1
    } else if url.contains("://") {
        false
    } else {
        // scp-like: user@host:path, with no `/` before the `:` (git's own rule).
        match url.split_once(':') {
            Some((user_host, path)) if !user_host.contains('/') && !path.is_empty() => {
                user_host
                    .split_once('@')
                    .is_some_and(|(u, h)| valid_user(u) && valid_host(h))
                    && !path.starts_with('-')
            }
            _ => false,
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a repository URL tc-ami accepts: use {REPO_FORMS}",
            redact_url(url)
        ))
    }
}

/// Checks a git ref name as `git check-ref-format --allow-onelevel` does (a branch `main`, a
/// tag `v1`, or `refs/heads/main`), and not starting with `-` (it would be read as an
/// option). `Err` says which rule it breaks.
pub fn check_config_ref(r: &str) -> Result<(), String> {
    let rule = if r.is_empty() {
        "it is empty"
    } else if r.starts_with('-') {
        "it starts with `-`"
    } else if r == "@" {
        "`@` alone is not a ref"
    } else if r
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        "it has a space, a control character or one of ~ ^ : ? * [ \\"
    } else if r.contains("..") || r.contains("@{") || r.contains("//") {
        "it has `..`, `@{` or `//`"
    } else if r.starts_with('/') || r.ends_with('/') || r.ends_with('.') {
        "it starts or ends with `/`, or ends with `.`"
    } else if r
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        "a component starts with `.` or ends with `.lock`"
    } else {
        return Ok(());
    };
    Err(format!(
        "`{r}` is not a git ref name: {rule} (a branch like main, a tag, or refs/heads/main)"
    ))
}

/// The config repository the hook's task checks out.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRepo<'a> {
    pub url: &'a str,
    /// None: the remote's default branch (a plain clone).
    pub git_ref: Option<&'a str>,
}

/// A string as JSON-e renders it unchanged: the Hooks service renders the hook's task as a
/// JSON-e template, where `${` starts an interpolation and `$${` stands for `${`.
pub fn jsone_literal(s: &str) -> String {
    s.replace("${", "$${")
}

/// Everything the hook definition is made of.
#[derive(Debug, Clone)]
pub struct HookSpec<'a> {
    pub worker_type: &'a str,
    pub pool_id: &'a str,
    pub hook_group: &'a str,
    pub hook_id: &'a str,
    pub image: &'a str,
    pub task_queue_id: &'a str,
    pub schedule: &'a str,
    /// An email address (the pool's owner by default).
    pub owner: &'a str,
    pub scopes: &'a [String],
    pub max_run_time: Duration,
    /// The deployment's root URL, without a trailing slash (the task's `metadata.source` is the
    /// hook's page there).
    pub root_url: &'a str,
    /// Where the task gets the config directory: None, the image's working directory.
    pub config_repo: Option<ConfigRepo<'a>>,
}

/// The task's docker-worker payload (`workers/docker-worker/schemas/v1/payload.yml`): with a
/// config repository, [`CHECKOUT_SCRIPT`] and its `env`; else `tc-ami auto -w W` in the
/// image's working directory.
fn payload(s: &HookSpec) -> Value {
    let mut p = json!({
        "image": s.image,
        "command": ["tc-ami", "auto", "-w", s.worker_type],
        "maxRunTime": s.max_run_time.as_secs(),
        "features": {"taskclusterProxy": true},
    });
    if let Some(repo) = &s.config_repo {
        let mut env = serde_json::Map::new();
        env.insert(ENV_CONFIG_REPO.into(), jsone_literal(repo.url).into());
        if let Some(r) = repo.git_ref {
            env.insert(ENV_CONFIG_REF.into(), jsone_literal(r).into());
        }
        env.insert(ENV_WORKER_TYPE.into(), jsone_literal(s.worker_type).into());
        p["command"] = json!(["/bin/sh", "-c", CHECKOUT_SCRIPT]);
        p["env"] = Value::Object(env);
    }
    p
}

/// The createHook request body (`hooks/v1/create-hook-request.json`).
pub fn hook_definition(s: &HookSpec) -> Value {
    let name = format!("tc-ami auto -w {}", s.worker_type);
    let deadline_minutes = (s.max_run_time + WAIT_FOR_WORKER).as_secs().div_ceil(60);
    let config = match &s.config_repo {
        Some(r) => format!(
            ", on a shallow checkout of {} ({})",
            jsone_literal(r.url),
            r.git_ref
                .map_or("its default branch".to_string(), jsone_literal)
        ),
        None => String::new(),
    };
    let description = format!(
        "Runs `tc-ami auto -w {w}` in the image {image}{config}: rebuilds the image of worker \
         pool {p} when it is stale, deploys it there and tries it; never promotes. Made by \
         `tc-ami hook -w {w}`; its task's scopes are those of the role `hook-id:{g}/{h}`.",
        w = s.worker_type,
        image = s.image,
        p = s.pool_id,
        g = s.hook_group,
        h = s.hook_id,
    );
    json!({
        "metadata": {
            "name": name,
            "description": description,
            "owner": s.owner,
            "emailOnError": true,
        },
        "schedule": [s.schedule],
        "task": {
            "taskQueueId": s.task_queue_id,
            "schedulerId": TASK_SCHEDULER_ID,
            "projectId": TASK_PROJECT_ID,
            "priority": TASK_PRIORITY,
            "deadline": {"$fromNow": format!("{deadline_minutes} minutes")},
            "expires": {"$fromNow": EXPIRES},
            "metadata": {
                "name": name,
                "description": format!("tc-ami auto for worker type {} (pool {}), fired by the hook {}/{}", s.worker_type, s.pool_id, s.hook_group, s.hook_id),
                "owner": s.owner,
                "source": format!("{}/hooks/{}/{}", s.root_url, s.hook_group, s.hook_id),
            },
            "scopes": s.scopes,
            "payload": payload(s),
        },
        "bindings": [],
        "triggerSchema": {"type": "object", "additionalProperties": false},
    })
}

/// A hook definition as `hook` returns it, made comparable with [`hook_definition`]'s: without
/// the ids (the request carries them in its URL), keys sorted at every level (the service
/// answers in PostgreSQL's jsonb order).
pub fn comparable(definition: &Value) -> Value {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut d = definition.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("hookGroupId");
        m.remove("hookId");
    }
    sorted(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(try_task: Option<TryTaskFacts>, prefix: Option<&'static str>) -> ScopeFacts<'static> {
        ScopeFacts {
            pool_id: "proj-servo/win2016-staging",
            provider_id: "community-tc-workers-aws",
            history_secret: "project/servo/tc-ami/deployments/proj-servo/win2016-staging",
            password_prefix: prefix,
            regions_set: true,
            try_task,
            aws_credentials_secret: None,
        }
    }

    #[test]
    fn scopes_without_try_or_password() {
        assert_eq!(
            auto_scopes(&facts(None, None)),
            [
                "secrets:get:project/servo/tc-ami/deployments/proj-servo/win2016-staging",
                "secrets:set:project/servo/tc-ami/deployments/proj-servo/win2016-staging",
                "worker-manager:get-worker-pool:proj-servo/win2016-staging",
                "worker-manager:list-workers:proj-servo/win2016-staging",
                "worker-manager:manage-worker-pool:proj-servo/win2016-staging",
                "worker-manager:provider:community-tc-workers-aws",
            ]
        );
    }

    #[test]
    fn scopes_with_try_password_and_aws_secret() {
        let t =
            try_task_facts(&json!({"routes": ["notify.x"], "scopes": ["generic-worker:cache:x"]}));
        let mut f = facts(Some(t), Some("project/servo/windows-administrator/w"));
        f.aws_credentials_secret = Some("project/servo/aws");
        let s = auto_scopes(&f);
        for want in [
            "secrets:set:project/servo/windows-administrator/w/*",
            "worker-manager:manage-worker-pool:proj-servo/win2016-staging-try-*",
            "queue:create-task:lowest:proj-servo/win2016-staging-try-*",
            "queue:scheduler-id:-",
            "queue:create-task:project:none",
            "queue:route:notify.x",
            "generic-worker:cache:x",
            "queue:list-task-group:*",
            "queue:cancel-task:-/*",
            "secrets:get:project/servo/aws",
        ] {
            assert!(s.contains(&want.to_string()), "{want} in {s:#?}");
        }
        assert_eq!(s.len(), 16, "{s:#?}");
    }

    #[test]
    fn a_long_pool_name_gets_the_cut_prefix() {
        let pool = "proj-servo/a-very-long-worker-pool-name-of-38";
        let prefix = try_pool_prefix(pool).unwrap();
        assert!(prefix.ends_with("-try-"), "{prefix}");
        for short in ["abcdefgh", "zz99zz99"] {
            assert!(try_pool_id(pool, short).unwrap().starts_with(&prefix));
        }
    }

    #[test]
    fn normalize_drops_covered_scopes() {
        let s = normalize(vec!["a:b".into(), "a:*".into(), "a:*".into(), "c".into()]);
        assert_eq!(s, ["a:*", "c"]);
    }

    #[test]
    fn grantors() {
        assert_eq!(
            grantor("servo", "secrets:set:project/servo/x"),
            Grantor::ProjectAdmin
        );
        assert_eq!(
            grantor("servo", "worker-manager:get-worker-pool:proj-servo/w"),
            Grantor::Anonymous
        );
        assert_eq!(
            grantor("servo", "queue:cancel-task:-/*"),
            Grantor::Deployment
        );
        assert_eq!(
            grantor("servo", "queue:scheduler-id:-"),
            Grantor::ProjectAdmin
        );
        assert_eq!(
            grantor("servo", "secrets:get:project/other/x"),
            Grantor::Deployment
        );
    }

    #[test]
    fn role_scopes_add_the_tasks_creation() {
        let r = role_scopes(&["secrets:get:x".into()], "proj-servo/docker");
        assert_eq!(
            r,
            [
                "queue:create-task:lowest:proj-servo/docker",
                "queue:create-task:project:none",
                "queue:scheduler-id:-",
                "secrets:get:x"
            ]
        );
    }

    #[test]
    fn ids() {
        assert_eq!(
            default_hook_group("proj-servo/win2016").as_deref(),
            Some("project-servo")
        );
        assert_eq!(default_hook_group("servo/win2016"), None);
        assert_eq!(default_hook_id("servo-win2016"), "tc-ami-servo-win2016");
        assert!(valid_hook_group("project-servo") && !valid_hook_group("a/b"));
        assert!(valid_hook_id("a/b") && !valid_hook_id("a b") && !valid_hook_id(""));
        assert!(valid_image("repo/img@sha256:00") && !valid_image("a b"));
    }

    #[test]
    fn definition_runs_auto_with_the_proxy() {
        let scopes = vec!["a".to_string()];
        let d = hook_definition(&HookSpec {
            worker_type: "w",
            pool_id: "proj-servo/win2016",
            hook_group: "project-servo",
            hook_id: "tc-ami-w",
            image: "img",
            task_queue_id: "proj-servo/docker",
            schedule: DEFAULT_SCHEDULE,
            owner: "o@example.com",
            scopes: &scopes,
            max_run_time: Duration::from_secs(3600),
            root_url: "https://tc.example",
            config_repo: None,
        });
        let p = &d["task"]["payload"];
        assert_eq!(p["command"], json!(["tc-ami", "auto", "-w", "w"]));
        assert_eq!(p["features"]["taskclusterProxy"], true);
        assert_eq!(p["maxRunTime"], 3600);
        assert_eq!(d["task"]["deadline"]["$fromNow"], "120 minutes");
        assert_eq!(d["task"]["scopes"], json!(["a"]));
        assert_eq!(d["schedule"], json!(["0 0 3 * * *"]));
        assert_eq!(p.get("env"), None);
    }

    #[test]
    fn definition_with_a_config_repo_runs_the_fixed_script_with_its_env() {
        let scopes = vec![];
        let mut spec = HookSpec {
            worker_type: "w",
            pool_id: "proj-servo/win2016",
            hook_group: "project-servo",
            hook_id: "tc-ami-w",
            image: "img",
            task_queue_id: "proj-servo/docker",
            schedule: DEFAULT_SCHEDULE,
            owner: "o@example.com",
            scopes: &scopes,
            max_run_time: Duration::from_secs(3600),
            root_url: "https://tc.example",
            config_repo: Some(ConfigRepo {
                url: "https://example.com/a;$(x)/${y}",
                git_ref: Some("refs/heads/main"),
            }),
        };
        let p = hook_definition(&spec)["task"]["payload"].clone();
        assert_eq!(p["command"], json!(["/bin/sh", "-c", CHECKOUT_SCRIPT]));
        assert_eq!(
            p["env"],
            json!({"TC_AMI_CONFIG_REPO": "https://example.com/a;$(x)/$${y}",
                   "TC_AMI_CONFIG_REF": "refs/heads/main", "TC_AMI_WORKER_TYPE": "w"})
        );
        spec.config_repo = Some(ConfigRepo {
            url: "https://example.com/c",
            git_ref: None,
        });
        let d = hook_definition(&spec);
        assert_eq!(d["task"]["payload"]["env"].get(ENV_CONFIG_REF), None);
        let text = d["metadata"]["description"].as_str().unwrap();
        assert!(text.contains("checkout of https://example.com/c (its default branch)"));
    }

    #[test]
    fn the_script_expands_values_only_in_double_quotes_and_has_no_jsone_interpolation() {
        assert!(!CHECKOUT_SCRIPT.contains("${"));
        for var in [ENV_CONFIG_REPO, ENV_CONFIG_REF, ENV_WORKER_TYPE] {
            let uses: Vec<_> = CHECKOUT_SCRIPT.match_indices(&format!("${var}")).collect();
            assert!(!uses.is_empty(), "{var}");
            for (at, _) in uses {
                let after = at + var.len() + 1;
                assert_eq!(&CHECKOUT_SCRIPT[at - 1..at], "\"", "{var} at {at}");
                assert_eq!(&CHECKOUT_SCRIPT[after..after + 1], "\"", "{var} at {at}");
            }
        }
        assert_eq!(jsone_literal("a${b}$${c}"), "a$${b}$$${c}");
    }

    #[test]
    fn repository_urls() {
        for ok in [
            "https://github.com/servo/tc-ami-config.git",
            "https://git.example:8443/a/b",
            "ssh://git@github.com/servo/x.git",
            "ssh://host:22/x",
            "git@github.com:servo/x.git",
            "file:///srv/git/config",
        ] {
            assert_eq!(check_config_repo(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("https://github.com/a b", "a space"),
            ("https://x/a\nb", "a space or a control character"),
            ("https://github.com/", "no repository path"),
            (
                "https://user:token@github.com/a",
                "`https://***@github.com/a` holds credentials",
            ),
            (
                "http://user:token@github.com/a",
                "`http://***@github.com/a` is not",
            ),
            ("http://github.com/a", "not a repository URL tc-ami accepts"),
            ("git://github.com/a", "not a repository URL"),
            ("ext::sh -c x", "a space"),
            ("ext::x", "not a repository URL"),
            ("ssh://-oProxyCommand=x/y", "not a repository URL"),
            ("ssh://git@-host/y", "not a repository URL"),
            ("git@host:-x", "not a repository URL"),
            ("github.com:a/b", "not a repository URL"),
            ("/srv/git/config", "not a repository URL"),
            ("-u", "not a repository URL"),
            ("file://", "not a repository URL"),
        ] {
            let e = check_config_repo(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains("token"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn ref_names() {
        for ok in ["main", "refs/heads/main", "v1.2", "release/2026-11", "a@b"] {
            assert_eq!(check_config_ref(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("-x", "starts with `-`"),
            ("@", "`@` alone"),
            ("a b", "a space"),
            ("a;b c", "a space"),
            ("a~1", "one of"),
            ("a:b", "one of"),
            ("a\\b", "one of"),
            ("a..b", "`..`"),
            ("a@{1}", "`@{`"),
            ("a//b", "`//`"),
            ("/a", "starts or ends"),
            ("a/", "starts or ends"),
            ("a.", "ends with `.`"),
            ("a/.b", "starts with `.`"),
            ("a.lock", "`.lock`"),
        ] {
            let e = check_config_ref(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(
                e.starts_with(&format!("`{bad}` is not a git ref name")),
                "{e}"
            );
        }
    }

    #[test]
    fn comparable_drops_ids_and_sorts() {
        let live =
            json!({"hookId": "h", "hookGroupId": "g", "task": {"b": 1, "a": [{"y": 1, "x": 2}]}});
        let c = comparable(&live);
        assert_eq!(c.to_string(), r#"{"task":{"a":[{"x":2,"y":1}],"b":1}}"#);
    }

    #[test]
    fn run_time_counts_the_try() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            max_run_time(h, h, false),
            Duration::from_secs(3 * 3600 + 1800)
        );
        assert_eq!(
            max_run_time(h, h, true),
            Duration::from_secs(5 * 3600 + 1800)
        );
    }
}
