//! `tc-ami try` end to end: moto with built images, the emulator's Queue and simulated workers
//! (images checked in moto, tasks resolved after their scaled maxRunTime), and checks of what
//! the emulator holds afterwards: the temporary pool deleted (or kept with --keep-pool), tasks
//! resolved or cancelled, the try recorded in the history.

mod support;

use serde_json::{Value, json};
use support::*;

/// A decision task whose run creates `children` tasks in its group (the emulator reads
/// `TC_AMI_SANDBOX_CHILDREN`; a real generic-worker ignores it), with the scopes to create them.
fn decision_task(max_run_time: u64, children: usize) -> String {
    let kids: Vec<Value> = (0..children).map(|_| json!({})).collect();
    let task = json!({
        "metadata": {
            "name": "decision",
            "description": "creates the other tasks",
            "owner": "servo-ops@example.invalid",
            "source": "https://github.com/servo/servo"
        },
        "scopes": [
            "queue:create-task:lowest:proj-servo/*",
            "queue:scheduler-id:-",
            "queue:create-task:project:none"
        ],
        "payload": {
            "maxRunTime": max_run_time,
            "command": ["python --version"],
            "env": {"TC_AMI_SANDBOX_CHILDREN": Value::from(serde_json::to_string(&kids).unwrap())}
        }
    });
    task.to_string()
}

fn shipped_task() -> String {
    repo_root()
        .join("worker-types/try-task.yml")
        .display()
        .to_string()
}

/// The worker type's images, built in moto: region → id.
fn built(world: &World) -> Vec<(String, String)> {
    world
        .build()
        .as_object()
        .unwrap()
        .iter()
        .map(|(r, i)| (r.clone(), i.as_str().unwrap().to_string()))
        .collect()
}

fn assert_no_try_pool_left(world: &World) {
    let left = world.tc.live_try_pools();
    assert!(left.is_empty(), "temporary pools left: {left:?}");
}

#[test]
fn a_passing_try_waits_for_the_whole_group_and_removes_its_pool() {
    let world = World::simulating(seed_pools());
    built(&world);
    world.cfg.write("decision.json", &decision_task(600, 2));
    let task = world.cfg.path().join("decision.json");
    let run = world
        .tc_ami()
        .run(&["try", "-w", "w", "--task", task.to_str().unwrap()]);
    run.assert_code(0);
    let tasks = world.tc.tasks();
    assert_eq!(
        tasks.len(),
        3,
        "the decision task and its two children: {tasks:#?}"
    );
    assert!(
        tasks.iter().all(|t| t["state"] == "completed"),
        "{tasks:#?}"
    );
    let pool = tasks[0]["taskQueueId"].as_str().unwrap();
    assert!(pool.starts_with("proj-servo/win2016-try-"), "{pool}");
    // Every task, completed, with its link, on stdout.
    for t in &tasks {
        let link = format!(
            "{}/tasks/{}",
            world.tc.server.url,
            t["taskId"].as_str().unwrap()
        );
        let line = run
            .stdout
            .lines()
            .find(|l| l.ends_with(&link))
            .unwrap_or_else(|| panic!("no line for {link}:\n{}", run.stdout));
        assert!(line.starts_with("completed"), "{line}");
    }
    assert!(
        run.stderr.contains("tasks: "),
        "progress counts: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("removed the temporary worker pool {pool}")),
        "{}",
        run.stderr
    );
    assert_eq!(world.tc.created_try_pools(), [pool]);
    assert_no_try_pool_left(&world);
    // The temporary pool was a copy of the live one, min 0, max try_max_capacity (2).
    let requests = world.tc.state()["requests"].clone();
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["apiMethod"] == "deleteWorkerPool" && r["status"] == 200),
        "{requests:#}"
    );
    // The history has the try, and it is not a deployment.
    let history = world.tc_ami().run(&["--json", "history", "-w", "w"]);
    history.assert_code(0);
    let doc = history.json();
    let records = doc["deployments"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{doc:#}");
    assert_eq!(records[0]["kind"], "try");
    assert_eq!(records[0]["live"], false);
    assert_eq!(records[0]["tried"]["outcome"], "passed");
    assert_eq!(records[0]["tried"]["pool"], pool);
    assert_eq!(records[0]["tried"]["tasks"].as_array().unwrap().len(), 3);
    let human = world.tc_ami().run(&["history", "-w", "w"]);
    assert!(
        human.stdout.contains("#1 try: passed (3 tasks)"),
        "{}",
        human.stdout
    );
}

/// Bad arguments and task files: one line each, exit 1, checked before anything is created
/// (no image is even needed to find them).
#[test]
fn bad_inputs_are_refused_before_anything_is_created() {
    let world = World::simulating(seed_pools());
    world.cfg.write(
        "nometa.yml",
        "payload:\n  maxRunTime: 60\n  command: [\"echo\"]\n",
    );
    world.cfg.write("list.yml", "- not a task\n");
    let missing = world.cfg.path().join("missing.yml");
    let nometa = world.cfg.path().join("nometa.yml");
    let list = world.cfg.path().join("list.yml");
    let shipped = shipped_task();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--task", missing.to_str().unwrap()],
            format!(
                "cannot read the task file {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            vec!["--task", nometa.to_str().unwrap()],
            format!("{}: `metadata` is required", nometa.display()),
        ),
        (
            vec!["--task", list.to_str().unwrap()],
            format!(
                "{}: a task definition must be a mapping at the top level",
                list.display()
            ),
        ),
        (
            vec!["--task", &shipped, "--timeout", "6d"],
            "the try timeout must be between 1s and 5d (the Queue refuses a deadline beyond 5 days), not 518400s".to_string(),
        ),
        (
            vec!["--task", &shipped, "--timeout", "2x"],
            "--timeout 2x: unknown unit `x` (use s, m, h or d)".to_string(),
        ),
        (
            vec!["--task", &shipped, "--image", "ami-1"],
            "--image ami-1: `ami-1` is not an AMI id (ami- and 8 or 17 hex digits)".to_string(),
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["try", "-w", "w"];
        all.extend(args);
        let run = world.tc_ami().run(&all);
        run.assert_code(1);
        assert_eq!(
            run.error_line(),
            format!("tc-ami: error: {message}"),
            "{all:?}"
        );
    }
    assert!(world.tc.created_try_pools().is_empty());
    assert!(world.tc.tasks().is_empty());
}

#[test]
fn a_failing_try_names_the_failed_task_and_exits_1() {
    let world = World::simulating(seed_pools());
    for (region, image) in built(&world) {
        world
            .ec2
            .tag_image(&region, &image, "sandbox:task-outcome", "failed");
    }
    let run = world
        .tc_ami()
        .run(&["--json", "try", "-w", "w", "--task", &shipped_task()]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["outcome"], "failed");
    let task_id = doc["taskId"].as_str().unwrap();
    assert_eq!(doc["tasks"][0]["state"], "failed");
    assert_eq!(
        run.error_line(),
        format!(
            "tc-ami: error: try failed: tc-ami try: the tools of the image ({task_id}, failed)"
        )
    );
    assert_no_try_pool_left(&world);
}

#[test]
fn a_try_that_times_out_cancels_its_tasks_and_removes_its_pool() {
    let world = World::simulating(seed_pools());
    built(&world);
    // 3600 simulated seconds: 3.6 s, longer than the timeout.
    world.cfg.write("long.json", &decision_task(3600, 0));
    let task = world.cfg.path().join("long.json");
    let run = world.tc_ami().run(&[
        "try",
        "-w",
        "w",
        "--task",
        task.to_str().unwrap(),
        "--timeout",
        "2s",
    ]);
    run.assert_code(1);
    let line = run.error_line();
    assert_eq!(
        line,
        "tc-ami: error: try timed out after 2s (the tasks then: 1 running)"
    );
    let tasks = world.tc.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["state"], "exception", "{tasks:#?}");
    assert!(
        run.stderr.contains("cancelled 1 unresolved task(s)"),
        "{}",
        run.stderr
    );
    assert_no_try_pool_left(&world);
}

#[test]
fn ctrl_c_during_the_wait_cancels_the_tasks_and_removes_the_pool() {
    let world = World::simulating(seed_pools());
    built(&world);
    world.cfg.write("long.json", &decision_task(86400, 0));
    let task = world.cfg.path().join("long.json");
    let run = world.tc_ami().interrupt_at(
        &["try", "-w", "w", "--task", task.to_str().unwrap()],
        "waiting for the tasks of task group",
        "INT",
    );
    run.assert_code(130);
    let line = run.error_line();
    assert!(line.starts_with("tc-ami: try stopped; cancelled 1 unresolved task(s); removed the temporary worker pool proj-servo/win2016-try-"), "{line}");
    assert!(line.ends_with("interrupted by Ctrl-C (SIGINT)"), "{line}");
    let tasks = world.tc.tasks();
    assert_eq!(tasks[0]["state"], "exception", "{tasks:#?}");
    assert_no_try_pool_left(&world);
    // Recorded as interrupted.
    let doc = world.tc_ami().run(&["--json", "history", "-w", "w"]).json();
    assert_eq!(doc["deployments"][0]["tried"]["outcome"], "interrupted");
}

#[test]
fn cleanup_removes_the_pool_of_a_killed_try_once_its_timeout_has_passed() {
    let world = World::simulating(seed_pools());
    built(&world);
    world.cfg.write("long.json", &decision_task(86400, 0));
    let task = world.cfg.path().join("long.json");
    let run = world.tc_ami().interrupt_at(
        &[
            "try",
            "-w",
            "w",
            "--task",
            task.to_str().unwrap(),
            "--timeout",
            "5s",
        ],
        "waiting for the tasks of task group",
        "KILL",
    );
    assert_eq!(run.code, -1, "killed: {}", run.stderr);
    let left = world.tc.live_try_pools();
    assert_eq!(left.len(), 1, "SIGKILL skips the removal");
    // Too young: its try may still be running.
    let early = world.tc_ami().run(&["cleanup", "-w", "w", "--yes"]);
    early.assert_code(0);
    assert_eq!(world.tc.live_try_pools(), left, "{}", early.stderr);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let dry = world.tc_ami().run(&["cleanup", "-w", "w", "--dry-run"]);
    dry.assert_code(0);
    assert!(dry.stdout.contains(&left[0]), "{}", dry.stdout);
    assert_eq!(world.tc.live_try_pools(), left);
    let run = world
        .tc_ami()
        .run(&["--json", "cleanup", "-w", "w", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["try_pools"][0]["workerPoolId"], left[0]);
    assert!(
        run.stderr
            .contains(&format!("removed the temporary worker pool {}", left[0])),
        "{}",
        run.stderr
    );
    assert_no_try_pool_left(&world);
}

#[test]
fn deploy_with_a_failing_try_pushes_nothing() {
    let world = World::simulating(seed_pools());
    let images = built(&world);
    let seeded = world.pool_shape();
    for (region, image) in &images {
        world
            .ec2
            .tag_image(region, image, "sandbox:task-outcome", "failed");
    }
    let west = &images.iter().find(|(r, _)| r == "us-west-2").unwrap().1;
    let run = world.tc_ami().run(&[
        "deploy",
        "-w",
        "w",
        "--image",
        west,
        "--try",
        &shipped_task(),
        "--yes",
    ]);
    run.assert_code(1);
    let line = run.error_line();
    assert!(
        line.starts_with("tc-ami: error: nothing pushed to worker pool proj-servo/win2016: the images did not pass their try: try failed: tc-ami try: the tools of the image ("),
        "{line}"
    );
    assert_eq!(world.pool_shape(), seeded, "pushed");
    assert_eq!(
        world.updates(),
        1,
        "only the scope check before the try, which posts the pool back unchanged"
    );
    assert_no_try_pool_left(&world);
}

#[test]
fn deploy_try_with_a_client_that_may_not_record_stops_before_the_try() {
    let world = World::simulating(seed_pools());
    let images = built(&world);
    let west = &images.iter().find(|(r, _)| r == "us-west-2").unwrap().1;
    let seeded = world.pool_shape();
    let run = world
        .tc_ami()
        .client(HISTORY_READER_ID, HISTORY_READER_TOKEN)
        .run(&[
            "deploy",
            "-w",
            "w",
            "--image",
            west,
            "--try",
            &shipped_task(),
            "--yes",
        ]);
    run.assert_code(1);
    let line = run.error_line();
    assert!(
        line.starts_with(&format!(
            "tc-ami: error: client `{HISTORY_READER_ID}` lacks the scope secrets:set:project/servo/"
        )) && line.ends_with("; nothing was tried or pushed"),
        "{}",
        run.stderr
    );
    assert!(world.tc.created_try_pools().is_empty());
    assert!(world.tc.tasks().is_empty());
    assert_eq!(world.pool_shape(), seeded);
    assert_eq!(world.updates(), 0);
}

#[test]
fn deploy_tries_with_the_worker_type_s_try_task_and_no_try_skips_it() {
    let world = World::simulating(seed_pools());
    let images = built(&world);
    world.cfg.worker_type(
        "w",
        POOL,
        &format!(
            "regions = [\"us-east-1\"]\ntry_task = \"{}\"",
            shipped_task()
        ),
    );
    let west = images
        .iter()
        .find(|(r, _)| r == "us-west-2")
        .unwrap()
        .1
        .clone();
    let reads = world.pool_reads();
    let run = world
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0);
    assert!(run.stderr.contains("passed after"), "{}", run.stderr);
    // Read when the command starts, by the scope check before the try, after the try (the diff
    // is computed again), right before the push and after it (the verification and the
    // rollout line).
    assert_eq!(world.pool_reads() - reads, 5);
    assert!(
        run.stderr.contains("deployed to worker pool"),
        "{}",
        run.stderr
    );
    let (active, _) = world.pool();
    assert!(
        active
            .iter()
            .filter(|lc| lc["configuration"]["region"] == "us-west-2")
            .all(|lc| image_of(lc) == west),
        "{active:#?}"
    );
    assert_eq!(
        world.updates(),
        2,
        "the scope check before the try (the pool posted back unchanged) and the push"
    );
    assert_eq!(world.tc.tasks().len(), 1);
    assert_no_try_pool_left(&world);
    // --no-try: said, and no task.
    let run = world
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--no-try", "--yes"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("not trying the images first (--no-try)"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tc.tasks().len(), 1);
}

/// A pool whose name is 38 characters long, the most workerPoolId allows: the temporary pool's
/// name is cut to fit and still works; --keep-pool keeps it until cleanup.
#[test]
fn a_pool_id_at_the_38_character_limit_and_keep_pool() {
    let long = format!("proj-servo/win2016-{}", "x".repeat(30));
    assert_eq!(long.split_once('/').unwrap().1.len(), 38);
    let mut pools = seed_pools();
    let mut copy = pools[0].clone();
    copy["workerPoolId"] = json!(long);
    pools.as_array_mut().unwrap().push(copy);
    let world = World::simulating(pools);
    world
        .cfg
        .worker_type("w", &long, "regions = [\"us-east-1\"]");
    built(&world);
    let run = world.tc_ami().run(&[
        "--json",
        "try",
        "-w",
        "w",
        "--task",
        &shipped_task(),
        "--timeout",
        "6s",
        "--keep-pool",
    ]);
    run.assert_code(0);
    let pool = run.json()["tryPoolId"].as_str().unwrap().to_string();
    assert_eq!(pool.split_once('/').unwrap().1.len(), 38, "{pool}");
    assert!(pool.starts_with("proj-servo/win2016-xxxxxxxxxx"), "{pool}");
    assert_eq!(world.tc.tasks()[0]["state"], "completed");
    assert_eq!(world.tc.live_try_pools(), vec![pool.clone()]);
    assert!(
        run.stderr.contains(&format!(
            "kept the temporary worker pool {pool} (--keep-pool)"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "taskcluster api workerManager deleteWorkerPool {pool}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("`tc-ami cleanup -w w` once its 6s have passed"),
        "{}",
        run.stderr
    );
    std::thread::sleep(std::time::Duration::from_secs(6));
    world
        .tc_ami()
        .run(&["cleanup", "-w", "w", "--yes"])
        .assert_code(0);
    assert_no_try_pool_left(&world);
}

/// A task group of more than one listTaskGroup page (1000 tasks): the later pages are signed by
/// tc-ami over the path with its query string (the crate leaves the query out of the MAC, and
/// the emulator, as the real service, refuses that).
#[test]
fn a_task_group_of_several_pages() {
    let world = World::simulating(seed_pools());
    world.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\ntry_max_capacity = 50",
    );
    built(&world);
    let children: Vec<Value> = (0..1001)
        .map(|_| json!({"payload": {"maxRunTime": 1}}))
        .collect();
    let mut task: Value = serde_json::from_str(&decision_task(60, 0)).unwrap();
    task["payload"]["env"]["TC_AMI_SANDBOX_CHILDREN"] =
        Value::from(serde_json::to_string(&children).unwrap());
    world.cfg.write("big.json", &task.to_string());
    let file = world.cfg.path().join("big.json");
    let run = world
        .tc_ami()
        .run(&["--json", "try", "-w", "w", "--task", file.to_str().unwrap()]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["tasks"].as_array().unwrap().len(), 1002);
    let pages = world.tc.state()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["apiMethod"] == "listTaskGroup"
                && r["path"].as_str().unwrap().contains("continuationToken=")
        })
        .map(|r| r["status"].clone())
        .collect::<Vec<_>>();
    assert!(!pages.is_empty(), "no second page was asked for");
    assert!(pages.iter().all(|s| s == 200), "{pages:?}");
    assert_no_try_pool_left(&world);
}

#[test]
fn promote_tries_the_images_on_a_copy_of_the_target_pool_first() {
    let world = World::simulating(seed_pools());
    let images = built(&world);
    world.cfg.worker_type(
        "s",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let west = images
        .iter()
        .find(|(r, _)| r == "us-west-2")
        .unwrap()
        .1
        .clone();
    world
        .tc_ami()
        .run(&["deploy", "-w", "s", "--image", &west, "--yes"])
        .assert_code(0);
    let (seeded, updates) = (world.pool_shape(), world.updates());
    let run = world.tc_ami().run(&[
        "promote",
        "--from",
        "s",
        "--to",
        "w",
        "--try",
        &shipped_task(),
        "--yes",
    ]);
    run.assert_code(0);
    let tasks = world.tc.tasks();
    assert_eq!(tasks.len(), 1);
    let queue = tasks[0]["taskQueueId"].as_str().unwrap();
    assert!(queue.starts_with("proj-servo/win2016-try-"), "{queue}");
    assert!(
        run.stderr
            .contains("promoted to worker pool proj-servo/win2016"),
        "{}",
        run.stderr
    );
    assert_ne!(world.pool_shape(), seeded, "not pushed");
    assert_eq!(
        world.updates(),
        updates + 2,
        "the scope check before the try (the pool posted back unchanged) and the push"
    );
    assert_no_try_pool_left(&world);
}
