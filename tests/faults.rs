//! Fault drills: EC2 that throttles and fails, Taskcluster answering 503 in bursts, and secrets
//! that must never reach the output, whatever the verbosity.

mod support;

use serde_json::json;
use support::*;

#[test]
fn builds_and_deploys_survive_ec2_throttling_and_500s() {
    let w = World::new();
    // One EC2 call in five answers RequestLimitExceeded (503) or InternalError (500); a faulted
    // call never reaches moto, so a retry is safe.
    w.ec2
        .configure(json!({"faults": {"rate": 0.2, "kinds": ["throttle", "500"], "seed": 7}}));
    let run = w.tc_ami().run(&["--json", "build", "-w", "w"]);
    run.assert_code(0);
    let west = run.json()["images"]["us-west-2"]
        .as_str()
        .unwrap()
        .to_string();
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0);
    let stats = w.ec2.stats();
    assert!(
        stats["faulted_total"].as_u64().unwrap() > 3,
        "faults were injected: {stats}"
    );
    w.ec2.configure(json!({"faults": {"rate": 0}}));
    w.ec2.assert_nothing_left_but_images();
    assert_eq!(
        w.ec2.all("images").len(),
        2,
        "one image and its copy, no duplicates"
    );
}

#[test]
fn a_build_that_fails_under_faults_still_leaves_nothing() {
    let w = World::new();
    // Every call fails after the launch: the build fails and teardown must still get through
    // (its calls retry past the faults once they stop).
    w.ec2.configure(json!({"faults": {"rate": 0.3, "kinds": ["throttle"], "seed": 3}, "guest": {"mode": "terminate"}}));
    let run = w.tc_ami().run(&["build", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("build failed while"),
        "{}",
        run.stderr
    );
    w.ec2.configure(json!({"faults": {"rate": 0}}));
    w.ec2.assert_nothing_left();
}

#[test]
fn taskcluster_503_bursts_are_retried_or_fail_with_nothing_half_pushed() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();

    // A short burst on the update itself: retried, the deploy goes through.
    w.tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 503, "count": 2, "match": {"method": "POST"}}}),
    );
    w.tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"])
        .assert_code(0);
    let history = w.tc_ami().run(&["--json", "history", "-w", "w"]).json();
    assert_eq!(history["deployments"].as_array().unwrap().len(), 1);

    // A burst longer than the client's retries on the update: the deploy fails, the pool is
    // as it was, and no deployment is recorded.
    let west2 = w.build()["us-west-2"].as_str().unwrap().to_string();
    let before = w.pool().0;
    w.tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 503, "count": 20, "match": {"method": "POST"}}}),
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west2, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("updating worker pool proj-servo/win2016"),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
    w.tc.server
        .post("/_emulator/faults", json!({"clear": true}));
    assert_eq!(w.pool().0, before);
    let history = w.tc_ami().run(&["--json", "history", "-w", "w"]).json();
    assert_eq!(history["deployments"].as_array().unwrap().len(), 1);
}

#[test]
fn secrets_never_reach_the_output_even_verbose() {
    let w = World::new();
    w.cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]\npassword_secret_prefix = \"project/servo/windows-administrator/w\"");
    for verbosity in [&["-vv"][..], &["--json"], &[]] {
        let mut args = verbosity.to_vec();
        args.extend(["build", "-w", "w"]);
        let run = w
            .tc_ami()
            .env("RUST_LOG", if verbosity.is_empty() { "" } else { "trace" })
            .run(&args);
        run.assert_code(0);
        let passwords: Vec<String> = w
            .ec2
            .all("instances")
            .iter()
            .filter_map(|(_, i)| i["password"].as_str().map(str::to_string))
            .collect();
        assert!(!passwords.is_empty());
        for p in &passwords {
            run.assert_hides(p);
        }
        run.assert_hides(OPERATOR_TOKEN)
            .assert_hides("PRIVATE KEY")
            .assert_hides(&OPERATOR_TOKEN[..20]);
    }
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    let run = w.tc_ami().env("RUST_LOG", "trace").run(&[
        "-vv", "--json", "deploy", "-w", "w", "--image", west, "--yes",
    ]);
    run.assert_code(0);
    run.assert_hides(OPERATOR_TOKEN);
}

#[test]
fn a_400_from_the_service_is_shown_with_its_message() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let before = w.pool().0;
    w.tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 400, "count": 1, "code": "InputValidationError", "message": "data/config/launchConfigs/0 must NOT have additional properties", "match": {"method": "POST"}}}),
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!(
            "updating worker pool proj-servo/win2016: {} answered 400",
            w.tc.server.url
        )),
        "{err}"
    );
    assert!(err.contains("must NOT have additional properties"), "{err}");
    assert_eq!(w.pool().0, before);
}
