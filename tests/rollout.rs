//! `rollout`, `rollout --watch`, `rollout --retire` and the rollout line of `status` and
//! `deploy`, against the Taskcluster emulator's simulated workers (and moto, for the deploy).

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// A client that may deploy but not list the pool's workers.
const DEPLOYER_ID: &str = "tc-ami-deployer";
const DEPLOYER_TOKEN: &str = "test-deployer-token-0123456789abcdefghijklm";
/// A client that may look at the pool and its workers, not remove them.
const LISTER_ID: &str = "tc-ami-lister";
const LISTER_TOKEN: &str = "test-lister-token-0123456789abcdefghijklmnop";

/// An emulator with the sandbox's pools (win2016 with `min_capacity`) and a frozen simulated
/// clock: only `advance` and `time_scale` move it. tc-ami runs as the harness's operator, which
/// holds what `rollout --retire --idle-only` needs (the Queue's worker listing and task status).
fn emulator(min_capacity: u32) -> Tc {
    let mut pools = seed_pools();
    for p in pools.as_array_mut().unwrap() {
        if p["workerPoolId"] == POOL {
            p["config"]["minCapacity"] = json!(min_capacity);
        }
    }
    Tc::start_with(
        pools,
        json!({
            "clients": [{"clientId": LISTER_ID, "accessToken": LISTER_TOKEN,
                         "scopes": ["worker-manager:get-worker-pool:*", "worker-manager:list-workers:*"]},
                        {"clientId": DEPLOYER_ID, "accessToken": DEPLOYER_TOKEN,
                         "scopes": ["worker-manager:get-worker-pool:*", "worker-manager:manage-worker-pool:*",
                                    "worker-manager:provider:*", "secrets:*"]}],
            "simulation": {"timeScale": 0},
        }),
    )
}

/// The pool's current launch config ids in a region.
fn current_in(w: &World, region: &str) -> Vec<String> {
    let (active, _) = w.pool();
    active
        .iter()
        .filter(|l| l["configuration"]["region"] == region)
        .map(|l| l["launchConfigId"].as_str().unwrap().to_string())
        .collect()
}

/// Someone changes the image of the pool's us-west-2 launch configs: the service archives them
/// and gives the new content new ids (the emulator's concurrent change, applied now).
fn archive_us_west_2(tc: &Tc) {
    let patch = json!({"config": {"launchConfigs": {"us-west-2": {"launchConfig": {"ImageId": "ami-0000000000000beef"}}}}});
    tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 0, "patch": patch}),
    );
}

fn worker<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter()
        .find(|w| w["workerId"] == id)
        .unwrap_or_else(|| panic!("no worker {id}"))
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn removals(tc: &Tc) -> usize {
    tc.requests()
        .iter()
        .filter(|r| r["apiMethod"] == "removeWorker")
        .count()
}

#[test]
fn deploy_then_rollout_watch_until_the_old_workers_are_gone() {
    let w = World::with_tc(emulator(3));
    // The provisioner requested three workers (minCapacity); they boot.
    w.tc.advance(120.0);
    // A fourth is busy with a task for an hour (simulated).
    w.tc.add_workers(POOL, json!([{"state": "running", "taskMaxRunTime": 3600}]));
    let run = w.tc_ami().run(&["--json", "rollout", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["progress"]["total"], 4);
    assert_eq!(doc["progress"]["on_current"], 4);
    assert_eq!(doc["done"], true);

    let run = w.tc_ami().run(&["deploy", "-w", "w", "--yes"]);
    run.assert_code(0);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rollout: 0 of 4 workers on the new image; ")
            && last.contains("(archived), oldest ")
            && last.ends_with("; follow it with `tc-ami rollout -w w --watch`"),
        "{}",
        run.stderr
    );

    // The simulation runs (an hour in 3.6 s): each old worker notices at its next check that
    // its launch config is archived and exits once idle; replacements start on the new ones.
    w.tc.time_scale(0.001);
    let run = w.tc_ami().run(&["--json", "rollout", "-w", "w", "--watch"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["done"], true);
    assert_eq!(doc["progress"]["on_archived"], json!({}));
    assert_eq!(doc["progress"]["on_current"], doc["progress"]["total"]);
    // Off a terminal, one timestamped line per change: old workers at first, none at the end.
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines[0].contains("0 of 4 workers on the new image; "),
        "{}",
        run.stderr
    );
    assert!(lines[0].contains("(archived)"), "{}", run.stderr);
    assert!(
        !lines.last().unwrap().contains("archived"),
        "{}",
        run.stderr
    );
    let (_, all_lcs) = w.pool();
    let archived: Vec<&Value> = all_lcs.iter().filter(|l| l["isArchived"] == true).collect();
    for old in w.tc.workers().iter().filter(|x| {
        archived
            .iter()
            .any(|l| l["launchConfigId"] == x["launchConfigId"])
    }) {
        assert_eq!(old["state"], "stopped", "{old}");
    }
    assert_eq!(
        removals(&w.tc),
        0,
        "the simulation retired them, not tc-ami"
    );
}

/// Workers on the us-west-2 launch configs that get archived: two idle, one whose task
/// completed, one requested, one busy for an hour; and one on a us-east-1 launch config that
/// stays current.
struct Retiring {
    w: World,
    idle: Vec<String>,
    busy: String,
    current: String,
}

fn retiring() -> Retiring {
    let w = World::with_tc(emulator(0));
    let west = current_in(&w, "us-west-2");
    let east = current_in(&w, "us-east-1");
    let lc = |id: &str, extra: Value| {
        let mut v = json!({"launchConfigId": id});
        support::merge(&mut v, extra);
        v
    };
    let made = w.tc.add_workers(
        POOL,
        json!([
            lc(&west[0], json!({"state": "running"})),
            lc(&west[1], json!({"state": "running"})),
            lc(&west[0], json!({"state": "running", "taskMaxRunTime": 10})),
            lc(
                &west[1],
                json!({"state": "running", "taskMaxRunTime": 3600})
            ),
            lc(&east[0], json!({"state": "running"})),
        ]),
    );
    // The short task completes; a worker is requested meanwhile.
    w.tc.advance(20.0);
    let requested =
        w.tc.add_workers(POOL, json!([lc(&west[0], json!({"state": "requested"}))]));
    archive_us_west_2(&w.tc);
    let id = |v: &Value| v["workerId"].as_str().unwrap().to_string();
    let mut idle = vec![id(&made[0]), id(&made[1]), id(&made[2]), id(&requested[0])];
    idle.sort();
    Retiring {
        idle,
        busy: id(&made[3]),
        current: id(&made[4]),
        w,
    }
}

#[test]
fn retire_idle_only_spares_the_busy_worker_and_the_current_ones() {
    let r = retiring();
    let w = &r.w;
    let run = w.tc_ami().run(&[
        "--json",
        "rollout",
        "-w",
        "w",
        "--retire",
        "--idle-only",
        "--yes",
    ]);
    run.assert_code(0);
    let doc = run.json();
    let removed: Vec<String> = ids(&doc["removed"])
        .iter()
        .map(|s| s.split('/').nth(1).unwrap().to_string())
        .collect();
    let mut removed = removed;
    removed.sort();
    assert_eq!(removed, r.idle);
    assert_eq!(doc["complete"], true);
    let spared_busy = doc["plan"]["spared"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0]["worker_id"] == r.busy.as_str())
        .unwrap();
    assert_eq!(spared_busy[1]["reason"], "busy");
    // The plan was shown (on stderr with --json) with the busy worker and why.
    assert!(
        run.stderr
            .contains(&format!("spared us-west-2/{}: running task ", r.busy)),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("removed 4 workers"), "{}", run.stderr);

    let all = w.tc.workers();
    for id in &r.idle {
        assert_eq!(worker(&all, id)["state"], "stopping", "{id}");
    }
    let busy = worker(&all, &r.busy);
    assert_eq!(busy["state"], "running");
    let task = busy["task"]["taskId"].as_str().unwrap();
    let tasks = w.tc.server.get("/_emulator/tasks");
    let t = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == task)
        .unwrap();
    assert_eq!(t["state"], "running", "its task goes on: {t}");
    assert_eq!(worker(&all, &r.current)["state"], "running");
    assert_eq!(removals(&w.tc), 4);

    // Without --idle-only the busy worker would go too; never the current one.
    let run = w
        .tc_ami()
        .run(&["--json", "rollout", "-w", "w", "--retire", "--dry-run"]);
    run.assert_code(0);
    let planned: Vec<Value> = run.json()["plan"]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap().clone())
        .collect();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0]["worker_id"], r.busy.as_str());
}

#[test]
fn retire_dry_run_and_without_confirmation_change_nothing() {
    let r = retiring();
    let w = &r.w;
    let before = w.tc.workers();
    let run = w
        .tc_ami()
        .run(&["rollout", "-w", "w", "--retire", "--idle-only", "--dry-run"]);
    run.assert_code(0);
    let table = &run.stdout;
    assert!(
        table.starts_with("WORKER GROUP  WORKER ID            STATE      LAUNCH CONFIG"),
        "{table}"
    );
    for id in &r.idle {
        assert!(table.contains(id.as_str()), "{id} in {table}");
    }
    assert!(
        table.contains(&format!("spared us-west-2/{}: running task ", r.busy)),
        "{table}"
    );
    assert!(
        table.contains("spared 1 worker: on a current launch config"),
        "{table}"
    );
    assert_eq!(
        run.stderr.trim_end(),
        format!("dry run: 4 workers would be removed from worker pool {POOL}; nothing removed")
    );

    // No terminal and no --yes: refused, one line.
    let run = w.tc_ami().run(&["rollout", "-w", "w", "--retire"]);
    run.assert_code(1);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: refusing to remove these 5 workers of archived launch configs from worker pool {POOL} at {} without confirmation: stdin is not a terminal; pass --yes to go ahead, or --dry-run to only look",
            w.tc.server.url
        )
    );
    assert_eq!(removals(&w.tc), 0);
    let after = w.tc.workers();
    let states = |v: &[Value]| -> Vec<(String, String)> {
        v.iter()
            .map(|x| (x["workerId"].to_string(), x["state"].to_string()))
            .collect()
    };
    assert_eq!(states(&before), states(&after));
}

#[test]
fn a_pool_without_workers() {
    let w = World::with_tc(emulator(0));
    let run = w.tc_ami().run(&["rollout", "-w", "w"]);
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("worker pool {POOL} at {}", w.tc.server.url)
    );
    assert!(lines[1].starts_with("LAUNCH CONFIG "), "{}", run.stdout);
    assert_eq!(
        lines.len(),
        7,
        "four current launch configs: {}",
        run.stdout
    );
    assert!(
        lines[2..6].iter().all(|l| l.contains(" current ")),
        "{}",
        run.stdout
    );
    assert_eq!(lines[6], "no workers");

    let run = w.tc_ami().run(&["rollout", "-w", "w", "--watch"]);
    run.assert_code(0);
    assert!(run.stdout.ends_with("no workers\n"), "{}", run.stdout);

    let run = w.tc_ami().run(&["rollout", "-w", "w", "--retire", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "nothing to retire in worker pool {POOL}: no worker of an archived launch config is left"
        )
    );
    assert_eq!(removals(&w.tc), 0);
}

#[test]
fn missing_scopes_are_named_in_one_line() {
    let w = World::with_tc(emulator(0));
    let readonly = || {
        w.tc_ami()
            .env("TASKCLUSTER_CLIENT_ID", READONLY_ID)
            .env("TASKCLUSTER_ACCESS_TOKEN", READONLY_TOKEN)
    };
    let run = readonly().run(&["rollout", "-w", "w"]);
    run.assert_code(1);
    let expected = format!(
        "tc-ami: error: listing the workers of worker pool {POOL}: client `{READONLY_ID}` lacks the scope `worker-manager:list-workers:{POOL}` at {} (403); add it to the client's scopes, or use a client that has it",
        w.tc.server.url
    );
    assert_eq!(run.error_line(), expected);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // status still answers, with the reason on the rollout line.
    let run = readonly().run(&["status", "-w", "w"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!(
            "  rollout: unknown (listing the workers of worker pool {POOL}: client `{READONLY_ID}` lacks the scope `worker-manager:list-workers:{POOL}`"
        )),
        "{}",
        run.stdout
    );

    // --idle-only needs the Queue's worker listing too: the admin (worker-manager:*,
    // secrets:*) lacks it (the operator holds it through the anonymous role).
    let admin = || w.tc_ami().client(ADMIN_ID, ADMIN_TOKEN);
    let run = admin().run(&["rollout", "-w", "w", "--retire", "--idle-only", "--dry-run"]);
    run.assert_code(0); // no worker of an archived launch config: the Queue is not asked
    w.tc.add_workers(POOL, json!([{"state": "running"}]));
    archive_us_west_2(&w.tc);
    let run = admin().run(&["rollout", "-w", "w", "--retire", "--idle-only", "--dry-run"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains(&format!(
            "client `{ADMIN_ID}` lacks the scope `queue:list-workers:{POOL}` at "
        )),
        "{}",
        run.stderr
    );

    // May list, may not remove: each refused removal is reported, and the exit code says so.
    let old = w.tc.workers()[0]["workerId"].as_str().unwrap().to_string();
    let run = w
        .tc_ami()
        .env("TASKCLUSTER_CLIENT_ID", LISTER_ID)
        .env("TASKCLUSTER_ACCESS_TOKEN", LISTER_TOKEN)
        .run(&["rollout", "-w", "w", "--retire", "--yes"]);
    run.assert_code(1);
    let scope = format!("worker-manager:remove-worker:{POOL}/us-west-2/{old}");
    assert!(
        run.error_line().starts_with(&format!(
            "tc-ami: error: retirement incomplete: 1 of 1 removals failed (first: removing worker us-west-2/{old} of worker pool {POOL}: client `{LISTER_ID}` lacks the scope `{scope}` at "
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("removed 0 workers"), "{}", run.stderr);
    assert_eq!(w.tc.workers()[0]["state"], "running");
}

#[test]
fn retire_stops_between_batches_on_ctrl_c() {
    let w = World::with_tc(emulator(0));
    let many: Vec<Value> = (0..300).map(|_| json!({"state": "running"})).collect();
    w.tc.add_workers(POOL, Value::Array(many));
    archive_us_west_2(&w.tc);
    // Every API answer takes 0.1 s: the signal lands while batches remain.
    w.tc.server
        .post("/_emulator/faults", json!({"latency_ms": 100}));
    let run = w.tc_ami().interrupt_at(
        &["rollout", "-w", "w", "--retire", "--yes"],
        "removing batch 2 of 30",
        "INT",
    );
    run.assert_code(130);
    let removed = removals(&w.tc);
    assert!(
        (10..300).contains(&removed) && removed.is_multiple_of(10),
        "whole batches only: {removed}"
    );
    let stopping =
        w.tc.workers()
            .iter()
            .filter(|x| x["state"] == "stopping")
            .count();
    assert_eq!(stopping, removed);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: removed {removed} workers; {} not started: run it again to retire them: interrupted by Ctrl-C (SIGINT)",
            300 - removed
        )
    );
}

/// Temporary credentials for `scopes`, issued by the operator client (the official Python
/// client's createTemporaryCredentials): clientId, accessToken, certificate.
fn temporary_credentials(scopes: &[&str]) -> Value {
    let script = "import datetime, json, sys, taskcluster\n\
        now = datetime.datetime.now(datetime.timezone.utc)\n\
        c = taskcluster.createTemporaryCredentials(sys.argv[1], sys.argv[2], now - datetime.timedelta(minutes=1), now + datetime.timedelta(hours=1), json.loads(sys.argv[3]))\n\
        print(json.dumps(c, default=lambda b: b.decode()))";
    let out = Command::new(python())
        .args(["-c", script, OPERATOR_ID, OPERATOR_TOKEN])
        .arg(serde_json::to_string(scopes).unwrap())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("credentials JSON")
}

#[test]
fn pages_beyond_one_page_of_workers_signed_with_their_query() {
    let w = World::with_tc(emulator(0));
    // 1,100 workers: the service's page is 1,000 at most (lib-api's paginateResults).
    let many: Vec<Value> = (0..1100).map(|_| json!({"state": "running"})).collect();
    w.tc.add_workers(POOL, Value::Array(many));
    archive_us_west_2(&w.tc);

    // Temporary credentials: `ext` carries the certificate on the requests tc-ami signs.
    let creds = temporary_credentials(&[
        "worker-manager:get-worker-pool:*",
        "worker-manager:list-workers:*",
        "queue:list-workers:*",
        "queue:status:*",
    ]);
    let temp = || {
        w.tc_ami()
            .env("TASKCLUSTER_CLIENT_ID", creds["clientId"].as_str().unwrap())
            .env(
                "TASKCLUSTER_ACCESS_TOKEN",
                creds["accessToken"].as_str().unwrap(),
            )
            .env(
                "TASKCLUSTER_CERTIFICATE",
                creds["certificate"].as_str().unwrap(),
            )
    };
    let run = temp().run(&["--json", "rollout", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["progress"]["total"], 1100);
    assert_eq!(doc["progress"]["on_current"], 0);
    let old: u64 = doc["progress"]["on_archived"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(old, 1100);
    let pages: Vec<Value> =
        w.tc.requests()
            .into_iter()
            .filter(|r| r["apiMethod"] == "listWorkersForWorkerPool")
            .collect();
    assert_eq!(pages.len(), 2, "{pages:#?}");
    assert!(pages.iter().all(|r| r["status"] == 200), "{pages:#?}");
    assert!(
        pages[1]["path"]
            .as_str()
            .unwrap()
            .contains("?continuationToken="),
        "{pages:#?}"
    );
    let lcs =
        w.tc.requests()
            .into_iter()
            .find(|r| r["apiMethod"] == "listWorkerPoolLaunchConfigs")
            .unwrap();
    assert!(
        lcs["path"]
            .as_str()
            .unwrap()
            .ends_with("?includeArchived=true")
    );
    assert_eq!(lcs["status"], 200);

    // The Queue's listing pages too; 1,100 idle workers in 110 batches.
    let run = temp().run(&[
        "--json",
        "rollout",
        "-w",
        "w",
        "--retire",
        "--idle-only",
        "--dry-run",
    ]);
    run.assert_code(0);
    let batches = run.json()["plan"]["batches"].as_array().unwrap().clone();
    assert_eq!(batches.len(), 110);
    assert!(batches.iter().all(|b| b.as_array().unwrap().len() == 10));
    let queue_pages =
        w.tc.requests()
            .into_iter()
            .filter(|r| r["apiMethod"] == "listWorkers" && r["status"] == 200)
            .count();
    assert_eq!(queue_pages, 2);
}

#[test]
fn watch_stops_on_ctrl_c() {
    let w = World::with_tc(emulator(0));
    w.tc.add_workers(POOL, json!([{"state": "running"}]));
    archive_us_west_2(&w.tc);
    // The clock is frozen: the old worker never notices, the watch would go on for ever.
    let run = w
        .tc_ami()
        .interrupt_at(&["rollout", "-w", "w", "--watch"], "(archived)", "INT");
    run.assert_code(130);
    let line = run.error_line();
    assert!(
        line.starts_with(&format!(
            "tc-ami: stopped watching worker pool {POOL}: 0 of 1 worker on the new image; 1 on ami-00000000000a2016a (archived), oldest "
        )),
        "{}",
        run.stderr
    );
    assert!(
        line.ends_with(
            "; `tc-ami rollout -w w --watch` follows it again: interrupted by Ctrl-C (SIGINT)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn a_deploy_is_not_failed_by_a_missing_list_workers_scope() {
    let w = World::with_tc(emulator(0));
    let run = w
        .tc_ami()
        .env("TASKCLUSTER_CLIENT_ID", DEPLOYER_ID)
        .env("TASKCLUSTER_ACCESS_TOKEN", DEPLOYER_TOKEN)
        .run(&["deploy", "-w", "w", "--yes"]);
    run.assert_code(0);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let n = lines.len();
    assert!(
        lines[n - 2].starts_with(&format!("deployed to worker pool {POOL}: ")),
        "{}",
        run.stderr
    );
    assert_eq!(
        lines[n - 1],
        format!(
            "rollout: unknown (listing the workers of worker pool {POOL}: client `{DEPLOYER_ID}` lacks the scope `worker-manager:list-workers:{POOL}` at {} (403); add it to the client's scopes, or use a client that has it); deployed all the same",
            w.tc.server.url
        )
    );
    let (active, _) = w.pool();
    assert!(
        active
            .iter()
            .all(|l| image_of(l) != "ami-00000000000a2016a")
    );
}
