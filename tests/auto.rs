//! `tc-ami auto -w W` end to end against the stand-ins: nothing to do (Describe calls only, no
//! Taskcluster write), a newer base image (rebuild, try, deploy, report, then nothing to do),
//! a changed first-boot script, and `--max-age` with a failing build (exit 1, nothing left, the
//! pool unchanged).

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::*;

/// Builds an image for `w` and deploys it without a try: the live image auto compares.
fn deployed(world: &World) -> BTreeMap<String, String> {
    let images: BTreeMap<String, String> =
        serde_json::from_value(world.build()).expect("region → id");
    let west = images["us-west-2"].clone();
    world
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes", "--no-try"])
        .assert_code(0);
    images
}

/// The Taskcluster API methods called so far, in order.
fn tc_methods(world: &World) -> Vec<String> {
    world
        .tc
        .requests()
        .iter()
        .filter_map(|r| r["apiMethod"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn nothing_to_do_makes_only_describe_calls_and_no_taskcluster_write() {
    let world = World::new();
    let images = deployed(&world);
    let (shape, records) = (world.pool_shape(), world.history());
    let before = tc_methods(&world).len();
    world.ec2.server.post("/_sandbox/stats/reset", json!({}));

    let run = world.tc_ami().run(&["--json", "auto", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["decision"], "up_to_date", "{doc:#}");
    assert_eq!(doc["reasons"], json!([]));
    assert_eq!(doc["worker_type"], "w");
    assert_eq!(doc["workerPoolId"], POOL);
    assert_eq!(doc["live"]["image"], images["us-west-2"].as_str());
    assert_eq!(doc["live_images"], json!(images));
    assert_eq!(doc["images"], json!({}));
    assert_eq!(doc["pushed"], false);
    assert!(doc["deploymentId"].is_null() && doc["try"].is_null() && doc["error"].is_null());
    assert_eq!(doc["promote"], json!({"to": null, "command": null}));
    assert!(
        run.stderr
            .contains("no production worker type is configured for w"),
        "{}",
        run.stderr
    );

    let stats = world.ec2.stats();
    let actions: Vec<&String> = stats["requests"].as_object().unwrap().keys().collect();
    assert!(!actions.is_empty(), "{stats:#}");
    assert!(
        actions.iter().all(|a| a.starts_with("Describe")),
        "EC2 calls beyond Describe*: {stats:#}"
    );
    let after = tc_methods(&world);
    assert_eq!(
        after[before..],
        ["workerPool"],
        "Taskcluster calls: {after:?}"
    );
    assert_eq!(world.pool_shape(), shape);
    assert_eq!(world.history(), records);

    // The human report.
    let human = world.tc_ami().run(&["auto", "-w", "w"]);
    human.assert_code(0);
    assert!(
        human.stdout.contains(&format!(
            "up to date: us-west-2 {}, from the newest base image and the current first-boot script",
            images["us-west-2"]
        )),
        "{}",
        human.stdout
    );
}

#[test]
fn a_newer_base_image_is_built_tried_and_deployed_then_nothing_to_do() {
    let world = World::simulating(seed_pools());
    world.cfg.write(
        "worker-types/try-task.yml",
        &std::fs::read_to_string(repo_root().join("worker-types/try-task.yml")).unwrap(),
    );
    world.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\ntry_task = \"worker-types/try-task.yml\"\npromote_to = \"prod\"",
    );
    world
        .cfg
        .worker_type("prod", "proj-servo/win2016-staging", "");
    let old = deployed(&world);
    let seeded = world.ec2.server.post(
        "/_sandbox/seed-image",
        json!({"region": "all", "name": "Windows_Server-2016-English-Full-Base-2030.01.01", "creation_date": "2030-01-01T00:00:00.000Z"}),
    );
    let base = seeded["image_id"].as_str().unwrap().to_string();

    let run = world.tc_ami().run(&["--json", "auto", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["decision"], "rebuild", "{doc:#}");
    let reasons = doc["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{doc:#}");
    assert_eq!(reasons[0]["reason"], "newer_base_image");
    assert_eq!(reasons[0]["base_image"], base.as_str());
    assert!(
        reasons[0]["text"].as_str().unwrap().starts_with(&format!(
            "newer base image {base} (Windows_Server-2016-English-Full-Base-2030.01.01) over ami-"
        )),
        "{doc:#}"
    );
    assert_eq!(doc["base_image"]["id"], base.as_str());
    assert_eq!(doc["live_images"], json!(old));
    // The new images are what the pool runs now, in both regions.
    let images: BTreeMap<String, String> = serde_json::from_value(doc["images"].clone()).unwrap();
    assert_eq!(
        images.keys().collect::<Vec<_>>(),
        ["us-east-1", "us-west-2"]
    );
    assert!(
        images.values().all(|i| !old.values().any(|o| o == i)),
        "{doc:#}"
    );
    assert_eq!(world.live_images(), images);
    assert_eq!(doc["pushed"], true);
    let deployment_id = doc["deploymentId"].as_str().unwrap();
    assert!(
        world
            .pool()
            .0
            .iter()
            .all(|lc| deployment_id_of(lc) == deployment_id),
        "{doc:#}"
    );
    // Tried first, on a temporary pool, which is gone.
    assert_eq!(doc["try"]["outcome"], "passed", "{doc:#}");
    assert_eq!(doc["try"]["images"], json!(images));
    assert_eq!(doc["try"]["tasks"][0]["state"], "completed");
    assert_eq!(world.tc.created_try_pools().len(), 1);
    assert!(world.tc.live_try_pools().is_empty());
    assert_eq!(
        doc["promote"],
        json!({"to": "prod", "command": format!("tc-ami -C {} promote --from w --to prod", world.cfg.path().display())})
    );
    assert!(doc["error"].is_null());
    assert!(doc["duration_seconds"].as_f64().unwrap() > 0.0);
    // The history: the first deploy, the try, the deploy of auto.
    let mut records = world.history();
    records.sort_by_key(|r| r["seq"].as_u64());
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deploy", "try", "deploy"], "{records:#?}");
    assert_eq!(records[2]["deployment_id"], deployment_id);
    // The built image carries the new base: the next run has nothing to do.
    let state = world.ec2.state();
    let west = state["regions"]["us-west-2"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == images["us-west-2"].as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        west["tags"]["tc-ami:base-image-id"],
        base.as_str(),
        "{west:#}"
    );
    let again = world.tc_ami().run(&["--json", "auto", "-w", "w"]);
    again.assert_code(0);
    assert_eq!(again.json()["decision"], "up_to_date", "{}", again.stderr);
    // Never promoted: nothing was ever sent to the production pool but reads.
    let prod_writes: Vec<Value> = world
        .tc
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or("").contains("win2016-staging"))
        .filter(|r| r["apiMethod"] != "workerPool")
        .collect();
    assert!(prod_writes.is_empty(), "{prod_writes:#?}");
    let human = world.tc_ami().run(&["auto", "-w", "w"]);
    assert!(
        human.stdout.contains(&format!(
            "to promote (a person decides): tc-ami -C {} promote --from w --to prod",
            world.cfg.path().display()
        )),
        "{}",
        human.stdout
    );
}

#[test]
fn a_changed_first_boot_script_is_a_reason_to_rebuild() {
    let world = World::new();
    let old = deployed(&world);
    let script = world.cfg.path().join("scripts/first-boot.ps1");
    let mut text = std::fs::read_to_string(&script).unwrap();
    text.push_str("# a change\r\n");
    std::fs::write(&script, text).unwrap();
    // The guest checks the user data against the changed script.
    world
        .ec2
        .configure(json!({"first_boot_script": script.display().to_string()}));

    let run = world.tc_ami().run(&["--json", "auto", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    let reasons = doc["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{doc:#}");
    assert_eq!(reasons[0]["reason"], "script_changed");
    assert_eq!(reasons[0]["current_sha256"], doc["script_sha256"]);
    assert_ne!(reasons[0]["live_sha256"], doc["script_sha256"]);
    assert!(
        reasons[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("script changed: "),
        "{doc:#}"
    );
    assert!(
        run.stderr.contains(
            "w: rebuilding and deploying to worker pool proj-servo/win2016: script changed: "
        ),
        "{}",
        run.stderr
    );
    assert_eq!(doc["pushed"], true);
    assert!(doc["try"].is_null(), "w has no try_task: {doc:#}");
    let images: BTreeMap<String, String> = serde_json::from_value(doc["images"].clone()).unwrap();
    assert_ne!(images, old);
    assert_eq!(world.live_images(), images);
    world.ec2.assert_nothing_left_but_images();
}

#[test]
fn max_age_rebuilds_and_a_failing_build_leaves_nothing_and_changes_nothing() {
    let world = World::new();
    let old = deployed(&world);
    let (shape, records) = (world.pool_shape(), world.history());
    let images_before = world.ec2.all("images").len();
    world
        .ec2
        .configure(json!({"guest": {"mode": "fail", "fail_after_seconds": 1}}));
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let run =
        world
            .tc_ami()
            .env("CI", "true")
            .run(&["--json", "auto", "-w", "w", "--max-age", "1s"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["decision"], "rebuild", "{doc:#}");
    let reasons = doc["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{doc:#}");
    assert_eq!(reasons[0]["reason"], "older_than_max_age");
    assert_eq!(reasons[0]["image"], old["us-west-2"].as_str());
    assert_eq!(reasons[0]["max_age_seconds"], 1);
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("build failed while waiting for first-boot.ps1")
            && error.contains("the guest reported"),
        "{error}"
    );
    assert_eq!(doc["pushed"], false);
    assert!(doc["deploymentId"].is_null());
    assert_eq!(doc["images"], json!({}));
    assert!(doc["promote"]["command"].is_null());
    assert!(
        run.stderr.contains("tc-ami: error: auto of w failed: "),
        "{}",
        run.stderr
    );
    // Nothing left in EC2, no image made, the pool and its history as they were.
    world.ec2.assert_nothing_left_but_images();
    assert_eq!(world.ec2.all("images").len(), images_before);
    assert_eq!(world.pool_shape(), shape);
    assert_eq!(world.live_images(), old);
    assert_eq!(world.history(), records);

    // A bad --max-age: one line, before anything.
    let bad = world.tc_ami().run(&["auto", "-w", "w", "--max-age", "0s"]);
    bad.assert_code(1);
    assert!(bad.stderr.contains("--max-age"), "{}", bad.stderr);
}

#[test]
fn a_failed_try_pushes_nothing_and_exits_1_with_the_try_in_the_report() {
    let world = World::simulating(seed_pools());
    // A run whose maxRunTime is out of range resolves exception/malformed-payload at once.
    let task = json!({
        "metadata": {"name": "bad", "description": "fails", "owner": "servo-ops@example.invalid", "source": "https://github.com/servo/servo"},
        "payload": {"maxRunTime": 0, "command": ["git --version"]}
    });
    world.cfg.write("try-bad.json", &task.to_string());
    world.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\ntry_task = \"try-bad.json\"",
    );
    let old = deployed(&world);
    let (shape, updates) = (world.pool_shape(), world.updates());
    let seeded = world.ec2.server.post(
        "/_sandbox/seed-image",
        json!({"name": "Windows_Server-2016-English-Full-Base-2030.01.01", "creation_date": "2030-01-01T00:00:00.000Z"}),
    );

    let run = world.tc_ami().run(&["--json", "auto", "-w", "w"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(
        doc["reasons"][0]["base_image"], seeded["image_id"],
        "{doc:#}"
    );
    assert_eq!(doc["try"]["outcome"], "failed", "{doc:#}");
    assert_eq!(doc["try"]["tasks"][0]["state"], "exception", "{doc:#}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "nothing pushed to worker pool proj-servo/win2016: the images did not pass their try: try failed: "
        ),
        "{error}"
    );
    // The images it built and tried stay (for cleanup); the pool does not run them.
    let images: BTreeMap<String, String> = serde_json::from_value(doc["images"].clone()).unwrap();
    assert_eq!(images.len(), 2, "{doc:#}");
    assert_eq!(doc["try"]["images"], doc["images"]);
    assert_eq!(doc["pushed"], false);
    assert!(doc["deploymentId"].is_null() && doc["promote"]["command"].is_null());
    assert_eq!(world.live_images(), old);
    // The scope check's update posts the pool back unchanged; nothing else was pushed.
    assert_eq!(world.pool_shape(), shape);
    assert_eq!(world.updates(), updates + 1);
    assert!(world.tc.live_try_pools().is_empty());
    let records = world.history();
    assert!(
        records
            .iter()
            .all(|r| r["kind"] != "deploy" || r["after"] == json!(old)),
        "{records:#?}"
    );
}

#[test]
fn sigterm_during_the_build_removes_what_it_made_and_changes_no_pool() {
    let world = World::new();
    let old = deployed(&world);
    let (shape, records) = (world.pool_shape(), world.history());
    world
        .ec2
        .configure(json!({"guest": {"shutdown_after_seconds": 30}}));
    let run = world.tc_ami().interrupt_at(
        &["--json", "auto", "-w", "w", "--max-age", "1s"],
        "waiting for first-boot.ps1",
        "TERM",
    );
    run.assert_code(143);
    assert!(
        run.stdout.is_empty(),
        "no report after an interrupt: {}",
        run.stdout
    );
    assert!(run.error_line().contains("SIGTERM"), "{}", run.stderr);
    world.ec2.assert_nothing_left_but_images();
    assert_eq!(world.pool_shape(), shape);
    assert_eq!(world.live_images(), old);
    assert_eq!(world.history(), records);
}

#[test]
fn a_bad_worker_type_is_an_error_in_the_report_before_anything_is_asked() {
    let world = World::new();
    world
        .cfg
        .worker_type("x", POOL, "promote_to = \"production\"");
    let run = world.tc_ami().run(&["--json", "auto", "-w", "x"]);
    run.assert_code(1);
    let doc = run.json();
    assert!(doc["decision"].is_null(), "{doc:#}");
    assert_eq!(doc["worker_type"], "x");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains(
            "x.toml: bad value for `promote_to`: there is no worker type `production` (no file "
        ),
        "{error}"
    );
    assert_eq!(
        run.error_line(),
        format!("tc-ami: error: auto of x failed: {error}")
    );
    let stats = world.ec2.stats();
    assert_eq!(stats["total"], 0, "{stats:#}");
    assert!(world.tc.requests().is_empty());
}

#[test]
fn several_worker_types_in_one_run_the_staging_ones_with_all_and_never_production() {
    let world = World::new();
    let images = deployed(&world);
    world.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\npromote_to = \"prod\"",
    );
    world.cfg.worker_type(
        "s",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    world.cfg.worker_type("prod", "proj-servo/prod", "");

    // Production is refused before any call.
    world.ec2.server.post("/_sandbox/stats/reset", json!({}));
    let refused = world.tc_ami().run(&["auto", "-w", "prod"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.trim().lines().count() == 1
            && refused
                .stderr
                .contains("`prod` is the production worker type of `w` (its promote_to): auto never deploys there"),
        "{}",
        refused.stderr
    );
    let stats = world.ec2.stats();
    assert_eq!(stats["requests"], json!({}), "{stats:#}");

    // Two at once: w is up to date, s (whose pool's image does not exist) is rebuilt and
    // deployed; one document, an entry per worker type in the order given.
    let run = world
        .tc_ami()
        .run(&["--json", "auto", "-w", "w", "-w", "s", "--jobs", "2"]);
    run.assert_code(0);
    let doc = run.json();
    let entries = doc["workerTypes"].as_array().expect("workerTypes");
    assert_eq!(entries.len(), 2, "{doc:#}");
    assert_eq!(entries[0]["worker_type"], "w");
    assert_eq!(entries[0]["decision"], "up_to_date", "{doc:#}");
    assert_eq!(entries[0]["live"]["image"], images["us-west-2"].as_str());
    assert_eq!(entries[1]["worker_type"], "s");
    assert_eq!(entries[1]["decision"], "rebuild", "{doc:#}");
    assert_eq!(entries[1]["pushed"], true, "{doc:#}");
    assert!(entries[1]["error"].is_null(), "{doc:#}");
    assert!(run.stderr.contains("s: "), "{}", run.stderr);

    // --all: the worker types that name a promote_to, here w alone.
    let all = world.tc_ami().run(&["--json", "auto", "--all"]);
    all.assert_code(0);
    let doc = all.json();
    let names: Vec<&str> = doc["workerTypes"]
        .as_array()
        .expect("workerTypes")
        .iter()
        .map(|e| e["worker_type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w"], "{doc:#}");
}
