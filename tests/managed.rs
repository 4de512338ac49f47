//! Pools managed as code: a pool whose description carries tc-admin's `*DO NOT EDIT*` prefix,
//! and a file shaped like Servo's taskcluster-config `config/worker-pools.yml` that declares
//! its image ids. Against moto, the guest simulator and the worker-manager emulator.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::*;

/// tc-admin's default description prefix (taskcluster/tc-admin `tcadmin/appconfig.py`).
const TC_ADMIN_PREFIX: &str = "*DO NOT EDIT* - This resource is configured automatically.\n\n";

/// The sandbox seed's live images of proj-servo/win2016 and proj-servo/win2016-staging.
const OLD_WEST: &str = "ami-00000000000a2016a";
const OLD_EAST: &str = "ami-00000000000e2016a";
const STAGING_WEST: &str = "ami-00000000000a2016b";

/// Shaped like servo/taskcluster-config `config/worker-pools.yml` (commit c7462667), with the
/// sandbox's image ids.
const WORKER_POOLS_YML: &str = "\
win2016-staging:
    kind: aws_windows
    min_capacity: 0
    max_capacity: 2
    regions:
        us-west-2: ami-00000000000a2016b
        us-east-1: ami-00000000000e2016b
    capacity_per_instance_type:
        c5.xlarge: 1

win2016:
    kind: aws_windows
    min_capacity: 1
    max_capacity: 10
    regions:
        us-west-2: ami-00000000000a2016a
        us-east-1: ami-00000000000e2016a
    capacity_per_instance_type:
        c5.xlarge: 1

# These are managed in
# https://github.com/mozilla/community-tc-config/blob/master/config/projects.yml
docker:
    kind: externally-managed
docker-untrusted:
    kind: externally-managed
";

const FILE: &str = "config/worker-pools.yml";

/// The sandbox's pools, proj-servo/win2016 managed by tc-admin.
fn managed_world() -> World {
    let mut pools = seed_pools();
    for pool in pools.as_array_mut().expect("pools") {
        if pool["workerPoolId"] == POOL {
            let description = pool["description"].as_str().unwrap_or_default().to_string();
            pool["description"] = json!(format!("{TC_ADMIN_PREFIX}{description}"));
        }
    }
    let w = World::with_tc(Tc::start(pools));
    w.cfg.write(FILE, WORKER_POOLS_YML);
    w
}

fn file_path(w: &World) -> PathBuf {
    w.cfg.path().join(FILE)
}

fn file_text(w: &World) -> String {
    std::fs::read_to_string(file_path(w)).expect("read the file")
}

/// The build's images: (us-west-2, us-east-1).
fn build(w: &World) -> (String, String) {
    let images = w.build();
    let id = |r: &str| images[r].as_str().expect("image").to_string();
    (id("us-west-2"), id("us-east-1"))
}

fn live_images(w: &World) -> Vec<String> {
    let (active, _) = w.pool();
    active.iter().map(|lc| image_of(lc).to_string()).collect()
}

fn expected_file(west: &str, east: &str) -> String {
    WORKER_POOLS_YML
        .replace(OLD_WEST, west)
        .replace(OLD_EAST, east)
}

#[test]
fn deploy_refuses_a_managed_pool_without_update_file_or_managed_ok() {
    let w = managed_world();
    let (west, _) = build(&w);
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.starts_with("tc-ami: error: refusing to deploy: worker pool proj-servo/win2016 is managed by tc-admin (its description starts with `*DO NOT EDIT*`): its next `tc-admin apply` puts back the image ids its configuration declares; pass --update-file PATH"),
        "{err}"
    );
    assert!(err.contains("--managed-ok to deploy anyway"), "{err}");
    assert_eq!(w.updates(), 0);
    assert!(
        live_images(&w)
            .iter()
            .all(|i| i == OLD_WEST || i == OLD_EAST)
    );

    // Refused before building: no instance is launched.
    let launched = || {
        w.ec2.stats()["requests"]["RunInstances"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = launched();
    let run = w.tc_ami().run(&["deploy", "-w", "w", "--yes"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("refusing to deploy"),
        "{}",
        run.stderr
    );
    assert_eq!(launched(), before, "nothing built");

    // A dry run is not refused: it warns, and pushes nothing.
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(
            "`tc-ami deploy` refuses it without --update-file PATH, config_files or --managed-ok"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(w.updates(), 0);
    assert_eq!(file_text(&w), WORKER_POOLS_YML);
}

#[test]
fn managed_ok_deploys_and_leaves_the_files_alone() {
    let w = managed_world();
    let (west, east) = build(&w);
    let run = w.tc_ami().run(&[
        "--json",
        "deploy",
        "-w",
        "w",
        "--image",
        &west,
        "--yes",
        "--managed-ok",
    ]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("tc-ami: warning: worker pool proj-servo/win2016 is managed by tc-admin"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no file is updated (--managed-ok)"),
        "{}",
        run.stderr
    );
    let doc = run.json();
    assert_eq!(doc["pushed"], true);
    assert_eq!(doc["managed"], true);
    assert!(doc.get("files").is_none());
    let mut live = live_images(&w);
    live.sort();
    live.dedup();
    let mut want = vec![west, east];
    want.sort();
    assert_eq!(live, want);
    assert_eq!(file_text(&w), WORKER_POOLS_YML);
}

#[test]
fn diff_warns_and_shows_the_file_change_after_the_pool_diff() {
    let w = managed_world();
    let (west, east) = build(&w);
    let path = file_path(&w);
    let p = path.display().to_string();
    let run = w
        .tc_ami()
        .run(&["diff", "-w", "w", "--image", &west, "--update-file", &p]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(&format!("tc-ami: warning: worker pool proj-servo/win2016 is managed by tc-admin (its description starts with `*DO NOT EDIT*`): its next `tc-admin apply` puts back the image ids its configuration declares; updating {p}")),
        "{}",
        run.stderr
    );
    let pool_diff = run
        .stdout
        .find("+++ b/proj-servo/win2016 (to push)")
        .expect("pool diff");
    let file_diff = run
        .stdout
        .find(&format!("--- a/{p}\n+++ b/{p}\n"))
        .expect("file diff");
    assert!(
        pool_diff < file_diff,
        "the file's change comes after the pool's"
    );
    let file_part = &run.stdout[file_diff..];
    for line in [
        format!("-        us-west-2: {OLD_WEST}"),
        format!("+        us-west-2: {west}"),
        format!("-        us-east-1: {OLD_EAST}"),
        format!("+        us-east-1: {east}"),
    ] {
        assert!(
            file_part.contains(&format!("\n{line}\n")),
            "{line}: {file_part}"
        );
    }
    assert!(!file_part.contains(&format!("-        us-west-2: {STAGING_WEST}")));
    assert_eq!(file_text(&w), WORKER_POOLS_YML, "diff writes nothing");

    let run = w.tc_ami().run(&[
        "--json",
        "diff",
        "-w",
        "w",
        "--image",
        &west,
        "--update-file",
        &p,
    ]);
    run.assert_code(2);
    let doc = run.json();
    assert_eq!(doc["managed"], true);
    assert_eq!(
        doc["files"],
        json!([{"path": p, "written": false, "changes": [
            {"line": 16, "old": OLD_WEST, "new": west},
            {"line": 17, "old": OLD_EAST, "new": east},
        ]}])
    );
    // The staging pool is not managed: no warning.
    w.cfg.worker_type(
        "staging",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let run = w.tc_ami().run(&["diff", "-w", "staging", "--image", &west]);
    run.assert_code(2);
    assert!(!run.stderr.contains("tc-admin"), "{}", run.stderr);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn update_file_replaces_exactly_the_old_ids_once_the_push_is_verified() {
    use std::os::unix::fs::PermissionsExt;
    let w = managed_world();
    let (west, east) = build(&w);
    let path = file_path(&w);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let p = path.display().to_string();
    let run = w.tc_ami().run(&[
        "--json",
        "deploy",
        "-w",
        "w",
        "--image",
        &west,
        "--yes",
        "--update-file",
        &p,
    ]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["pushed"], true);
    assert_eq!(doc["files"][0]["written"], true);
    assert_eq!(doc["files"][0]["changes"].as_array().map(Vec::len), Some(2));
    // Byte for byte: the two ids of win2016 and nothing else (staging keeps its own).
    assert_eq!(file_text(&w), expected_file(&west, &east));
    assert_eq!(mode(&path), 0o640, "permissions kept");
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file: {leftovers:?}");
    assert!(
        run.stderr
            .contains(&format!("updated {p}: 2 image id(s) replaced")),
        "{}",
        run.stderr
    );
    assert!(live_images(&w).contains(&west));
}

#[test]
fn config_files_make_it_the_default() {
    let w = managed_world();
    w.cfg.worker_type(
        "w",
        POOL,
        &format!("regions = [\"us-east-1\"]\nconfig_files = [\"{FILE}\"]"),
    );
    let (west, east) = build(&w);
    // diff shows the file's change by default too.
    let run = w.tc_ami().run(&["diff", "-w", "w", "--image", &west]);
    run.assert_code(2);
    assert!(
        run.stdout.contains(&format!("+        us-east-1: {east}")),
        "{}",
        run.stdout
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(0);
    assert_eq!(file_text(&w), expected_file(&west, &east));
    // Now up to date: nothing more to change in the pool or the file.
    let run = w.tc_ami().run(&["diff", "-w", "w", "--image", &west]);
    run.assert_code(0);
    assert_eq!(file_text(&w), expected_file(&west, &east));
    // An unreadable file stops a deploy before anything happens.
    std::fs::remove_file(file_path(&w)).expect("rm");
    let updates = w.updates();
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains(&format!("cannot read {}", file_path(&w).display())),
        "{err}"
    );
    assert!(err.contains("(config_files in "), "{err}");
    assert_eq!(w.updates(), updates);
}

#[test]
fn a_push_that_fails_leaves_the_file_unchanged() {
    let w = managed_world();
    let (west, _) = build(&w);
    let p = file_path(&w).display().to_string();
    let deploy = |w: &World| {
        w.tc_ami().run(&[
            "deploy",
            "-w",
            "w",
            "--image",
            &west,
            "--yes",
            "--update-file",
            &p,
        ])
    };
    // Someone else changes the pool between the review and the push.
    w.tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 1, "patch": {"owner": "someone-else@example.com"}}),
    );
    let run = deploy(&w);
    run.assert_code(1);
    assert!(
        run.error_line().contains("nothing was pushed"),
        "{}",
        run.stderr
    );
    assert_eq!(file_text(&w), WORKER_POOLS_YML);
    assert_eq!(w.updates(), 0);

    // The update itself fails (500s beyond the client's retries).
    w.tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 500, "count": 20, "match": {"method": "POST", "path_contains": "/worker-pool/proj-servo"}}}),
    );
    let run = deploy(&w);
    run.assert_code(1);
    assert!(run.error_line().contains("500"), "{}", run.stderr);
    assert_eq!(file_text(&w), WORKER_POOLS_YML);
    assert!(
        w.tc.requests()
            .iter()
            .any(|r| r["apiMethod"] == "updateWorkerPool" && r["status"] == 500),
        "the push was tried"
    );
}

#[test]
fn a_file_without_the_old_ids_is_a_warning_not_an_error() {
    let w = managed_world();
    let (west, east) = build(&w);
    let other = "other-pools.yml";
    let other_text = "win2019:\n    regions:\n        us-west-2: ami-0123456789abcdef0\n";
    w.cfg.write(other, other_text);
    let o = w.cfg.path().join(other).display().to_string();
    let p = file_path(&w).display().to_string();
    let run = w.tc_ami().run(&[
        "--json",
        "deploy",
        "-w",
        "w",
        "--image",
        &west,
        "--yes",
        "--update-file",
        &o,
        "--update-file",
        &p,
    ]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "tc-ami: warning: {o} holds none of the old image ids ({OLD_WEST}, {OLD_EAST}); it is left as it is"
        )),
        "{}",
        run.stderr
    );
    let doc = run.json();
    let files: Vec<(Value, Value)> = doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f["path"].clone(), f["written"].clone()))
        .collect();
    assert_eq!(
        files,
        vec![(json!(o), json!(false)), (json!(p), json!(true))]
    );
    assert_eq!(
        std::fs::read_to_string(w.cfg.path().join(other)).expect("read"),
        other_text
    );
    assert_eq!(file_text(&w), expected_file(&west, &east));
}
