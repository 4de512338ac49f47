//! Several worker types in one run: `build -w A -w B --jobs 2` builds both at once, a failure
//! of one leaves the other's image, Ctrl-C stops both and leaves nothing; `status` with several
//! `-w` or all; bad `--jobs` and unknown worker types are one-line errors before anything
//! starts.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const STAGING: &str = "proj-servo/win2016-staging";

/// The world with a second worker type `b` (the staging pool), built in us-west-2 and copied
/// to us-east-1 as `w` is.
fn two(ec2: Value) -> World {
    let w = World {
        ec2: Ec2::start(ec2),
        tc: Tc::start(seed_pools()),
        cfg: Config::new(),
    };
    w.cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
    w.cfg.worker_type("b", STAGING, "regions = [\"us-east-1\"]");
    w
}

/// region → image id of the images tc-ami built for `worker_type` (by their tag).
fn images_of(w: &World, worker_type: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = w
        .ec2
        .all("images")
        .into_iter()
        .filter(|(_, i)| i["tags"]["tc-ami:worker-type"] == worker_type)
        .map(|(region, i)| (region, i["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    out.sort();
    out
}

/// The EC2 calls that create something, so far.
fn creates(w: &World) -> u64 {
    let stats = w.ec2.stats();
    ["CreateKeyPair", "CreateSecurityGroup", "RunInstances"]
        .iter()
        .map(|a| stats["requests"][a].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn two_worker_types_build_at_once_each_tagged_as_its_own() {
    let w = two(json!({}));
    let run = w
        .tc_ami()
        .run(&["--json", "build", "-w", "w", "-w", "b", "--jobs", "2"]);
    run.assert_code(0);
    let doc = run.json();
    let entries = doc["workerTypes"].as_array().expect("workerTypes");
    assert_eq!(entries.len(), 2, "{doc:#}");
    for (entry, name) in entries.iter().zip(["w", "b"]) {
        assert_eq!(entry["worker_type"], name, "in the order given: {doc:#}");
        let images: Vec<(String, String)> = entry["images"]
            .as_object()
            .expect("images")
            .iter()
            .map(|(r, i)| (r.clone(), i.as_str().unwrap_or_default().to_string()))
            .collect();
        assert_eq!(images.len(), 2, "{entry:#}");
        // Each image exists in its region, tagged with its own worker type.
        assert_eq!(images_of(&w, name), images, "{name}");
    }
    // They ran at once: each one's progress lines, labelled, before the other's end.
    let first_copy = |name: &str| {
        run.stderr
            .find(&format!("{name}: waiting for first-boot.ps1"))
            .unwrap_or_else(|| panic!("{name}'s progress: {}", run.stderr))
    };
    let copied = |name: &str| {
        run.stderr
            .find(&format!("{name}: copying"))
            .unwrap_or_else(|| panic!("{name}'s copy: {}", run.stderr))
    };
    assert!(first_copy("w") < copied("b") && first_copy("b") < copied("w"));
    w.ec2.assert_nothing_left_but_images();
}

#[test]
fn one_failing_build_does_not_stop_the_other_and_exits_1() {
    let w = two(json!({"guest": {"mode_by_worker_type": {"b": "fail"}, "fail_after_seconds": 1}}));
    let run = w
        .tc_ami()
        .run(&["build", "-w", "b", "-w", "w", "--jobs", "2"]);
    run.assert_code(1);
    // The good one's image, printed and in EC2; nothing of the failed one.
    let good = images_of(&w, "w");
    assert_eq!(good.len(), 2, "{}", run.stderr);
    for (region, id) in &good {
        assert!(
            run.stdout.contains(&format!("w\t{region}\t{id}")),
            "{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("b\t"), "{}", run.stdout);
    assert!(images_of(&w, "b").is_empty());
    w.ec2.assert_nothing_left_but_images();
    // Which failed, and why; the last line names it.
    assert!(
        run.stderr.contains(
            "tc-ami: error: b: build failed while waiting for first-boot.ps1 to shut the instance down: the guest reported:"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.error_line(),
        "tc-ami: error: 1 of 2 worker types failed: b"
    );
    // --json: an entry each, the failure with its error.
    let w2 = two(json!({"guest": {"mode_by_worker_type": {"b": "fail"}, "fail_after_seconds": 1}}));
    let run = w2.tc_ami().run(&["--json", "build", "--all"]);
    run.assert_code(1);
    let doc = run.json();
    let by_name = |n: &str| {
        doc["workerTypes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["worker_type"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n}: {doc:#}"))
    };
    assert!(
        by_name("b")["error"]
            .as_str()
            .unwrap()
            .contains("the guest reported")
    );
    assert_eq!(by_name("w")["images"].as_object().map(|m| m.len()), Some(2));
    assert!(
        run.stderr.contains("tc-ami: error: b: build failed"),
        "{}",
        run.stderr
    );
    w2.ec2.assert_nothing_left_but_images();
}

#[test]
fn ctrl_c_during_two_builds_stops_both_and_leaves_nothing() {
    let w = two(json!({"guest": {"shutdown_after_seconds": 60}}));
    let mut child = w
        .tc_ami()
        .cmd
        .args(["build", "-w", "w", "-w", "b", "--jobs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tc-ami");
    let lines = Arc::new(Mutex::new(String::new()));
    let reader = {
        let lines = lines.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = lines.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    // Both are waiting for their guests.
    let started = Instant::now();
    while !["w", "b"].iter().all(|n| {
        lines
            .lock()
            .unwrap()
            .contains(&format!("{n}: waiting for first-boot.ps1"))
    }) {
        assert!(started.elapsed() < Duration::from_secs(60), "hang guard");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    reader.join().unwrap();
    let stderr = lines.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{stderr}");
    for n in ["w", "b"] {
        assert!(
            stderr.contains(&format!(
                "tc-ami: error: {n}: build failed while waiting for first-boot.ps1 to shut the instance down: interrupted by Ctrl-C (SIGINT)"
            )),
            "{n}: {stderr}"
        );
    }
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "tc-ami: stopped 2 of 2 worker types (w, b): interrupted by Ctrl-C (SIGINT)"
    );
    w.ec2.assert_nothing_left();
}

#[test]
fn status_of_several_worker_types() {
    let w = two(json!({}));
    let run = w
        .tc_ami()
        .run(&["status", "-w", "b", "-w", "w", "--jobs", "1"]);
    run.assert_code(0);
    let b = run.stdout.find(&format!("b  (pool {STAGING})"));
    let ww = run.stdout.find(&format!("w  (pool {POOL})"));
    assert!(
        b.is_some() && ww.is_some() && b < ww,
        "in the order given: {}",
        run.stdout
    );
    // All of worker-types/: one document, an entry each (in the directory's order).
    let run = w.tc_ami().run(&["--json", "status"]);
    run.assert_code(0);
    let doc = run.json();
    let names: Vec<&str> = doc["workerTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["worker_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["b", "w"], "{doc:#}");
    assert!(
        doc["workerTypes"][1]["live"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
}

#[test]
fn bad_jobs_and_unknown_worker_types_are_one_line_errors_before_anything_starts() {
    let w = two(json!({}));
    for (args, want) in [
        (
            &["build", "-w", "w", "-w", "b", "--jobs", "0"][..],
            "tc-ami: error: invalid value '0' for '--jobs <N>': at least 1",
        ),
        (
            &["status", "--jobs", "many"],
            "tc-ami: error: invalid value 'many' for '--jobs <N>': a whole number, at least 1",
        ),
        (
            &["build", "-w", "w", "-w", "nope", "--jobs", "2"],
            "tc-ami: error: ",
        ),
        (&["status", "-w", "w", "-w", "nope"], "tc-ami: error: "),
        (
            &["build", "--all", "-w", "w"],
            "tc-ami: error: the argument '--all' cannot be used with",
        ),
    ] {
        let run = w.tc_ami().run(args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with(want), "{args:?}: {}", run.stderr);
        if args.contains(&"nope") {
            assert!(run.stderr.contains("nope"), "{}", run.stderr);
        }
    }
    assert_eq!(creates(&w), 0, "something was created");
    assert_eq!(w.updates(), 0);
}
