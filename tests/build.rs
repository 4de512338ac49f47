//! `base-ami` and `build` run as a user would, against moto with the guest simulator and the
//! Taskcluster emulator.

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

/// The seed's newest available `Windows_Server-2016-English-Full-Base-*` owned by Amazon
/// (sandbox/seed/windows-amis.json; a newer one is pending and a newer look-alike is owned by
/// someone else).
const BASE_ID: &str = "ami-debb7b63493b4360c";
const BASE_NAME: &str = "Windows_Server-2016-English-Full-Base-2024.04.10";
const SECRET_PREFIX: &str = "project/servo/windows-administrator/w";

fn user_data_sha256() -> String {
    let script = std::fs::read_to_string(repo_root().join("scripts/first-boot.ps1")).unwrap();
    let data = format!("<powershell>{script}</powershell>");
    Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tag<'a>(resource: &'a Value, key: &str) -> &'a str {
    resource["tags"][key].as_str().unwrap_or_default()
}

/// The password the simulated Windows made for the build instance.
fn guest_password(ec2: &Ec2) -> String {
    let instances = ec2.all("instances");
    assert_eq!(instances.len(), 1, "one build instance: {instances:?}");
    instances[0].1["password"]
        .as_str()
        .expect("password")
        .to_string()
}

fn create_calls(ec2: &Ec2) -> u64 {
    let stats = ec2.stats();
    [
        "CreateKeyPair",
        "CreateSecurityGroup",
        "RunInstances",
        "CreateImage",
    ]
    .iter()
    .map(|a| stats["requests"][a].as_u64().unwrap_or(0))
    .sum()
}

#[test]
fn base_ami_is_the_newest_available_match() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["base-ami", "-w", "w"]);
    run.assert_code(0);
    assert!(run.stdout.contains(BASE_ID), "{}", run.stdout);
    assert!(run.stdout.contains(BASE_NAME), "{}", run.stdout);
    assert!(run.stdout.contains("2024-04-10"), "{}", run.stdout);

    let run = TcAmi::new(&ec2, None, &cfg).run(&["--json", "base-ami", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["image"]["id"], BASE_ID);
    assert_eq!(doc["region"], "us-west-2");
    assert_eq!(doc["pattern"], "Windows_Server-2016-English-Full-Base-*");
}

#[test]
fn base_ami_pattern_that_matches_nothing_is_an_error() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        "proj-servo/win2016",
        "base_ami_pattern = \"Windows_Server-1999-*\"",
    );
    let run = TcAmi::new(&ec2, None, &cfg).run(&["base-ami", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(
            "no available Windows image named `Windows_Server-1999-*` owned by amazon in us-west-2"
        ),
        "{err}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
}

#[test]
fn build_makes_tagged_images_in_every_region_and_stores_the_password() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(json!([]));
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        "proj-servo/win2016",
        &format!("regions = [\"us-east-1\"]\npassword_secret_prefix = \"{SECRET_PREFIX}\""),
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "build", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    let west = doc["images"]["us-west-2"]
        .as_str()
        .expect("us-west-2 image")
        .to_string();
    let east = doc["images"]["us-east-1"]
        .as_str()
        .expect("us-east-1 image")
        .to_string();
    assert_eq!(doc["base_image"]["id"], BASE_ID);
    assert_eq!(doc["password"]["stored_in"], "secret");
    assert_eq!(doc["password"]["secret"], format!("{SECRET_PREFIX}/{west}"));
    let build_id = doc["build_id"].as_str().unwrap();

    // The images: available, tagged, in both regions; the copy names its source.
    let images = ec2.all("images");
    assert_eq!(images.len(), 2, "{images:#?}");
    for (region, image) in &images {
        assert_eq!(image["state"], "available");
        assert_eq!(tag(image, "tc-ami:build-id"), build_id);
        assert_eq!(tag(image, "tc-ami:worker-type"), "w");
        assert_eq!(tag(image, "tc-ami:base-image-id"), BASE_ID);
        assert_eq!(tag(image, "tc-ami:base-image-name"), BASE_NAME);
        assert_eq!(tag(image, "tc-ami:user-data-sha256"), user_data_sha256());
        assert_eq!(tag(image, "tc-ami:version"), env!("CARGO_PKG_VERSION"));
        let want = if region == "us-west-2" { &west } else { &east };
        assert_eq!(image["id"].as_str(), Some(want.as_str()));
    }
    let (_, copy) = images.iter().find(|(r, _)| r == "us-east-1").unwrap();
    assert_eq!(tag(copy, "tc-ami:source-image-id"), west);
    // Snapshots are tagged with the build too (so a sweep can find them).
    for (_, snap) in ec2
        .all("snapshots")
        .iter()
        .filter(|(_, s)| s["seeded"] != true)
    {
        assert_eq!(tag(snap, "tc-ami:build-id"), build_id, "{snap}");
    }

    // The build's temporary resources are gone; the instance was launched as asked.
    let instances = ec2.all("instances");
    assert_eq!(instances.len(), 1);
    let instance = &instances[0].1;
    assert_eq!(instance["state"], "terminated");
    assert_eq!(instance["user_data_ok"], true, "{instance}");
    assert_eq!(instance["image_id"], BASE_ID);
    assert_eq!(instance["instance_type"], "c5.xlarge");
    assert_eq!(tag(instance, "tc-ami:build-id"), build_id);
    assert!(ec2.all("key_pairs").is_empty());
    assert!(
        ec2.all("security_groups")
            .iter()
            .all(|(_, g)| g["default"] == true)
    );

    // The password is in the secret, and nowhere in the output.
    let password = guest_password(&ec2);
    let secrets = &tc.state()["secrets"];
    let secret = &secrets[format!("{SECRET_PREFIX}/{west}")]["secret"];
    assert_eq!(secret["password"], password.as_str(), "{secrets}");
    assert_eq!(secret["username"], "Administrator");
    assert_eq!(secret["images"]["us-east-1"], east.as_str());
    run.assert_hides(&password).assert_hides(ADMIN_TOKEN);
}

#[test]
fn build_without_a_secret_prints_the_password_once_on_stderr() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["--json", "build", "-w", "w"]);
    run.assert_code(0);
    let password = guest_password(&ec2);
    assert_eq!(run.stderr.matches(&password).count(), 1, "{}", run.stderr);
    assert!(!run.stdout.contains(&password));
    assert_eq!(run.json()["password"]["stored_in"], "printed");
    ec2.assert_nothing_left_but_images();
}

#[test]
fn a_guest_that_never_stops_times_out_and_leaves_nothing() {
    let ec2 = Ec2::start(json!({"guest": {"mode": "never"}}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "build_timeout = \"4s\"");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("build failed while waiting for first-boot.ps1 to shut the instance down"),
        "{err}"
    );
    assert!(err.contains("did not happen within 4s"), "{err}");
    assert!(!err.contains("LEFT BEHIND"), "{err}");
    ec2.assert_nothing_left();
}

#[test]
fn a_script_the_guest_does_not_run_times_out() {
    // The user data must be the wrapped first-boot.ps1; a different script never shuts down.
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "build_timeout = \"3s\"");
    cfg.write(
        "scripts/first-boot.ps1",
        "Write-Host 'not the script the guest expects'\r\nshutdown /s\r\n",
    );
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("did not happen within 3s"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

#[test]
fn a_guest_that_terminates_itself_fails_the_build_cleanly() {
    // It ends itself while tc-ami waits for the shutdown (a few polls after the launch).
    let ec2 = Ec2::start(json!({"guest": {"mode": "terminate", "shutdown_after_seconds": 4}}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("build failed while waiting for first-boot.ps1 to shut the instance down"),
        "{err}"
    );
    // Seen while it terminates or once it has (a poll every 1.8 s, shutting-down for 0.2 s).
    assert!(
        err.contains(" is terminated (Client.InstanceInitiatedShutdown)")
            || err.contains(" is shutting-down (Client.InstanceInitiatedShutdown)"),
        "{err}"
    );
    ec2.assert_nothing_left();
}

#[test]
fn a_failed_image_is_removed_with_everything_else() {
    let ec2 = Ec2::start(json!({"image_fail": true}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line()
            .contains("build failed while waiting for the image to be available"),
        "{}",
        run.stderr
    );
    assert!(run.error_line().contains("failed"), "{}", run.stderr);
    ec2.assert_nothing_left();
}

#[test]
fn a_failed_copy_removes_the_copies_and_the_source() {
    let ec2 = Ec2::start(json!({"copy_fail": true}));
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        "proj-servo/win2016",
        "regions = [\"us-east-1\", \"eu-central-1\"]",
    );
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line()
            .contains("build failed while copying the image to other regions"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

#[test]
fn a_refused_secret_fails_the_build_and_removes_the_images() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(json!([]));
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        "proj-servo/win2016",
        &format!("password_secret_prefix = \"{SECRET_PREFIX}\""),
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg)
        .env("TASKCLUSTER_ACCESS_TOKEN", "wrong-token")
        .run(&["build", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("build failed while storing the administrator password"),
        "{err}"
    );
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("TASKCLUSTER_ACCESS_TOKEN"), "{err}");
    run.assert_hides(&guest_password(&ec2))
        .assert_hides("wrong-token");
    ec2.assert_nothing_left();
}

#[test]
fn read_only_scopes_fail_the_build_with_the_missing_scope() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(json!([]));
    let cfg = Config::new();
    cfg.worker_type(
        "w",
        "proj-servo/win2016",
        &format!("password_secret_prefix = \"{SECRET_PREFIX}\""),
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg)
        .env("TASKCLUSTER_CLIENT_ID", READONLY_ID)
        .env("TASKCLUSTER_ACCESS_TOKEN", READONLY_TOKEN)
        .run(&["build", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(err.contains("403"), "{err}");
    assert!(
        err.contains(&format!("secrets:set:{SECRET_PREFIX}/ami-")),
        "{err}"
    );
    ec2.assert_nothing_left();
}

#[test]
fn problems_found_before_launch_create_nothing() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    let cases = [
        // (worker type extra lines, expected message)
        (
            "first_boot_script = \"scripts/missing.ps1\"",
            "cannot read the first-boot script",
        ),
        (
            "first_boot_script = \"scripts/big.ps1\"",
            "over EC2's limit of 16384 bytes",
        ),
        (
            "password_secret_prefix = \"p/w\"",
            "TASKCLUSTER_ROOT_URL is not set",
        ),
        (
            "base_ami_pattern = \"Nothing-*\"",
            "no available Windows image named `Nothing-*`",
        ),
        ("instance_typo = \"x\"", "unknown key `instance_typo`"),
    ];
    cfg.write("scripts/big.ps1", &"#".repeat(17_000));
    for (extra, want) in cases {
        cfg.worker_type("w", "proj-servo/win2016", extra);
        let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
        run.assert_code(1);
        assert!(run.error_line().contains(want), "{extra}: {}", run.stderr);
        assert_eq!(create_calls(&ec2), 0, "{extra}: created something");
    }
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "nope"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("unknown worker type `nope`"),
        "{}",
        run.stderr
    );
    assert!(
        run.error_line().contains("known worker types: w"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

fn interrupted_at(config: Value, extra: &str, marker: &str, signal: &str, code: i32) {
    let ec2 = Ec2::start(config);
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", extra);
    let run = TcAmi::new(&ec2, None, &cfg).interrupt_at(&["build", "-w", "w"], marker, signal);
    run.assert_code(code);
    assert!(
        run.error_line().contains("interrupted by"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("removing everything this build created"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

#[test]
fn sigint_while_waiting_for_the_instance_to_run() {
    interrupted_at(
        json!({"instance_boot_seconds": 60}),
        "",
        "waiting for the instance to run",
        "INT",
        130,
    );
}

#[test]
fn sigint_while_waiting_for_the_password() {
    interrupted_at(
        json!({"password_delay_seconds": 60}),
        "",
        "waiting for the Windows password",
        "INT",
        130,
    );
}

#[test]
fn sigint_while_waiting_for_the_shutdown() {
    interrupted_at(
        json!({"guest": {"shutdown_after_seconds": 60}}),
        "",
        "waiting for first-boot.ps1",
        "INT",
        130,
    );
}

#[test]
fn sigterm_while_waiting_for_the_shutdown() {
    interrupted_at(
        json!({"guest": {"shutdown_after_seconds": 60}}),
        "",
        "waiting for first-boot.ps1",
        "TERM",
        143,
    );
}

#[test]
fn sigint_while_waiting_for_the_image() {
    interrupted_at(
        json!({"image_pending_seconds": 60}),
        "",
        "waiting for the image to be available",
        "INT",
        130,
    );
}

#[test]
fn sigint_while_copies_are_pending() {
    interrupted_at(
        json!({"copy_pending_seconds": 60}),
        "regions = [\"us-east-1\", \"eu-central-1\"]",
        "copying the image",
        "INT",
        130,
    );
}

/// The sandbox's default failure reason: what first-boot.ps1 throws while its pins lack hashes.
const UNPINNED_REASON: &str = "No SHA-256 pinned for: GenericWorker, StartWorker, Livelog, TcProxy, Nssm, VsBuildTools, Gst, GstDevel.";

#[test]
fn a_guest_that_fails_ends_a_90_minute_build_at_once_with_its_reason_and_steps() {
    let ec2 = Ec2::start(json!({"guest": {"mode": "fail", "fail_after_seconds": 5}}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "build_timeout = \"90m\"");
    let started = std::time::Instant::now();
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    let took = started.elapsed();
    eprintln!("a guest failing 5 s after it runs ended the build in {took:?}");
    assert!(took.as_secs() < 60, "hang guard: {took:?}");
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!(
            "build failed while waiting for first-boot.ps1 to shut the instance down: the guest reported: {UNPINNED_REASON}"
        )),
        "{err}"
    );
    assert!(
        err.contains("(during its step: configuring EC2Launch)"),
        "{err}"
    );
    assert!(err.contains("run `tc-ami pin -w w`"), "{err}");
    // Its steps, as progress lines, the first one too.
    for step in ["checking the pinned downloads", "configuring EC2Launch"] {
        assert!(
            run.stderr.contains(&format!("first-boot.ps1: {step}")),
            "{step}: {}",
            run.stderr
        );
    }
    // The warning came before the launch.
    let warned = run
        .stderr
        .find("tc-ami: warning: ")
        .expect("the unpinned-downloads warning");
    let launched = run
        .stderr
        .find("launching the build instance")
        .expect("launch");
    assert!(warned < launched, "{}", run.stderr);
    assert!(
        run.stderr.contains("has no valid SHA-256 for 8 downloads"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

#[test]
fn the_progress_shows_the_guests_latest_step_within_budget() {
    let ec2 = Ec2::start(json!({"guest": {
        "steps": ["installing Git", "installing Python"],
        "shutdown_after_seconds": 8,
    }}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let started = std::time::Instant::now();
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    let took = started.elapsed();
    run.assert_code(0);
    // Written 4 s after the start of the script, 4 s before its shutdown.
    assert!(
        run.stderr.contains("first-boot.ps1: installing Python"),
        "{}",
        run.stderr
    );
    // One call per poll while waiting: the console and the state take turns.
    let stats = ec2.stats();
    let calls = |a: &str| stats["requests"][a].as_u64().unwrap_or(0);
    let (console, describe) = (calls("GetConsoleOutput"), calls("DescribeInstances"));
    assert!(console >= 2, "{stats}");
    assert!(console <= describe, "{stats}");
    let waiting = console + describe + calls("GetPasswordData") + calls("DescribeImages");
    let per_minute = waiting as f64 * 60.0 / took.as_secs_f64();
    eprintln!(
        "{waiting} polling calls ({console} GetConsoleOutput) in {took:?}: {per_minute:.1} per minute; all EC2 calls: {}",
        stats["total"]
    );
    assert!(per_minute <= 60.0, "{per_minute} calls per minute: {stats}");
    ec2.assert_nothing_left_but_images();
}

#[test]
fn a_timeout_says_how_far_the_guest_got() {
    let ec2 = Ec2::start(json!({"guest": {"mode": "never", "steps": ["installing Git"]}}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "build_timeout = \"5s\"");
    let run = TcAmi::new(&ec2, None, &cfg).run(&["build", "-w", "w"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(err.contains("did not happen within 5s"), "{err}");
    assert!(
        err.contains("its last step on the console (1 seen): installing Git"),
        "{err}"
    );
    ec2.assert_nothing_left();
}

/// Decrypts the instance's password data with the private key file, as `aws ec2
/// get-password-data --priv-launch-key` does.
fn decrypt_with_key_file(ec2: &Ec2, instance_id: &str, key_file: &std::path::Path) -> String {
    let script = r#"
import base64, sys, boto3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
ec2 = boto3.client("ec2", region_name="us-west-2", endpoint_url=sys.argv[1],
                   aws_access_key_id="x", aws_secret_access_key="x")
data = ec2.get_password_data(InstanceId=sys.argv[2])["PasswordData"].strip()
key = serialization.load_pem_private_key(open(sys.argv[3], "rb").read(), password=None)
print(key.decrypt(base64.b64decode(data), padding.PKCS1v15()).decode(), end="")
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, &ec2.server.url, instance_id])
        .arg(key_file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn keep_on_failure_keeps_the_instance_group_and_key_pair_until_cleanup_after_the_ttl() {
    let ec2 = Ec2::start(json!({"guest": {"mode": "fail", "fail_after_seconds": 1}}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    // cleanup's age window (build_timeout + 2 × image_timeout = 17 s) also bounds how long a
    // build's leftovers are kept, whatever their tc-ami:expires-at.
    cfg.worker_type(
        "w",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]\nbuild_timeout = \"15s\"\nimage_timeout = \"1s\"",
    );
    let data = tempfile::tempdir().expect("data dir");
    let started = std::time::Instant::now();
    let run = TcAmi::new(&ec2, Some(&tc), &cfg)
        .env("XDG_DATA_HOME", &data.path().display().to_string())
        .run(&["build", "-w", "w", "--keep-on-failure=5s"]);
    let failed_at = chrono::Utc::now();
    run.assert_code(1);
    let err = run.error_line();
    assert!(err.contains("the guest reported: "), "{err}");
    assert!(err.contains("--keep-on-failure"), "{err}");

    // Exactly the instance (running: the guest gave up and did not shut down), its key pair
    // and its group are left, each tagged with when cleanup may remove them.
    let left = ec2.leftovers(true);
    let instances: Vec<Value> = ec2
        .all("instances")
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i["state"] != "terminated")
        .collect();
    assert_eq!(instances.len(), 1, "{left:#?}");
    let instance = &instances[0];
    assert_eq!(instance["state"], "running");
    let id = instance["id"].as_str().unwrap();
    let keys = ec2.all("key_pairs");
    let groups: Vec<Value> = ec2
        .all("security_groups")
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| g["default"] != true)
        .collect();
    assert_eq!((keys.len(), groups.len()), (1, 1), "{left:#?}");
    let volume = instance["volume_ids"][0].as_str().unwrap();
    assert_eq!(
        left.len(),
        4,
        "the instance, its root volume, key pair and group: {left:#?}"
    );
    assert!(left.iter().any(|l| l.contains(volume)), "{left:#?}");
    let expires = tag(instance, "tc-ami:expires-at").to_string();
    let expires_at = chrono::DateTime::parse_from_rfc3339(&expires).expect("RFC 3339");
    let ttl = (expires_at.with_timezone(&chrono::Utc) - failed_at).num_seconds();
    assert!(
        (3..=5).contains(&ttl),
        "expires {expires}, failed {failed_at}"
    );
    assert!(expires.ends_with('Z'), "{expires}");
    assert_eq!(
        tag(&keys[0].1, "tc-ami:expires-at"),
        expires,
        "{:?}",
        keys[0]
    );
    assert_eq!(
        tag(&groups[0], "tc-ami:expires-at"),
        expires,
        "{}",
        groups[0]
    );

    // What was printed: the instance, the region, where the private key is and how to get the
    // password with it, never the password or the key.
    let key_name = keys[0].1["name"].as_str().unwrap();
    let key_file = data.path().join(format!("tc-ami/kept/{key_name}.pem"));
    for want in [
        format!("instance {id} in us-west-2 (running, "),
        format!("the key pair's private key: {}", key_file.display()),
        format!(
            "aws ec2 get-password-data --region us-west-2 --instance-id {id} --priv-launch-key {}",
            key_file.display()
        ),
        format!("until {expires}"),
        "tc-ami cleanup -w w".to_string(),
    ] {
        assert!(run.stderr.contains(&want), "{want}: {}", run.stderr);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.contains("PRIVATE KEY"), "a PEM key");
    let password = guest_password(&ec2);
    assert_eq!(decrypt_with_key_file(&ec2, id, &key_file), password);
    run.assert_hides(&password)
        .assert_hides(pem.lines().nth(1).unwrap());

    // Before the TTL, cleanup keeps them; after it, removes them.
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--dry-run"]);
    run.assert_code(0);
    let plan = run.json()["plan"].as_array().cloned().unwrap_or_default();
    assert_eq!(plan.len(), 3, "{plan:#?}");
    assert!(plan.iter().all(|i| i["action"] == "keep"), "{plan:#?}");
    std::thread::sleep(std::time::Duration::from_secs(18).saturating_sub(started.elapsed()));
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    let s = &doc["summary"];
    assert_eq!(
        (&s["instances"], &s["security_groups"], &s["key_pairs"]),
        (&json!(1), &json!(1), &json!(1)),
        "{doc:#}"
    );
    ec2.assert_nothing_left();
}

#[test]
fn keep_on_failure_after_the_stop_keeps_the_stopped_instance_and_removes_the_image() {
    let ec2 = Ec2::start(json!({"image_fail": true}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let data = tempfile::tempdir().expect("data dir");
    let run = TcAmi::new(&ec2, None, &cfg)
        .env("XDG_DATA_HOME", &data.path().display().to_string())
        .run(&["build", "-w", "w", "--keep-on-failure"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("build failed while waiting for the image to be available"),
        "{err}"
    );
    assert!(err.contains("kept instance i-"), "{err}");
    assert!(run.stderr.contains("(stopped, "), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("aws ec2 start-instances --region us-west-2"),
        "{}",
        run.stderr
    );
    // The image and its snapshot went; the default TTL is 4 hours.
    let left = ec2.leftovers(true);
    assert!(
        !left
            .iter()
            .any(|l| l.contains("image") || l.contains("snapshot")),
        "{left:#?}"
    );
    let (_, instance) = &ec2.all("instances")[0];
    assert_eq!(instance["state"], "stopped");
    let expires = chrono::DateTime::parse_from_rfc3339(tag(instance, "tc-ami:expires-at"))
        .expect("expires-at");
    let ttl = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((235..=240).contains(&ttl), "{expires}");
}

#[test]
fn keep_on_failure_keeps_nothing_after_ctrl_c() {
    let ec2 = Ec2::start(json!({"guest": {"shutdown_after_seconds": 60}}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    let run = TcAmi::new(&ec2, None, &cfg).interrupt_at(
        &["build", "-w", "w", "--keep-on-failure=1h"],
        "waiting for first-boot.ps1",
        "INT",
    );
    run.assert_code(130);
    assert!(
        run.stderr
            .contains("(--keep-on-failure keeps nothing after an interrupt)"),
        "{}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

#[test]
fn keep_on_failure_needs_a_build_and_a_sensible_ttl() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", "proj-servo/win2016", "");
    for (args, want) in [
        (
            &[
                "deploy",
                "-w",
                "w",
                "--image",
                "ami-0123",
                "--keep-on-failure",
            ][..],
            "cannot be used with",
        ),
        (
            &["build", "-w", "w", "--keep-on-failure=0s"][..],
            "keep nothing",
        ),
        (
            &["build", "-w", "w", "--keep-on-failure=8d"][..],
            "at most 7d",
        ),
        (
            &["build", "-w", "w", "--keep-on-failure=4"][..],
            "has no unit",
        ),
    ] {
        let run = TcAmi::new(&ec2, None, &cfg).run(args);
        run.assert_code(1);
        assert!(run.error_line().contains(want), "{args:?}: {}", run.stderr);
    }
    assert_eq!(ec2.stats()["total"], 0);
}
