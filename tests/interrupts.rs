//! Ctrl-C and SIGTERM in every command that changes something: before a push (or a deletion)
//! nothing changes and tc-ami exits 130 (143); during a push, the push, its verification and
//! its record are finished first; at the prompt (typed on a pseudo-terminal), tc-ami stops at
//! once; a second Ctrl-C during a teardown says what is left and how `cleanup` removes it.
//!
//! The Taskcluster emulator answers slowly (`latency_ms`) so that a signal sent just after a
//! call shows up on stderr (`-v` logs each call when it returns) lands in the next call.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Each Taskcluster call takes this long.
fn slow_taskcluster(w: &World) {
    w.tc.server
        .post("/_emulator/faults", json!({"latency_ms": 1000}));
}

fn fast_taskcluster(w: &World) {
    w.tc.server
        .post("/_emulator/faults", json!({"latency_ms": 0}));
}

/// Stopped before the change: the exit code, one final line saying nothing changed, and no
/// push: the pool is as it was `before` (an update that posted it back unchanged, as the scope
/// check does, changes nothing).
fn assert_nothing_changed(run: &Run, code: i32, signal: &str, w: &World, before: &Value) {
    run.assert_code(code);
    assert_eq!(
        run.error_line(),
        format!("tc-ami: interrupted by {signal}; nothing changed"),
        "{}",
        run.stderr
    );
    assert_eq!(&w.pool_shape(), before, "pushed: {}", run.stderr);
}

/// What a run starts from: the pool, and the `updateWorkerPool` requests so far.
fn mark(w: &World) -> (Value, usize) {
    (w.pool_shape(), w.updates())
}

/// Interrupted during the push: finished first, said so, exit 130; the pool changed, by one
/// push (the run's other update is the scope check, which posts the pool back unchanged).
fn assert_push_finished(run: &Run, w: &World, (before, updates): &(Value, usize)) {
    run.assert_code(130);
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: interrupted by Ctrl-C (SIGINT) during the push to worker pool {POOL} (updateWorkerPool, its verification and the history record cannot be stopped half-way); it was finished first"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("stopping after the push to worker pool {POOL}")),
        "{}",
        run.stderr
    );
    assert_ne!(&w.pool_shape(), before, "not pushed: {}", run.stderr);
    assert_eq!(
        w.updates(),
        updates + 2,
        "the scope check and the push, once each: {}",
        run.stderr
    );
}

#[test]
fn deploy_image_stops_before_the_push_finishes_it_during_and_stops_at_the_prompt() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let deploy = ["-v", "deploy", "-w", "w", "--image", west.as_str(), "--yes"];
    let seeded = w.pool_shape();

    // At the prompt, typed on the terminal: at once, nothing pushed.
    let run = w.tc_ami().ctrl_c_at_prompt(&deploy[1..6], "[y/N]");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);

    slow_taskcluster(&w);
    // After the pool was read (while the history is read), and after the history was read
    // (while the pool is read again): nothing pushed, nothing recorded.
    let run = w
        .tc_ami()
        .interrupt_at(&deploy, "worker-manager.workerPool(", "INT");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);
    let run = w.tc_ami().interrupt_at(&deploy, "secrets.get(", "TERM");
    assert_nothing_changed(&run, 143, "SIGTERM", &w, &seeded);
    assert!(w.history().is_empty());

    // During the push, twice: finished, verified and recorded, once.
    let start = mark(&w);
    let run = w.tc_ami().signals_at(
        &deploy,
        &[
            ("pushing to worker pool", "INT"),
            ("worker-manager.updateWorkerPool(", "INT"),
        ],
    );
    assert_push_finished(&run, &w, &start);
    assert!(
        run.stderr.contains("already stopping: finishing the push"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("deployed to worker pool"),
        "{}",
        run.stderr
    );
    fast_taskcluster(&w);
    assert_eq!(w.live_image("us-west-2"), west);
    assert_eq!(w.history().len(), 1);
}

#[test]
fn deploy_image_interrupted_while_copying_removes_the_copies_and_pushes_nothing() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap().to_string();
    // No copy in us-east-1: deploy copies the image there first, slowly.
    w.ec2
        .deregister("us-east-1", images["us-east-1"].as_str().unwrap());
    w.ec2.configure(json!({"copy_pending_seconds": 60}));
    let seeded = w.pool_shape();
    let run = w.tc_ami().interrupt_at(
        &["deploy", "-w", "w", "--image", &west, "--yes"],
        "copying",
        "INT",
    );
    run.assert_code(130);
    let line = run.error_line();
    assert!(
        line.contains("removed the copies it started") && line.contains("interrupted by Ctrl-C"),
        "{}",
        run.stderr
    );
    assert_eq!(w.pool_shape(), seeded, "pushed: {}", run.stderr);
    assert!(w.history().is_empty());
    let east: Vec<Value> = w
        .ec2
        .all("images")
        .into_iter()
        .filter(|(r, i)| r == "us-east-1" && i["seeded"] != true)
        .map(|(_, i)| i)
        .collect();
    assert!(east.is_empty(), "copies left: {east:?}");
}

#[test]
fn rollback_stops_before_the_push_finishes_it_during_and_stops_at_the_prompt() {
    let w = World::new();
    let a = w.build()["us-west-2"].as_str().unwrap().to_string();
    let b = w.build()["us-west-2"].as_str().unwrap().to_string();
    for image in [&a, &b] {
        w.tc_ami()
            .run(&["deploy", "-w", "w", "--image", image, "--yes"])
            .assert_code(0);
    }
    let rollback = ["-v", "rollback", "-w", "w", "--yes"];
    let deployed = w.pool_shape();

    let run = w.tc_ami().ctrl_c_at_prompt(&rollback[1..4], "[y/N]");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &deployed);

    slow_taskcluster(&w);
    let run = w.tc_ami().interrupt_at(&rollback, "secrets.get(", "INT");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &deployed);
    assert_eq!(w.live_image("us-west-2"), b);
    assert_eq!(w.history().len(), 2);

    let start = mark(&w);
    let run = w
        .tc_ami()
        .interrupt_at(&rollback, "pushing to worker pool", "INT");
    assert_push_finished(&run, &w, &start);
    fast_taskcluster(&w);
    assert_eq!(w.live_image("us-west-2"), a);
    let h = w.history();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["kind"], "rollback");
}

#[test]
fn promote_stops_before_the_push_finishes_it_during_and_stops_at_the_prompt() {
    let w = World::new();
    w.cfg.worker_type(
        "staging",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let run = w
        .tc_ami()
        .run(&["--json", "deploy", "-w", "staging", "--yes"]);
    run.assert_code(0);
    let staged = run.json()["images"]["us-west-2"]
        .as_str()
        .unwrap()
        .to_string();
    let promote = ["-v", "promote", "--from", "staging", "--to", "w", "--yes"];
    let seeded = w.pool_shape();

    let run = w.tc_ami().ctrl_c_at_prompt(&promote[1..6], "[y/N]");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);

    slow_taskcluster(&w);
    let run = w.tc_ami().interrupt_at(&promote, "secrets.get(", "INT");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);

    let start = mark(&w);
    let run = w
        .tc_ami()
        .interrupt_at(&promote, "pushing to worker pool", "INT");
    assert_push_finished(&run, &w, &start);
    fast_taskcluster(&w);
    assert_eq!(w.live_image("us-west-2"), staged);
    let h = w.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["kind"], "promote");
}

#[test]
fn deploy_that_builds_stops_in_the_build_or_after_it_and_pushes_nothing() {
    let w = World::new();
    // In the build: it removes everything it created.
    w.ec2
        .configure(json!({"guest": {"shutdown_after_seconds": 60}}));
    let seeded = w.pool_shape();
    let run = w.tc_ami().interrupt_at(
        &["deploy", "-w", "w", "--yes"],
        "waiting for first-boot.ps1",
        "INT",
    );
    run.assert_code(130);
    assert!(
        run.error_line()
            .starts_with("tc-ami: build failed while waiting for first-boot.ps1")
            && run.error_line().contains("interrupted by Ctrl-C (SIGINT)"),
        "{}",
        run.stderr
    );
    assert_eq!(w.pool_shape(), seeded, "pushed: {}", run.stderr);
    w.ec2.assert_nothing_left();

    // After the build (while the pool is read again): the images stay, nothing is pushed.
    w.ec2
        .configure(json!({"guest": {"shutdown_after_seconds": 0.8}}));
    slow_taskcluster(&w);
    let run = w.tc_ami().interrupt_at(
        &["deploy", "-w", "w", "--yes"],
        "administrator password of",
        "INT",
    );
    run.assert_code(130);
    let line = run.error_line();
    assert!(
        line.starts_with(
            "tc-ami: interrupted by Ctrl-C (SIGINT): the images built stay (us-east-1 ami-"
        ) && line.ends_with("); nothing else changed"),
        "{}",
        run.stderr
    );
    assert_eq!(w.pool_shape(), seeded, "pushed: {}", run.stderr);
    assert!(w.history().is_empty());
    w.ec2.assert_nothing_left_but_images();
}

#[test]
fn build_stops_before_launch_and_a_second_ctrl_c_in_its_teardown_says_what_cleanup_removes() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\nbuild_timeout = \"4s\"\nimage_timeout = \"1s\"",
    );
    let creates = |ec2: &Ec2| {
        let stats = ec2.stats();
        ["CreateKeyPair", "CreateSecurityGroup", "RunInstances"]
            .iter()
            .map(|a| stats["requests"][a].as_u64().unwrap_or(0))
            .sum::<u64>()
    };

    // Before launch, while EC2 throttles the base image's look-up: nothing created.
    ec2.configure(
        json!({"faults": {"next": 8, "actions": ["DescribeImages"], "kinds": ["throttle"]}}),
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).interrupt_at(
        &["build", "-w", "w"],
        "finding the base image",
        "INT",
    );
    run.assert_code(130);
    assert_eq!(
        run.error_line(),
        "tc-ami: interrupted by Ctrl-C (SIGINT); nothing changed",
        "{}",
        run.stderr
    );
    assert_eq!(creates(&ec2), 0);
    ec2.configure(json!({"faults": {"next": 0}}));

    // A second Ctrl-C while the teardown waits for the instance to terminate: tc-ami stops at
    // once and says what is left and how cleanup removes it.
    ec2.configure(
        json!({"guest": {"shutdown_after_seconds": 60}, "instance_terminate_seconds": 8}),
    );
    let started = Instant::now();
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).signals_at(
        &["build", "-w", "w"],
        &[
            ("waiting for first-boot.ps1", "INT"),
            ("removing everything this build created", "INT"),
        ],
    );
    run.assert_code(130);
    assert!(
        run.stderr
            .contains("stopping at the next safe point of the build; press Ctrl-C again"),
        "{}",
        run.stderr
    );
    let line = run.error_line();
    assert!(
        line.starts_with("tc-ami: stopping now, before the teardown is done: LEFT BEHIND: ")
            && line.contains("key pair tc-ami-w-")
            && line.contains("instance i-")
            && line.contains(
                "`tc-ami cleanup -w w` removes them (they carry the tag tc-ami:build-id="
            )
            && line.ends_with("once they are too old to belong to a build in progress"),
        "{}",
        run.stderr
    );
    let left = ec2.leftovers(true);
    assert!(
        left.iter().any(|l| l.contains("instance")) && left.iter().any(|l| l.contains("key pair")),
        "{left:#?}"
    );

    // And cleanup does remove them, once they are older than 4s + 2 × 1s.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["cleanup", "-w", "w", "--yes"]);
    run.assert_code(0);
    ec2.assert_nothing_left();
}

#[test]
fn cleanup_stops_at_the_prompt_before_deleting_and_a_second_ctrl_c_says_what_is_left() {
    let w = World::new();
    // A killed build's leftovers: instance, key pair, group, pending image and snapshot.
    w.cfg.worker_type(
        "k",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]\nbuild_timeout = \"2s\"\nimage_timeout = \"1s\"",
    );
    w.ec2.configure(json!({"image_pending_seconds": 120}));
    let run = w.tc_ami().interrupt_at(
        &["build", "-w", "k"],
        "waiting for the image to be available",
        "KILL",
    );
    assert_eq!(run.code, -1);
    let killed = Instant::now();
    let left = w.ec2.leftovers(true);
    assert!(left.len() >= 5, "{left:#?}");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed()));

    let cleanup = ["cleanup", "-w", "k"];
    let seeded = w.pool_shape();
    let run = w.tc_ami().ctrl_c_at_prompt(&cleanup, "[y/N]");
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);
    assert_eq!(w.ec2.leftovers(true), left);

    slow_taskcluster(&w);
    let run = w.tc_ami().interrupt_at(
        &["cleanup", "-w", "k", "--yes"],
        "reading the worker pools",
        "INT",
    );
    assert_nothing_changed(&run, 130, "Ctrl-C (SIGINT)", &w, &seeded);
    assert_eq!(w.ec2.leftovers(true), left);
    assert_eq!(w.updates(), 0, "cleanup updates no pool");
    fast_taskcluster(&w);

    // While the instance terminates (slowly), twice: stops at once, says what is left.
    w.ec2.configure(json!({"instance_terminate_seconds": 8}));
    let run = w.tc_ami().signals_at(
        &["cleanup", "-w", "k", "--yes"],
        &[("deleting", "INT"), ("press Ctrl-C again", "INT")],
    );
    run.assert_code(130);
    let line = run.error_line();
    assert!(
        line.starts_with("tc-ami: stopping now, before the teardown is done: not deleted yet: ")
            && line.contains("security group sg-")
            && line.ends_with("run the same `tc-ami cleanup` again to finish"),
        "{}",
        run.stderr
    );
    // Run again, it finishes.
    w.ec2.configure(json!({"instance_terminate_seconds": 0.2}));
    let run = w.tc_ami().run(&["cleanup", "-w", "k", "--yes"]);
    run.assert_code(0);
    w.ec2.assert_nothing_left();
}
