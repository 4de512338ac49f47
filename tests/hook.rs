//! `tc-ami hook`: the printed definition against the official schema, its scopes, `--apply`
//! through the emulator's Hooks service, and triggerHook creating the task in its Queue.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

const IMAGE: &str = "registry.example/tc-ami@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const QUEUE: &str = "proj-servo/docker";
const HOOK: &str = "project-servo/tc-ami-w";
const HISTORY: &str = "project/servo/tc-ami/deployments/proj-servo/win2016";
/// A config repository's URL (no request goes to it: only the definition is looked at).
const CONFIG_REPO: &str = "https://git.example/servo/tc-ami-config.git";

/// May read pools and hooks, not write hooks.
const HOOK_READER_ID: &str = "tc-ami-hook-reader";
const HOOK_READER_TOKEN: &str = "test-hook-reader-token-0123456789abcdefghi";

/// The scopes `auto -w w` needs for the harness's worker type `w` (regions set, no try task, no
/// password secret): deploy's, as the README's table states them.
fn plain_scopes() -> Vec<String> {
    [
        format!("secrets:get:{HISTORY}"),
        format!("secrets:set:{HISTORY}"),
        format!("worker-manager:get-worker-pool:{POOL}"),
        format!("worker-manager:list-workers:{POOL}"),
        format!("worker-manager:manage-worker-pool:{POOL}"),
        "worker-manager:provider:community-tc-workers-aws".to_string(),
    ]
    .to_vec()
}

/// The role `hook-id:project-servo/tc-ami-w`, as the project's administrator would define it
/// from what `tc-ami hook` prints: the task's scopes and createTask's for the task.
fn role_scopes() -> Vec<String> {
    let mut s = plain_scopes();
    s.extend([
        format!("queue:create-task:lowest:{QUEUE}"),
        "queue:create-task:project:none".to_string(),
        "queue:scheduler-id:-".to_string(),
    ]);
    s.sort();
    s
}

fn world() -> World {
    let tc = Tc::start_with(
        seed_pools(),
        json!({
            "clients": [{"clientId": HOOK_READER_ID, "accessToken": HOOK_READER_TOKEN,
                         "scopes": ["worker-manager:get-worker-pool:*", "hooks:get:*"]}],
            "roles": [{"roleId": format!("hook-id:{HOOK}"), "scopes": role_scopes()}],
        }),
    );
    let w = World::with_tc(tc);
    w.cfg.worker_type(
        "w",
        POOL,
        &format!(
            "regions = [\"us-east-1\"]\nhook_image = \"{IMAGE}\"\nhook_task_queue = \"{QUEUE}\""
        ),
    );
    w
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// The emulator's requests to a Hooks method.
fn calls(w: &World, method: &str) -> usize {
    w.tc.requests()
        .iter()
        .filter(|r| r["apiMethod"] == method)
        .count()
}

/// Runs Python in sandbox/ with `code`, which prints one JSON document.
fn python_json(code: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .current_dir(repo_root().join("sandbox"))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The emulator's validator on the official schema (the service's ajv rules, formats too):
/// null when `def` is a valid createHook request body, else the service's message.
fn schema_message(def: &Value) -> Value {
    python_json(
        "import json, sys\nfrom tc_emulator_lib.validation import SchemaSet\nfrom tc_emulator_lib.server import GENERATED_DIR\n\
         s = SchemaSet(GENERATED_DIR)\nbody = json.loads(sys.argv[1])\n\
         print(json.dumps({'message': s.message('hooks', 'v1/create-hook-request.json#', body, 'http://x')}))",
        &[&def.to_string()],
    )["message"]
        .clone()
}

#[test]
fn the_printed_definition_validates_against_the_official_schema() {
    let w = world();
    let run = w.tc_ami().run(&["hook", "-w", "w"]);
    run.assert_code(0);
    let def: Value = serde_json::from_str(&run.stdout).expect("stdout is the definition");
    assert_eq!(schema_message(&def), Value::Null);
    let task = &def["task"];
    assert_eq!(task["taskQueueId"], QUEUE);
    assert_eq!(task["payload"]["image"], IMAGE);
    assert_eq!(
        task["payload"]["command"],
        json!(["tc-ami", "auto", "-w", "w"])
    );
    assert_eq!(
        task["payload"]["features"],
        json!({"taskclusterProxy": true})
    );
    // Without a config repository: the image holds the config, no env.
    assert_eq!(task["payload"].get("env"), None);
    // build 30s + 2 × image 30s + 30 min of the rest; the deadline adds an hour to get a worker.
    assert_eq!(task["payload"]["maxRunTime"], 1890);
    assert_eq!(task["deadline"], json!({"$fromNow": "92 minutes"}));
    assert_eq!(def["schedule"], json!(["0 0 3 * * *"]));
    assert_eq!(strings(&task["scopes"]), plain_scopes());
    // The pool's owner is the hook's owner.
    assert_eq!(def["metadata"]["owner"], "servo-ops@example.invalid");
    // stderr: the role and who may grant each scope.
    assert!(
        run.stderr
            .contains("the role hook-id:project-servo/tc-ami-w must hold these scopes"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!(
        "queue:create-task:lowest:{QUEUE}  (held by a project administrator of servo)"
    )));
    assert!(run.stderr.contains(&format!(
        "worker-manager:get-worker-pool:{POOL}  (held by every client: role anonymous)"
    )));
    // --json: the definition and the role.
    let doc = w.tc_ami().run(&["--json", "hook", "-w", "w"]).json();
    assert_eq!(doc["definition"], def);
    assert_eq!(doc["role"]["roleId"], format!("hook-id:{HOOK}"));
    let role: Vec<String> = doc["role"]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(role, role_scopes());
    // Nothing was written.
    assert_eq!(calls(&w, "createHook") + calls(&w, "updateHook"), 0);
}

#[test]
fn with_a_config_repo_the_task_checks_it_out_and_the_definition_still_validates() {
    use tc_ami::hook::CHECKOUT_SCRIPT;
    let w = world();
    let run = w.tc_ami().run(&[
        "hook",
        "-w",
        "w",
        "--config-repo",
        CONFIG_REPO,
        "--config-ref",
        "refs/heads/main",
    ]);
    run.assert_code(0);
    let def: Value = serde_json::from_str(&run.stdout).expect("stdout is the definition");
    assert_eq!(schema_message(&def), Value::Null);
    let payload = &def["task"]["payload"];
    // A fixed script; every value reaches it through the payload's env.
    assert_eq!(
        payload["command"],
        json!(["/bin/sh", "-c", CHECKOUT_SCRIPT])
    );
    assert_eq!(
        payload["env"],
        json!({"TC_AMI_CONFIG_REPO": CONFIG_REPO, "TC_AMI_CONFIG_REF": "refs/heads/main", "TC_AMI_WORKER_TYPE": "w"})
    );
    assert_eq!(payload["image"], IMAGE);
    assert_eq!(payload["features"], json!({"taskclusterProxy": true}));
    assert_eq!(payload["maxRunTime"], 1890);
    assert_eq!(strings(&def["task"]["scopes"]), plain_scopes());
    assert!(
        def["metadata"]["description"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "on a shallow checkout of {CONFIG_REPO} (refs/heads/main)"
            )),
        "{def}"
    );
    // From the worker type's keys; a flag wins over its key.
    w.cfg.worker_type(
        "k",
        POOL,
        &format!(
            "regions = [\"us-east-1\"]\nhook_image = \"{IMAGE}\"\nhook_task_queue = \"{QUEUE}\"\n\
             hook_config_repo = \"git@git.example:servo/tc-ami-config.git\"\nhook_config_ref = \"main\""
        ),
    );
    let env = |args: &[&str]| {
        let run = w.tc_ami().run(args);
        run.assert_code(0);
        let def: Value = serde_json::from_str(&run.stdout).unwrap();
        def["task"]["payload"]["env"].clone()
    };
    assert_eq!(
        env(&["hook", "-w", "k"]),
        json!({"TC_AMI_CONFIG_REPO": "git@git.example:servo/tc-ami-config.git", "TC_AMI_CONFIG_REF": "main", "TC_AMI_WORKER_TYPE": "k"})
    );
    assert_eq!(
        env(&[
            "hook",
            "-w",
            "k",
            "--config-repo",
            CONFIG_REPO,
            "--config-ref",
            "v2"
        ]),
        json!({"TC_AMI_CONFIG_REPO": CONFIG_REPO, "TC_AMI_CONFIG_REF": "v2", "TC_AMI_WORKER_TYPE": "k"})
    );
    // No ref: the remote's default branch, and no TC_AMI_CONFIG_REF.
    assert_eq!(
        env(&["hook", "-w", "w", "--config-repo", CONFIG_REPO]),
        json!({"TC_AMI_CONFIG_REPO": CONFIG_REPO, "TC_AMI_WORKER_TYPE": "w"})
    );
}

#[test]
fn scopes_with_a_try_task_a_password_prefix_and_aws_credentials() {
    let w = world();
    w.cfg.write(
        "try.yml",
        &std::fs::read_to_string(repo_root().join("worker-types/try-task.yml")).unwrap(),
    );
    w.cfg.worker_type(
        "t",
        POOL,
        &format!(
            "regions = [\"us-east-1\"]\ntry_task = \"try.yml\"\npassword_secret_prefix = \"project/servo/windows-administrator/t\"\n\
             aws_credentials_secret = \"project/servo/tc-ami/aws\"\n\
             hook_image = \"{IMAGE}\"\nhook_task_queue = \"{QUEUE}\""
        ),
    );
    let run = w.tc_ami().run(&["hook", "-w", "t"]);
    run.assert_code(0);
    let def: Value = serde_json::from_str(&run.stdout).unwrap();
    let mut want = plain_scopes();
    want.extend([
        "queue:cancel-task:-/*".to_string(),
        "queue:create-task:lowest:proj-servo/win2016-try-*".to_string(),
        "queue:create-task:project:none".to_string(),
        "queue:list-task-group:*".to_string(),
        "queue:scheduler-id:-".to_string(),
        "secrets:set:project/servo/windows-administrator/t/*".to_string(),
        "secrets:get:project/servo/tc-ami/aws".to_string(),
        "worker-manager:manage-worker-pool:proj-servo/win2016-try-*".to_string(),
    ]);
    want.sort();
    assert_eq!(strings(&def["task"]["scopes"]), want);
    // The try adds its 2h to the run time.
    assert_eq!(def["task"]["payload"]["maxRunTime"], 1890 + 7200);
    assert_eq!(def["metadata"]["name"], "tc-ami auto -w t");
    // Only the deployment's administrators hold queue:cancel-task:-/*.
    assert!(
        run.stderr
            .contains("queue:cancel-task:-/*  (held only by the deployment's administrators)"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_or_bad_inputs_are_one_line_errors() {
    let w = world();
    w.cfg.worker_type("bare", POOL, "regions = [\"us-east-1\"]");
    let cases: &[(&[&str], &str)] = &[
        (
            &["hook", "-w", "bare", "--task-queue", QUEUE],
            "no Docker image for the hook's task: pass --image IMAGE or set hook_image in",
        ),
        (
            &["hook", "-w", "bare", "--image", IMAGE],
            "no task queue for the hook's task: pass --task-queue Q or set hook_task_queue in",
        ),
        (
            &["hook", "-w", "w", "--schedule", "0 0 25 * * *"],
            "--schedule `0 0 25 * * *` is not a pattern the Hooks service accepts: Constraint error, got value 25 expected range 0-23",
        ),
        (
            &["hook", "-w", "w", "--schedule", "0 0 0 * * * *"],
            "Invalid cron expression, too many fields",
        ),
        (
            &["hook", "-w", "w", "--task-queue", "docker"],
            "--task-queue `docker` is not a task queue id",
        ),
        (
            &["hook", "-w", "w", "--hook-group", "a/b"],
            "--hook-group `a/b`: use 1 to 1000 letters, digits, - or _",
        ),
        (
            &["hook", "-w", "w", "--image", "a b"],
            "--image `a b` is not a Docker image reference",
        ),
        (
            &["hook", "-w", "w", "--config-repo", "http://git.example/a"],
            "--config-repo: `http://git.example/a` is not a repository URL tc-ami accepts: use https://host/path, ssh://[user@]host[:port]/path, user@host:path (ssh) or file:///path",
        ),
        (
            &[
                "hook",
                "-w",
                "w",
                "--config-repo",
                "https://ci:s3cret@git.example/a",
            ],
            "--config-repo: `https://***@git.example/a` holds credentials",
        ),
        (
            &[
                "hook",
                "-w",
                "w",
                "--config-repo",
                "https://git.example/a;touch x #",
            ],
            "--config-repo: it has a space or a control character",
        ),
        (
            &[
                "hook",
                "-w",
                "w",
                "--config-repo",
                "ssh://-oProxyCommand=x/a",
            ],
            "is not a repository URL tc-ami accepts",
        ),
        (
            &[
                "hook",
                "-w",
                "w",
                "--config-repo",
                CONFIG_REPO,
                "--config-ref",
                "a..b",
            ],
            "--config-ref: `a..b` is not a git ref name: it has `..`",
        ),
        (
            &[
                "hook",
                "-w",
                "w",
                "--config-repo",
                CONFIG_REPO,
                "--config-ref=-b",
            ],
            "--config-ref: `-b` is not a git ref name: it starts with `-`",
        ),
        (
            &["hook", "-w", "w", "--config-ref", "main"],
            "a config ref `main` without a config repository: pass --config-repo URL or set hook_config_repo in",
        ),
        (
            &["hook", "-w", "badrepo"],
            "bad value for `hook_config_repo`: `git://git.example/a` is not a repository URL tc-ami accepts",
        ),
        (
            &["hook", "-w", "badref"],
            "bad value for `hook_config_ref`: `main lock` is not a git ref name",
        ),
    ];
    w.cfg.worker_type(
        "badrepo",
        POOL,
        "hook_config_repo = \"git://git.example/a\"",
    );
    w.cfg
        .worker_type("badref", POOL, "hook_config_ref = \"main lock\"");
    for (args, want) in cases {
        let run = w.tc_ami().run(args);
        run.assert_code(1);
        let line = run.error_line();
        assert!(line.contains(want), "{args:?}: {line}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        run.assert_hides("s3cret");
    }
    // A pool outside proj-…: no default hook group.
    w.cfg.worker_type(
        "other",
        "servo/win2016",
        &format!(
            "history_secret = \"servo/history\"\nhook_image = \"{IMAGE}\"\nhook_task_queue = \"{QUEUE}\""
        ),
    );
    let run = w.tc_ami().run(&["hook", "-w", "other"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("pass --hook-group G"),
        "{}",
        run.stderr
    );
    assert_eq!(calls(&w, "createHook"), 0);
}

#[test]
fn apply_creates_then_finds_nothing_to_change_then_updates() {
    let w = world();
    let run = w.tc_ami().run(&["hook", "-w", "w", "--apply", "--yes"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("hook project-servo/tc-ami-w at"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("(new)"));
    assert!(run.stdout.contains("+  \"schedule\": ["), "{}", run.stdout);
    assert!(
        run.stderr.contains("created hook project-servo/tc-ami-w"),
        "{}",
        run.stderr
    );
    assert_eq!(calls(&w, "createHook"), 1);
    let stored = &w.tc.state()["hooks"][HOOK]["definition"];
    assert_eq!(stored["schedule"], json!(["0 0 3 * * *"]));
    assert_eq!(strings(&stored["task"]["scopes"]), plain_scopes());

    // The same again: nothing to change, no write.
    let run = w.tc_ami().run(&["hook", "-w", "w", "--apply", "--yes"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("hook project-servo/tc-ami-w is up to date at"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing changed"));
    assert_eq!(run.stdout, "");
    assert_eq!(calls(&w, "createHook") + calls(&w, "updateHook"), 1);

    // Without --yes and without a terminal: refused, nothing written.
    let run = w
        .tc_ami()
        .run(&["hook", "-w", "w", "--schedule", "0 30 4 * * *", "--apply"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains(
            "refusing to update hook project-servo/tc-ami-w without confirmation: stdin is not a terminal; pass --yes"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(calls(&w, "updateHook"), 0);

    // A new schedule: the diff shows it, then it is updated.
    let run = w.tc_ami().run(&[
        "hook",
        "-w",
        "w",
        "--schedule",
        "0 30 4 * * *",
        "--apply",
        "--yes",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("-    \"0 0 3 * * *\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+    \"0 30 4 * * *\""),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("(new)"));
    assert!(
        run.stderr.contains("updated hook project-servo/tc-ami-w"),
        "{}",
        run.stderr
    );
    assert_eq!(calls(&w, "updateHook"), 1);
    let state = w.tc.state();
    assert_eq!(
        state["hooks"][HOOK]["definition"]["schedule"],
        json!(["0 30 4 * * *"])
    );
    assert!(
        state["hooks"][HOOK]["nextScheduledDate"]
            .as_str()
            .unwrap()
            .ends_with("04:30:00.000Z")
    );
}

#[test]
fn a_client_without_hook_scopes_is_refused_in_one_line() {
    let w = world();
    let run = w
        .tc_ami()
        .client(HOOK_READER_ID, HOOK_READER_TOKEN)
        .run(&["hook", "-w", "w", "--apply", "--yes"]);
    run.assert_code(1);
    let line = run.error_line();
    assert!(
        line.contains(&format!(
            "creating hook {HOOK}: client `{HOOK_READER_ID}` lacks hooks:modify-hook:{HOOK} and assume:hook-id:{HOOK}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(w.tc.state()["hooks"].as_object().map_or(0, |m| m.len()), 0);
}

#[test]
fn trigger_hook_creates_the_task_that_runs_auto_with_the_proxy() {
    let w = world();
    w.tc_ami()
        .run(&["hook", "-w", "w", "--apply", "--yes"])
        .assert_code(0);
    // The official client, as the operator (a project administrator may trigger the
    // project's hooks: hooks:trigger-hook:project-servo/*).
    let task = python_json(
        "import json, sys, taskcluster\n\
         opts = {'rootUrl': sys.argv[1], 'credentials': {'clientId': sys.argv[2], 'accessToken': sys.argv[3]}}\n\
         fired = taskcluster.Hooks(opts).triggerHook('project-servo', 'tc-ami-w', {})\n\
         print(json.dumps(taskcluster.Queue(opts).task(fired['taskId'])))",
        &[&w.tc.server.url, OPERATOR_ID, OPERATOR_TOKEN],
    );
    assert_eq!(task["taskQueueId"], QUEUE);
    assert_eq!(
        task["payload"]["command"],
        json!(["tc-ami", "auto", "-w", "w"])
    );
    assert_eq!(task["payload"]["features"]["taskclusterProxy"], true);
    assert_eq!(task["payload"]["image"], IMAGE);
    assert_eq!(strings(&task["scopes"]), plain_scopes());
    assert_eq!(task["metadata"]["name"], "tc-ami auto -w w");
    // The deadline is what the template asked for: 92 minutes after creation.
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(task[k].as_str().unwrap()).unwrap();
    assert_eq!((at("deadline") - at("created")).num_minutes(), 92);
    assert_eq!((at("expires") - at("created")).num_days(), 30);
}

#[test]
fn the_cron_check_agrees_with_the_emulators_port_of_cron_parser() {
    let patterns = [
        "0 0 3 * * *",
        "0 3 * * *",
        "@daily",
        "@weekly",
        "*/15 * * * *",
        "0 0 0 L * *",
        "0 0 0 * * 5L",
        "0 0 0 * * mon#2",
        "0 0 0 1 jan,jul *",
        "0 0 0 * * 1-7",
        "0 0 0 * * 7,0",
        "0 0 0 ? * ?",
        "1-2-3 * * * *",
        "",
        "   ",
        "5",
        "-5 * * * *",
        "*/5/2 * * * *",
        "0 0 0 * * * *",
        "0 60 * * * *",
        "0 0 x * * *",
        "0 0 0 * foo *",
        "0 0 5-1 * * *",
        "0 */0 * * * *",
        "0 1,,2 * * * *",
        "0 1,1 * * * *",
        "0 0 0 * * 1#6",
        "0 0 0 * * 1-2#2",
        "0 0 0 * * L",
        "0 0 0 L5 * *",
        "0 0 0 32 * *",
        "0 0 0 * 13 *",
        "0 0 0 * * 8",
        "0 0 0 * DEC SUN",
        "0 0 0 1W * *",
        "0 0 0 * * 0-6/2",
        "0 0 0 10-5/2 * *",
        "a b c",
    ];
    let python = python_json(
        "import json, sys, datetime\nfrom tc_emulator_lib import cron\nout = []\n\
         for p in json.loads(sys.argv[1]):\n\
         \x20   try:\n\
         \x20       cron.next_date([p], datetime.datetime(2026, 11, 30, tzinfo=datetime.timezone.utc))\n\
         \x20       out.append(None)\n\
         \x20   except cron.CronError as e:\n\
         \x20       out.append(str(e))\n\
         print(json.dumps(out))",
        &[&json!(patterns.to_vec()).to_string()],
    );
    for (p, want) in patterns.iter().zip(python.as_array().unwrap()) {
        let got = tc_ami::cron::check(p).err();
        assert_eq!(got.as_deref(), want.as_str(), "pattern {p:?}");
    }
}

/// Every scope `auto_scopes` computes is written, with the table's placeholders, in the rows of
/// the README's "Taskcluster scopes" table for build, deploy and try.
#[test]
fn the_computed_scopes_are_the_readme_tables() {
    use tc_ami::hook::{ScopeFacts, auto_scopes, try_task_facts};
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let table = readme
        .split("### Taskcluster scopes")
        .nth(1)
        .and_then(|s| s.split("\n\n").find(|p| p.starts_with("| command")))
        .expect("the scope table");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| {
            ["| `build`", "| `deploy`", "| `try`"]
                .iter()
                .any(|r| l.starts_with(r))
        })
        .collect();
    // build; deploy, rollback, promote; try.
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let rows = rows.concat();
    let facts = ScopeFacts {
        pool_id: "proj-servo/win2016",
        provider_id: "community-tc-workers-aws",
        history_secret: HISTORY,
        password_prefix: Some("project/servo/windows-administrator/w"),
        regions_set: false,
        try_task: Some(try_task_facts(&json!({}))),
        aws_credentials_secret: None,
    };
    let scopes = auto_scopes(&facts);
    assert_eq!(scopes.len(), 13, "{scopes:#?}");
    for scope in scopes {
        let template = scope
            .replace(HISTORY, "H")
            .replace("project/servo/windows-administrator/w", "S")
            .replace("proj-servo/win2016", "P")
            .replace("community-tc-workers-aws", "R")
            .replace(":lowest:", ":<priority>:")
            .replace("scheduler-id:-", "scheduler-id:<schedulerId>")
            .replace("project:none", "project:<projectId>")
            .replace("cancel-task:-/", "cancel-task:<schedulerId>/")
            .replace("provider:R", "provider:<P's providerId>");
        let alt = template.replace("provider:<P's providerId>", "provider:R");
        assert!(
            rows.contains(&format!("`{template}`")) || rows.contains(&format!("`{alt}`")),
            "{scope} ({template}) is not in the README's table"
        );
    }
}

/// The nightly path end to end: the pool runs an image tc-ami built, a newer base image
/// appears, the applied hook fires (`triggerHook`), and the task's command runs as a worker runs
/// it: `TASKCLUSTER_PROXY_URL` at the taskcluster-proxy stand-in signing with the task's scopes
/// only, no Taskcluster credentials, `TASK_ID` set. `auto` rebuilds and deploys to the pool.
#[test]
fn hook_to_task_to_auto_through_the_proxy_deploys_the_pool() {
    use support::proxy::Proxy;
    let w = world();
    let built = w.build();
    let west = built["us-west-2"].as_str().unwrap().to_string();
    w.tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"])
        .assert_code(0);
    w.ec2.server.post(
        "/_sandbox/seed-image",
        json!({"region": "all", "name": "Windows_Server-2016-English-Full-Base-2030.01.01", "creation_date": "2030-01-01T00:00:00.000Z"}),
    );
    w.tc_ami()
        .run(&["hook", "-w", "w", "--apply", "--yes"])
        .assert_code(0);
    let (task, task_id) = trigger(&w);
    let (task, task_id) = (&task, task_id.as_str());
    assert_eq!(task["payload"]["features"]["taskclusterProxy"], true);
    let command = strings(&task["payload"]["command"]);
    assert_eq!(command[0], "tc-ami", "{command:?}");
    let scopes = strings(&task["scopes"]);
    assert_eq!(scopes, plain_scopes());
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let proxy = Proxy::start(&w.tc, (OPERATOR_ID, OPERATOR_TOKEN), &scopes);
    let from = w.tc.requests().len();
    // The image's working directory is the config directory (TcAmi's -C).
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    let run = w.tc_ami().through_proxy(&proxy, task_id).run(&args);
    run.assert_code(0);
    let old: Vec<&str> = built
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let (active, _) = w.pool();
    assert_eq!(active.len(), 4);
    assert!(
        active.iter().all(|lc| !old.contains(&image_of(lc))),
        "the pool still runs {old:?}; stderr:\n{}",
        run.stderr
    );
    // Every Taskcluster call of the task went through the proxy, signed as its client and
    // restricted to the task's scopes.
    let since = &w.tc.requests()[from..];
    assert!(
        since.iter().any(|r| r["apiMethod"] == "updateWorkerPool"),
        "{since:?}"
    );
    assert!(
        since.iter().all(|r| r["clientId"] == OPERATOR_ID),
        "{since:?}"
    );
    assert!(!proxy.forwarded().is_empty());
    // The history records the task.
    let history = w.tc_ami().run(&["--json", "history", "-w", "w"]);
    history.assert_code(0);
    let latest = &history.json()["deployments"][0];
    assert_eq!(latest["who"], format!("task {task_id}"), "{latest}");
}

/// Runs git in `dir` with a fixed identity and no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=tc-ami tests",
            "-c",
            "user.email=tests@example.invalid",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fires the hook with the official client, as the operator; the task and its id.
fn trigger(w: &World) -> (Value, String) {
    let fired = python_json(
        "import json, sys, taskcluster\n\
         opts = {'rootUrl': sys.argv[1], 'credentials': {'clientId': sys.argv[2], 'accessToken': sys.argv[3]}}\n\
         fired = taskcluster.Hooks(opts).triggerHook('project-servo', 'tc-ami-w', {})\n\
         print(json.dumps({'taskId': fired['taskId'], 'task': taskcluster.Queue(opts).task(fired['taskId'])}))",
        &[&w.tc.server.url, OPERATOR_ID, OPERATOR_TOKEN],
    );
    let id = fired["taskId"].as_str().expect("a taskId").to_string();
    (fired["task"].clone(), id)
}

/// Runs the task's command exactly as its payload gives it, in `workdir`, as a docker-worker
/// runs it with the taskcluster-proxy feature: the payload's `env`, `TASKCLUSTER_PROXY_URL` at
/// the proxy stand-in (signing with the task's scopes), `TASK_ID`, no Taskcluster credentials;
/// the image's `tc-ami` is the built binary, first on the `PATH`.
/// Also returns how many requests went through the proxy.
fn run_task(w: &World, task: &Value, task_id: &str, workdir: &Path) -> (Run, usize) {
    use support::proxy::Proxy;
    let scopes = strings(&task["scopes"]);
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let proxy = Proxy::start(&w.tc, (OPERATOR_ID, OPERATOR_TOKEN), &scopes);
    let worker = w.tc_ami().through_proxy(&proxy, task_id);
    let command = strings(&task["payload"]["command"]);
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env_clear().current_dir(workdir);
    for (k, v) in worker.cmd.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    for (k, v) in task["payload"]["env"].as_object().expect("an env") {
        cmd.env(k, v.as_str().expect("a string"));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_tc-ami"))
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path).env("TMPDIR", workdir);
    let run = Run::from(cmd.output().expect("run the task's command"));
    (run, proxy.forwarded().len())
}

/// The nightly path with the config in a repository: the pool runs an image built from the
/// first-boot script of the repository's first commit; a second commit changes the script (in
/// the repository only: the local config directory keeps the old one); the hook with
/// `--config-repo file://…` fires, and its task's real command, the fixed shell script with the
/// payload's env, checks the repository out and runs `auto` on it: it rebuilds for `script
/// changed` alone and deploys. Fired again with `--config-ref main`, it fetches that ref and
/// finds the image up to date.
#[test]
fn the_task_checks_out_the_config_repository_and_rebuilds_for_a_changed_script() {
    use tc_ami::hook::CHECKOUT_SCRIPT;
    let w = world();
    let repo = tempfile::tempdir().expect("tempdir");
    for file in [
        "base-ami.txt",
        "scripts/first-boot.ps1",
        "worker-types/w.toml",
    ] {
        let to = repo.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(w.cfg.path().join(file), to).unwrap();
    }
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "the config"]);
    let built = w.build();
    let west = built["us-west-2"].as_str().unwrap().to_string();
    w.tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"])
        .assert_code(0);
    // A change to the first-boot script, committed to the repository.
    let script = repo.path().join("scripts/first-boot.ps1");
    let mut text = std::fs::read_to_string(&script).unwrap();
    text.push_str("# a change merged after the deploy\r\n");
    std::fs::write(&script, text).unwrap();
    // The guest simulator checks the user data against the changed script.
    w.ec2
        .configure(json!({"first_boot_script": script.display().to_string()}));
    git(
        repo.path(),
        &["commit", "-q", "-a", "-m", "first-boot: a change"],
    );
    let head = git(repo.path(), &["rev-parse", "HEAD"]);

    let url = format!("file://{}", repo.path().display());
    w.tc_ami()
        .run(&["hook", "-w", "w", "--config-repo", &url, "--apply", "--yes"])
        .assert_code(0);
    let (task, task_id) = trigger(&w);
    assert_eq!(
        task["payload"]["command"],
        json!(["/bin/sh", "-c", CHECKOUT_SCRIPT])
    );
    let workdir = tempfile::tempdir().expect("tempdir");
    let (run, forwarded) = run_task(&w, &task, &task_id, workdir.path());
    run.assert_code(0);
    assert!(forwarded > 0);
    assert!(
        run.stderr
            .contains(&format!("tc-ami: config repository {url} at commit {head}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "w: rebuilding and deploying to worker pool proj-servo/win2016: script changed"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("newer base image"), "{}", run.stdout);
    let old: Vec<&str> = built
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let (active, _) = w.pool();
    assert_eq!(active.len(), 4);
    assert!(
        active.iter().all(|lc| !old.contains(&image_of(lc))),
        "the pool still runs {old:?}; stderr:\n{}",
        run.stderr
    );
    let history = w.tc_ami().run(&["--json", "history", "-w", "w"]);
    assert_eq!(
        history.json()["deployments"][0]["who"],
        format!("task {task_id}")
    );

    // With a ref: fetched, and the image built from it is up to date.
    w.tc_ami()
        .run(&[
            "hook",
            "-w",
            "w",
            "--config-repo",
            &url,
            "--config-ref",
            "main",
            "--apply",
            "--yes",
        ])
        .assert_code(0);
    let (task, task_id) = trigger(&w);
    assert_eq!(task["payload"]["env"]["TC_AMI_CONFIG_REF"], "main");
    let (run, forwarded) = run_task(&w, &task, &task_id, workdir.path());
    run.assert_code(0);
    assert!(forwarded > 0);
    assert!(
        run.stderr
            .contains(&format!("tc-ami: config repository {url} at commit {head}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("w: the live image is up to date; nothing to build or deploy"),
        "{}",
        run.stderr
    );
}

/// Values full of shell syntax pass the checks (only whitespace and control characters are
/// refused in a URL's path; `$`, `;`, `(` and backquotes are allowed in a ref name), go through
/// the definition and JSON-e's rendering unchanged, and the task's script hands each to git as
/// one argument: git fails to clone or fetch, and nothing of them ran, with a ref or without.
#[test]
fn a_value_with_shell_syntax_is_never_run_by_the_tasks_script() {
    let w = world();
    let url = "file:///nonexistent/a$(touch${IFS}pwned-1)`touch${IFS}pwned-2`;touch${IFS}pwned-3|touch${IFS}pwned-4&&'q'";
    let git_ref = "main$(touch${IFS}pwned-5)`touch${IFS}pwned-6`;touch${IFS}pwned-7";
    let workdir = tempfile::tempdir().expect("tempdir");
    for with_ref in [false, true] {
        let mut args = vec!["hook", "-w", "w", "--config-repo", url, "--apply", "--yes"];
        if with_ref {
            args.extend(["--config-ref", git_ref]);
        }
        w.tc_ami().run(&args).assert_code(0);
        let (task, task_id) = trigger(&w);
        assert_eq!(task["payload"]["env"]["TC_AMI_CONFIG_REPO"], url);
        if with_ref {
            assert_eq!(task["payload"]["env"]["TC_AMI_CONFIG_REF"], git_ref);
        }
        let (run, forwarded) = run_task(&w, &task, &task_id, workdir.path());
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains("fatal:"), "{}", run.stderr);
        assert_eq!(forwarded, 0, "tc-ami never ran");
    }
    let mut pwned = Vec::new();
    let mut dirs = vec![workdir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.clone());
            }
            if path.to_string_lossy().contains("pwned") {
                pwned.push(path);
            }
        }
    }
    assert!(pwned.is_empty(), "a value ran as shell text: {pwned:?}");
}
