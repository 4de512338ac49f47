//! tc-ami inside a Taskcluster task: every Taskcluster call through taskcluster-proxy (the
//! sandbox's stand-in) with no credentials in tc-ami's environment, refusals that name the proxy
//! and the task's scopes, and AWS credentials from a Taskcluster secret
//! (`aws_credentials_secret`).

mod support;

use serde_json::{Value, json};
use support::proxy::Proxy;
use support::*;

const HISTORY: &str = "project/servo/tc-ami/deployments/proj-servo/win2016";
const TASK_ID: &str = "fN1kYhSJTpSEYUvCQyRz9Q";
const AWS_SECRET: &str = "project/servo/tc-ami/aws";
const KEY_ID: &str = "AKIASECRETKEYID00001";
const SECRET_KEY: &str = "wJalrXUtnFEMI-secret-access-key-from-the-secret";
const SESSION_TOKEN: &str = "session-token-from-the-secret-0123456789";

/// The emulator's API requests from the `from`-th on.
fn requests_since(w: &World, from: usize) -> Vec<Value> {
    w.tc.requests().into_iter().skip(from).collect()
}

#[test]
fn a_task_deploys_through_the_proxy_with_no_credentials_of_its_own() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    assert_ne!(w.live_image("us-west-2"), west);
    let proxy = Proxy::start(&w.tc, w.tc.client, &[]);
    let task = || w.tc_ami().through_proxy(&proxy, TASK_ID);
    let from = w.tc.requests().len();

    let run = task().run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0).assert_hides(OPERATOR_TOKEN);
    // The pool changed; the diff header still names the deployment, not the proxy.
    assert_eq!(w.live_image("us-west-2"), west);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains(&format!(
            "diff tc-ami {}/api/worker-manager/v1/worker-pool/{POOL}",
            w.tc.server.url
        )),
        "{out}"
    );
    task()
        .run(&["diff", "-w", "w", "--image", &west])
        .assert_code(0);
    let status = task().run(&["--json", "status", "-w", "w"]);
    status.assert_code(0);
    assert!(
        status.stdout.contains(&west),
        "status shows the live image: {}",
        status.stdout
    );
    let history = task().run(&["--json", "history", "-w", "w"]);
    history.assert_code(0);
    let latest = &history.json()["deployments"][0];
    assert_eq!(latest["who"], format!("task {TASK_ID}"), "{latest}");
    assert_eq!(latest["kind"], "deploy");

    // Every call went through the proxy, which signed it as the operator: none unsigned, none
    // straight to the deployment (tc-ami had no credentials to sign with).
    let since = requests_since(&w, from);
    assert!(since.len() >= 8, "{since:?}");
    for r in &since {
        assert_eq!(r["clientId"], OPERATOR_ID, "{r}");
    }
    assert_eq!(
        proxy.forwarded().len(),
        since.len(),
        "{:?}",
        proxy.forwarded()
    );
    assert!(
        proxy
            .forwarded()
            .iter()
            .any(|l| l.contains("/api/worker-manager/v1/worker-pool/proj-servo%2Fwin2016 | POST")),
        "the push went through the proxy: {:?}",
        proxy.forwarded()
    );
    // The listings tc-ami signs itself (status's rollout line) are plain GETs through it too.
    assert!(
        since
            .iter()
            .any(|r| r["apiMethod"] == "listWorkersForWorkerPool" && r["status"] == 200),
        "{since:?}"
    );
}

#[test]
fn a_refusal_through_the_proxy_names_the_proxy_and_the_missing_scope() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let before = w.pool().0;
    let updates = w.updates();
    // The task may read and edit the pool and read the history, but not write the history.
    let proxy = Proxy::start(
        &w.tc,
        w.tc.client,
        &[
            "worker-manager:get-worker-pool:*",
            "worker-manager:list-workers:*",
            "worker-manager:manage-worker-pool:proj-servo/*",
            "worker-manager:provider:community-tc-workers-*",
            "secrets:get:project/servo/*",
        ],
    );
    let run = w
        .tc_ami()
        .through_proxy(&proxy, TASK_ID)
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.starts_with(&format!(
            "tc-ami: error: the task's scopes (through taskcluster-proxy at {}) lack the scope secrets:set:{HISTORY} needed to record the deployments of worker pool {POOL}",
            proxy.url()
        )),
        "{err}"
    );
    assert!(err.ends_with("nothing was pushed"), "{err}");
    assert!(!err.contains("client `"), "{err}");
    assert_eq!(w.updates(), updates);
    assert_eq!(w.pool().0, before);
    assert!(w.tc.state()["secrets"][HISTORY].is_null());
}

#[test]
fn the_environment_of_a_task_is_checked() {
    let w = World::new();
    let proxy = Proxy::start(&w.tc, w.tc.client, &[]);
    // A malformed proxy URL: one line, whichever command.
    for bad in ["taskcluster:8080", "http://proxy/?x=1"] {
        let run = w
            .tc_ami()
            .through_proxy(&proxy, TASK_ID)
            .env("TASKCLUSTER_PROXY_URL", bad)
            .run(&["history", "-w", "w"]);
        run.assert_code(1);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.error_line().starts_with(&format!(
                "tc-ami: error: TASKCLUSTER_PROXY_URL `{bad}` is not an http(s) URL"
            )),
            "{}",
            run.stderr
        );
    }
    // The proxy without the deployment's root URL: said, not guessed.
    let run = w
        .tc_ami()
        .through_proxy(&proxy, TASK_ID)
        .env_remove("TASKCLUSTER_ROOT_URL")
        .run(&["history", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line().starts_with(&format!(
            "tc-ami: error: TASKCLUSTER_ROOT_URL is not set: tc-ami would call Taskcluster through taskcluster-proxy at {}",
            proxy.url()
        )),
        "{}",
        run.stderr
    );
    assert!(proxy.forwarded().is_empty());
    // A client id and the proxy: the explicit credentials, straight to the deployment, said at -v.
    let run = w
        .tc_ami()
        .env("TASKCLUSTER_PROXY_URL", proxy.url())
        .run(&["-v", "history", "-w", "w"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "TASKCLUSTER_CLIENT_ID is set, so tc-ami calls {} as client `{OPERATOR_ID}` with those credentials, not through taskcluster-proxy at {}",
            w.tc.server.url,
            proxy.url()
        )),
        "{}",
        run.stderr
    );
    assert!(proxy.forwarded().is_empty(), "{:?}", proxy.forwarded());
}

/// The emulator with the sandbox's pools and the secret `AWS_SECRET` holding `value`.
fn world_with_aws_secret(value: Value) -> World {
    let secrets = json!({AWS_SECRET: {"secret": value, "expires": "3000-01-01T00:00:00.000Z"}});
    let w = World::with_tc(Tc::start_with_secrets(seed_pools(), secrets));
    w.cfg.worker_type(
        "w",
        POOL,
        &format!("regions = [\"us-east-1\"]\naws_credentials_secret = \"{AWS_SECRET}\""),
    );
    w
}

fn the_keys() -> Value {
    json!({"access_key_id": KEY_ID, "secret_access_key": SECRET_KEY, "session_token": SESSION_TOKEN})
}

/// tc-ami with no AWS credentials in its environment (HOME is empty, the instance metadata
/// service is off): only the secret can give it any.
fn without_aws_keys(w: &World) -> TcAmi {
    w.tc_ami()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
}

fn ec2_requests(w: &World) -> Value {
    w.ec2.stats()["by_access_key_id"].clone()
}

#[test]
fn aws_credentials_come_from_the_secret_and_never_show() {
    let w = world_with_aws_secret(the_keys());
    // Through the proxy (the task's scopes read the secret), with -vv: EC2 works, signed with
    // the secret's key id alone.
    let proxy = Proxy::start(&w.tc, w.tc.client, &[]);
    let run = without_aws_keys(&w)
        .through_proxy(&proxy, TASK_ID)
        .run(&["-vv", "--json", "base-ami", "-w", "w"]);
    run.assert_code(0)
        .assert_hides(SECRET_KEY)
        .assert_hides(SESSION_TOKEN)
        .assert_hides(KEY_ID);
    assert!(
        run.json()["image"]["id"].as_str().is_some(),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains(&format!("from the Taskcluster secret `{AWS_SECRET}`")),
        "{}",
        run.stderr
    );
    let by_key = ec2_requests(&w);
    assert_eq!(by_key.as_object().map(|m| m.len()), Some(1), "{by_key}");
    assert!(by_key[KEY_ID].as_u64().unwrap_or(0) >= 1, "{by_key}");

    // A whole build, and status, with the caller's own Taskcluster credentials.
    let run = without_aws_keys(&w).run(&["-vv", "--json", "build", "-w", "w"]);
    run.assert_code(0)
        .assert_hides(SECRET_KEY)
        .assert_hides(SESSION_TOKEN)
        .assert_hides(KEY_ID);
    without_aws_keys(&w)
        .run(&["-vv", "status", "-w", "w"])
        .assert_code(0)
        .assert_hides(SECRET_KEY)
        .assert_hides(SESSION_TOKEN);
    let by_key = ec2_requests(&w);
    assert_eq!(by_key.as_object().map(|m| m.len()), Some(1), "{by_key}");
    assert!(by_key[KEY_ID].as_u64().unwrap_or(0) > 10, "{by_key}");

    // Without the key, the same command has no AWS credentials at all: the secret was it.
    w.cfg
        .worker_type("plain", POOL, "regions = [\"us-east-1\"]");
    let run = without_aws_keys(&w).run(&["base-ami", "-w", "plain"]);
    run.assert_code(1);
}

#[test]
fn a_missing_refused_or_malformed_aws_secret_stops_before_any_aws_call() {
    let w = world_with_aws_secret(json!({
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET_KEY,
        "region": "us-west-2",
    }));
    let file = w.cfg.path().join("worker-types/w.toml");
    let run = without_aws_keys(&w).run(&["-vv", "deploy", "-w", "w", "--yes"]);
    run.assert_code(1)
        .assert_hides(SECRET_KEY)
        .assert_hides(KEY_ID);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: cannot use the AWS credentials of worker type w from the Taskcluster secret `{AWS_SECRET}` (aws_credentials_secret in {}): it has the key `region`; it must be {{\"access_key_id\": \"…\", \"secret_access_key\": \"…\"}} (and optionally \"session_token\"), strings, no other keys; nothing was done",
            file.display()
        )
    );

    // A client that may not read the secret: the scope is named.
    let run = without_aws_keys(&w)
        .client(READONLY_ID, READONLY_TOKEN)
        .run(&["base-ami", "-w", "w"]);
    run.assert_code(1);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: client `{READONLY_ID}` lacks the scope secrets:get:{AWS_SECRET} needed to read the AWS credentials of worker type w from the Taskcluster secret `{AWS_SECRET}` (aws_credentials_secret in {}) (403 at {}); nothing was done",
            file.display(),
            w.tc.server.url
        )
    );

    // A task whose scopes do not cover the secret: the proxy and the scope are named.
    let proxy = Proxy::start(&w.tc, w.tc.client, &["worker-manager:get-worker-pool:*"]);
    let run = without_aws_keys(&w)
        .through_proxy(&proxy, TASK_ID)
        .run(&["base-ami", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line().starts_with(&format!(
            "tc-ami: error: the task's scopes (through taskcluster-proxy at {}) lack the scope secrets:get:{AWS_SECRET} needed to read the AWS credentials of worker type w",
            proxy.url()
        )),
        "{}",
        run.stderr
    );

    // A secret that does not exist.
    w.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\naws_credentials_secret = \"project/servo/tc-ami/no-such\"",
    );
    let run = without_aws_keys(&w).run(&["status", "-w", "w"]);
    run.assert_code(1);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("from the Taskcluster secret `project/servo/tc-ami/no-such`")
            && out.contains("there is no such secret"),
        "{out}"
    );

    // Nothing reached EC2, nothing was created, no pool touched.
    assert_eq!(w.ec2.stats()["total"], 0, "{}", w.ec2.stats());
    assert_eq!(w.updates(), 0);
}

#[test]
fn cleanup_wants_one_set_of_aws_credentials_for_its_worker_types() {
    let w = world_with_aws_secret(the_keys());
    w.cfg
        .worker_type("plain", POOL, "regions = [\"us-east-1\"]");
    let run = w.tc_ami().run(&["cleanup", "--dry-run"]);
    run.assert_code(1);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: the worker types take their AWS credentials from different places (plain: the standard AWS credential chain; w: the secret `{AWS_SECRET}`), and one run uses one set; run it for each worker type with -w W; nothing was done"
        )
    );
    assert_eq!(w.ec2.stats()["total"], 0, "{}", w.ec2.stats());
    // One worker type at a time: its own credentials.
    let run = without_aws_keys(&w).run(&["cleanup", "-w", "w", "--dry-run"]);
    run.assert_code(0).assert_hides(SECRET_KEY);
    let by_key = ec2_requests(&w);
    assert_eq!(by_key.as_object().map(|m| m.len()), Some(1), "{by_key}");
    assert!(by_key[KEY_ID].as_u64().unwrap_or(0) >= 1, "{by_key}");
}
