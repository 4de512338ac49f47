//! Scopes and the deployment history: what a project administrator may do (the whole flow),
//! what clients with fewer scopes are stopped from doing before anything starts, where the
//! history lives, and that two tc-ami deploying at once both leave their record.

mod support;

use std::process::Stdio;

use serde_json::{Value, json};
use support::*;

/// The history secret of the pool by default (PRODUCT.md, "Where state lives").
const HISTORY: &str = "project/servo/tc-ami/deployments/proj-servo/win2016";
const LEGACY: &str = "tc-ami/deployments/proj-servo/win2016";

fn run_instances(w: &World) -> u64 {
    w.ec2.stats()["requests"]["RunInstances"]
        .as_u64()
        .unwrap_or(0)
}

/// Pool updates the emulator accepted.
fn accepted_updates(w: &World) -> usize {
    w.tc.state()["requests"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|x| x["apiMethod"] == "updateWorkerPool" && x["status"] == 200)
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_project_administrator_runs_the_whole_flow() {
    // The default client of the tests: what a Servo project administrator holds.
    let w = World::new();
    w.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\npassword_secret_prefix = \"project/servo/windows-administrator/w\"",
    );
    w.cfg.worker_type(
        "staging",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let deploy = || {
        let run = w.tc_ami().run(&["--json", "deploy", "-w", "w", "--yes"]);
        run.assert_code(0);
        run.json()["images"]["us-west-2"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = deploy();
    let b = deploy();
    let c = deploy();
    assert_eq!(w.live_image("us-west-2"), c);
    let run = w.tc_ami().run(&["diff", "-w", "w"]);
    run.assert_code(0);
    for back_to in [&b, &a] {
        w.tc_ami()
            .run(&["rollback", "-w", "w", "--yes"])
            .assert_code(0);
        assert_eq!(w.live_image("us-west-2"), *back_to);
    }
    let d = w.history();
    assert_eq!(d.len(), 5, "{d:?}");
    assert!(d.iter().all(|r| r["who"] == OPERATOR_ID));
    let ids: std::collections::BTreeSet<&str> = d
        .iter()
        .map(|r| r["deployment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "every deploymentId is new: {ids:?}");
    // The history is where a project administrator may write it.
    let state = w.tc.state();
    assert!(
        state["secrets"][HISTORY].is_object(),
        "{}",
        state["secrets"]
    );
    assert!(state["secrets"][LEGACY].is_null());
    // Every password went to the project's namespace.
    assert!(
        state["secrets"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("project/servo/windows-administrator/w/ami-"))
            .count()
            >= 3
    );

    w.tc_ami()
        .run(&["deploy", "-w", "staging", "--yes"])
        .assert_code(0);
    let run = w.tc_ami().run(&[
        "--json", "promote", "--from", "staging", "--to", "w", "--yes",
    ]);
    run.assert_code(0);
    assert_eq!(w.history()[0]["kind"], "promote");
    w.tc_ami()
        .run(&["cleanup", "-w", "w", "--yes"])
        .assert_code(0);
    w.tc_ami().run(&["status", "-w", "w"]).assert_code(0);
    // No probe secret is left behind.
    let state = w.tc.state();
    let names: Vec<&String> = state["secrets"].as_object().unwrap().keys().collect();
    assert!(
        names.iter().all(|n| !n.contains("tc-ami-probe")),
        "{names:?}"
    );
}

#[test]
fn a_read_only_client_launches_nothing_and_names_the_scope() {
    let w = World::new();
    let ro = || w.tc_ami().client(READONLY_ID, READONLY_TOKEN);
    // deploy would build: it stops before, on the history it may not read.
    let run = ro().run(&["deploy", "-w", "w", "--yes"]);
    run.assert_code(1);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: client `{READONLY_ID}` lacks the scope secrets:get:{HISTORY} needed to read the deployment history of worker pool {POOL} in the secret {HISTORY} (403 at {}); nothing was built, copied or pushed",
            w.tc.server.url
        )
    );
    // build stops before launch, on the password it may not store.
    w.cfg.worker_type(
        "p",
        POOL,
        "regions = [\"us-east-1\"]\npassword_secret_prefix = \"project/servo/windows-administrator/p\"",
    );
    let run = ro().run(&["build", "-w", "p"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!("client `{READONLY_ID}` lacks the scope secrets:set:project/servo/windows-administrator/p/*")),
        "{err}"
    );
    assert!(err.ends_with("nothing was launched"), "{err}");
    assert_eq!(run_instances(&w), 0);
    w.ec2.assert_nothing_left();
    assert_eq!(w.updates(), 0);
}

#[test]
fn a_client_that_may_not_touch_the_history_changes_no_pool() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let before = w.pool().0;
    let updates = w.updates();
    let nh = || w.tc_ami().client(NO_HISTORY_ID, NO_HISTORY_TOKEN);
    let run = nh().run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!(
            "client `{NO_HISTORY_ID}` lacks the scope secrets:get:{HISTORY}"
        )),
        "{err}"
    );
    assert_eq!(w.updates(), updates);
    assert_eq!(w.pool().0, before);
    // It would build: nothing is launched either.
    let launched = run_instances(&w);
    nh().run(&["deploy", "-w", "w", "--yes"]).assert_code(1);
    assert_eq!(run_instances(&w), launched);

    // May read the history but not write it: stopped by the write probe, no pool update.
    let run = w
        .tc_ami()
        .client(HISTORY_READER_ID, HISTORY_READER_TOKEN)
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!(
            "lacks the scope secrets:set:{HISTORY} needed to record the deployments of worker pool {POOL}"
        )),
        "{err}"
    );
    assert!(err.ends_with("nothing was pushed"), "{err}");
    assert_eq!(w.updates(), updates);
    assert_eq!(w.pool().0, before);
    assert!(w.tc.state()["secrets"][HISTORY].is_null());

    // The scope of another provider than the pool's: named, and the pool is unchanged.
    let run = w
        .tc_ami()
        .client(OTHER_PROVIDER_ID, OTHER_PROVIDER_TOKEN)
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(
            "lacks the scope worker-manager:provider:community-tc-workers-aws needed to update worker pool proj-servo/win2016"
        ),
        "{err}"
    );
    assert_eq!(accepted_updates(&w), 0);
    assert_eq!(w.pool().0, before);
    // Its history probe left nothing behind.
    assert!(w.tc.state()["secrets"][HISTORY].is_null());
}

#[test]
fn the_scope_check_changes_nothing_in_the_pool() {
    let w = World::new();
    let first = w.build()["us-west-2"].as_str().unwrap().to_string();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    for image in [&first, &west] {
        w.tc_ami()
            .run(&["deploy", "-w", "w", "--image", image, "--yes"])
            .assert_code(0);
    }
    let (_, rows_before) = w.pool();
    let def_before = w.tc.state()["workerPools"][POOL]["definition"].clone();
    let updates = w.updates();
    // The same image again: nothing to push, so nothing to prove either.
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0);
    assert!(run.stderr.contains("is up to date"), "{}", run.stderr);
    assert_eq!(w.updates(), updates);
    // A rollback proves its scopes with an update that posts the pool back unchanged; someone
    // else's change right after that stops the push. So only the probe reached the pool: it
    // gave no launch config a new id, archived none, and changed nothing in the definition
    // but its lastModified.
    w.tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 3, "patch": {"description": "edited after the probe"}}),
    );
    let run = w.tc_ami().run(&["rollback", "-w", "w", "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("changed") && err.contains("after the diff was computed"),
        "{err}"
    );
    assert!(err.contains("nothing was pushed"), "{err}");
    assert_eq!(w.updates(), updates + 1, "the probe only");
    let (_, rows) = w.pool();
    // (The rows' table order is not compared: an update moves the rows it rewrites, as
    // PostgreSQL does.)
    let ids = |rows: &[Value]| -> std::collections::BTreeSet<(String, bool)> {
        rows.iter()
            .map(|r| {
                (
                    r["launchConfigId"].as_str().unwrap().to_string(),
                    r["isArchived"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&rows), ids(&rows_before));
    let mut def = w.tc.state()["workerPools"][POOL]["definition"].clone();
    assert_eq!(def["description"], "edited after the probe");
    def["description"] = def_before["description"].clone();
    def["lastModified"] = def_before["lastModified"].clone();
    assert_eq!(def, def_before);
}

#[test]
fn a_push_that_fails_verification_is_recorded_as_unverified() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    // Requests to the pool: the first read, the probe (read, update), the check before the
    // push, the push; the change lands right after the push, before it is read back.
    w.tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 5, "patch": {"description": "edited right after the push"}}),
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("pushed to proj-servo/win2016, but the pool does not hold what was pushed"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "recorded as #1 (unverified) in the secret {HISTORY}"
        )),
        "{err}"
    );
    let d = w.history();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["unverified"], true);
    assert_eq!(d[0]["after"]["us-west-2"], west.as_str());
    let run = w.tc_ami().run(&["history", "-w", "w"]);
    assert!(
        run.stdout.contains("#1 deploy (unverified)"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unknown_history_format_is_an_error_not_a_misreading() {
    let secrets = json!({HISTORY: {
        "secret": {"format": 2, "workerPoolId": POOL, "deployments": {"by-seq": {}}},
        "expires": "3000-01-01T00:00:00.000Z",
    }});
    let w = World::with_tc(Tc::start_with_secrets(seed_pools(), secrets));
    let run = w.tc_ami().run(&["history", "-w", "w"]);
    run.assert_code(1);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: the deployment history of worker pool {POOL} in the Taskcluster secret {HISTORY} is unreadable: it has format 2, and this tc-ami reads format 1 only; use the tc-ami release that wrote it, or a newer one"
        )
    );
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    assert!(run.error_line().contains("format 2"), "{}", run.stderr);
    assert_eq!(w.updates(), 0);
    // The secret is left as it was.
    assert_eq!(w.tc.state()["secrets"][HISTORY]["secret"]["format"], 2);
}

#[test]
fn an_old_history_secret_is_read_and_the_new_one_written() {
    let old = json!({
        "format": 1,
        "workerPoolId": POOL,
        "deployments": [{
            "seq": 1, "time": "2026-11-20T10:00:00Z", "who": "someone", "kind": "deploy",
            "worker_type": "w", "before": {}, "deployment_id": "2026-11-20-ami-00000000000a2016a",
            "after": {"us-west-2": "ami-00000000000a2016a", "us-east-1": "ami-00000000000e2016a"},
        }],
    });
    let secrets = json!({LEGACY: {"secret": old, "expires": "3000-01-01T00:00:00.000Z"}});
    let w = World::with_tc(Tc::start_with_secrets(seed_pools(), secrets));
    // A project administrator may not read it: it has no history yet, and says nothing.
    let run = w.tc_ami().run(&["--json", "history", "-w", "w"]);
    run.assert_code(0);
    assert_eq!(run.json()["deployments"], json!([]));
    // A client that may (the broad admin: the old name is outside every project's namespace)
    // reads it, says so, and records the next deployment under the new name.
    let admin = || w.tc_ami().client(ADMIN_ID, ADMIN_TOKEN);
    let run = admin().run(&["--json", "history", "-w", "w"]);
    run.assert_code(0);
    assert_eq!(run.json()["deployments"][0]["who"], "someone");
    assert!(
        run.stderr
            .contains(&format!("was read from the old secret {LEGACY}")),
        "{}",
        run.stderr
    );
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let run = admin().run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains(&format!("the next deployment is recorded in {HISTORY}")),
        "{}",
        run.stderr
    );
    let state = w.tc.state();
    let new = &state["secrets"][HISTORY]["secret"]["deployments"];
    assert_eq!(new.as_array().unwrap().len(), 2, "{new}");
    assert_eq!(new[0]["who"], "someone");
    assert_eq!(new[1]["seq"], 2);
    // The old secret is left as it was; from now on the project administrator sees all.
    assert_eq!(
        state["secrets"][LEGACY]["secret"]["deployments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(w.history().len(), 2);
}

#[test]
fn two_deploys_at_once_both_leave_their_record() {
    let w = World::new();
    let a = w.build()["us-west-2"].as_str().unwrap().to_string();
    let b = w.build()["us-west-2"].as_str().unwrap().to_string();
    // Slow answers, so that the two runs go step by step together: both check the pool before
    // either pushes, both push, both read the history before either writes it.
    w.tc.server
        .post("/_emulator/faults", json!({"latency_ms": 1000}));
    let spawn = |image: &str| {
        let mut t = w.tc_ami();
        t.cmd
            .args(["deploy", "-w", "w", "--image", image, "--yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = t.cmd.spawn().expect("spawn tc-ami");
        (t, child)
    };
    let (_ta, pa) = spawn(&a);
    let (_tb, pb) = spawn(&b);
    let runs: Vec<Run> = [pa, pb]
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().expect("wait")))
        .collect();
    w.tc.server
        .post("/_emulator/faults", json!({"latency_ms": 0}));
    let pushed =
        |r: &Run| r.code == 0 || r.error_line().contains("pushed to proj-servo/win2016, but");
    assert!(
        runs.iter().all(pushed),
        "both runs must push for this test to mean anything: {:?}",
        runs.iter().map(|r| r.error_line()).collect::<Vec<_>>()
    );
    let d = w.history();
    assert_eq!(d.len(), 2, "{d:#?}");
    let mut seqs: Vec<u64> = d.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2]);
    for image in [&a, &b] {
        assert!(
            d.iter().any(|r| r["after"]["us-west-2"] == image.as_str()),
            "{image} recorded: {d:#?}"
        );
    }
    // The push that was overwritten at once says so, in its exit and its record; the other
    // one is what is live.
    let live = w.live_image("us-west-2");
    for r in &d {
        let is_live = r["after"]["us-west-2"] == live.as_str();
        assert_eq!(r["unverified"] == true, !is_live, "{r}");
        assert_eq!(r["live"], is_live, "{r}");
    }
    assert_eq!(runs.iter().filter(|r| r.code == 0).count(), 1);
}
