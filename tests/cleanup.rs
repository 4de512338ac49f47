//! `cleanup` against moto, the guest simulator and the Taskcluster emulator: what it keeps
//! (live, rollback target, the N newest, young), what it removes (everywhere, with every
//! snapshot), leftovers of a killed build, refusal without a terminal, and 1,000 images.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// region → our images (not seed ones) → their snapshot ids, as moto holds them.
fn images(ec2: &Ec2) -> BTreeMap<(String, String), Vec<String>> {
    ec2.all("images")
        .into_iter()
        .filter(|(_, i)| i["seeded"] != true)
        .map(|(r, i)| {
            let snaps = i["snapshot_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            ((r, i["id"].as_str().unwrap().to_string()), snaps)
        })
        .collect()
}

/// Every snapshot that is not a seed image's: (region, id).
fn snapshots(ec2: &Ec2) -> BTreeSet<(String, String)> {
    ec2.all("snapshots")
        .into_iter()
        .filter(|(_, s)| s["seeded"] != true)
        .map(|(r, s)| (r, s["id"].as_str().unwrap().to_string()))
        .collect()
}

/// The snapshots of these images.
fn snapshots_of(all: &BTreeMap<(String, String), Vec<String>>) -> BTreeSet<(String, String)> {
    all.iter()
        .flat_map(|((r, _), snaps)| snaps.iter().map(|s| (r.clone(), s.clone())))
        .collect()
}

/// The plan item for `id` in a `--json` document.
fn item<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the plan: {doc:#}"))
}

fn reasons(item: &Value) -> Vec<&str> {
    item["why"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["reason"].as_str().unwrap())
        .collect()
}

fn id(images: &Value, region: &str) -> String {
    images[region].as_str().unwrap().to_string()
}

#[test]
fn cleanup_keeps_live_rollback_target_and_newest_and_removes_the_rest_everywhere() {
    let w = World::new();
    // Builds as quick as the sandbox makes them (every transition at once).
    w.ec2.configure(json!({
        "instance_boot_seconds": 0, "password_delay_seconds": 0,
        "guest": {"shutdown_after_seconds": 0}, "image_pending_seconds": 0,
        "copy_pending_seconds": 0, "instance_stop_seconds": 0, "instance_terminate_seconds": 0,
    }));
    // A short build timeout: what is older than 20s + 2 × 1s belongs to no build in progress.
    // Long enough that builds 1 to 4 (several seconds each) are still young when build 0 is
    // not, whatever the machine's load.
    let window = Duration::from_secs(22);
    w.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\nbuild_timeout = \"20s\"\nimage_timeout = \"1s\"",
    );
    let mut built = Vec::new();
    let mut done: Vec<Instant> = Vec::new();
    for _ in 0..5 {
        if let Some(last) = done.last() {
            // Creation dates have whole seconds: one build per second orders them.
            std::thread::sleep(Duration::from_millis(1100).saturating_sub(last.elapsed()));
        }
        built.push(w.build());
        done.push(Instant::now());
    }
    let deploy = |images: &Value| {
        w.tc_ami()
            .run(&[
                "deploy",
                "-w",
                "w",
                "--image",
                &id(images, "us-west-2"),
                "--yes",
            ])
            .assert_code(0);
    };
    // Live: build 2; rollback target: build 1. Build 4 is the newest; 0 and 3 are neither.
    deploy(&built[1]);
    deploy(&built[2]);
    let before = images(&w.ec2);
    assert_eq!(before.len(), 10);

    // Dry run: the plan, nothing changed. Build 0 is older than the window by now.
    std::thread::sleep((window + Duration::from_secs(1)).saturating_sub(done[0].elapsed()));
    let run = w
        .tc_ami()
        .run(&["--json", "cleanup", "--keep", "1", "--dry-run"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["dry_run"], true);
    for region in ["us-west-2", "us-east-1"] {
        let old = item(&doc, &id(&built[0], region));
        assert_eq!(old["action"], "delete", "{old}");
        assert_eq!(old["region"], region);
        assert_eq!(old["snapshot_ids"].as_array().unwrap().len(), 1);
        // (Builds 2 to 4 may still be young enough to be kept for that reason too.)
        assert!(reasons(item(&doc, &id(&built[1], region))).contains(&"rollback-target"));
        assert!(reasons(item(&doc, &id(&built[2], region))).contains(&"live"));
        assert!(reasons(item(&doc, &id(&built[4], region))).contains(&"newest"));
    }
    assert!(run.stderr.contains("REGION"), "the table: {}", run.stderr);
    assert!(run.stderr.contains("dry run: nothing deleted"));
    assert_eq!(images(&w.ec2), before);

    // No terminal and no --yes: refused, nothing changed.
    let run = w.tc_ami().run(&["cleanup", "--keep", "1"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("refusing to delete 2 images"),
        "{}",
        run.stderr
    );
    assert!(run.error_line().contains("pass --yes"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&id(&built[0], "us-east-1")),
        "the plan is shown first: {}",
        run.stdout
    );
    assert_eq!(images(&w.ec2), before);

    // Once build 3 is older than the window, it goes too.
    std::thread::sleep((window + Duration::from_secs(1)).saturating_sub(done[3].elapsed()));
    let run = w
        .tc_ami()
        .run(&["--json", "cleanup", "--keep", "1", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["summary"]["images_deleted"], 4);
    let kept: BTreeSet<(String, String)> = [1, 2, 4]
        .iter()
        .flat_map(|&b| ["us-west-2", "us-east-1"].map(|r| (r.to_string(), id(&built[b], r))))
        .collect();
    let after = images(&w.ec2);
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), kept);
    // Every snapshot of the deleted images is gone, those of the kept ones are there.
    assert_eq!(snapshots(&w.ec2), snapshots_of(&after));
    for b in [0, 3] {
        for r in ["us-west-2", "us-east-1"] {
            assert_eq!(item(&doc, &id(&built[b], r))["result"], "deleted");
        }
    }
    w.ec2.assert_nothing_left_but_images();

    // Again: nothing to do.
    let run = w.tc_ami().run(&["cleanup", "--keep", "1", "--yes"]);
    run.assert_code(0);
    assert!(run.stderr.contains("nothing to delete"), "{}", run.stderr);
}

#[test]
fn a_killed_build_leaves_resources_that_cleanup_removes() {
    // The image stays pending, so the build is killed while waiting for it: instance, key
    // pair, security group and a pending image with its snapshot are left.
    let ec2 = Ec2::start(json!({"image_pending_seconds": 120}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    let window = Duration::from_secs(11); // 5s + 2 × 3s
    cfg.worker_type(
        "k",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]\nbuild_timeout = \"5s\"\nimage_timeout = \"3s\"",
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).interrupt_at(
        &["build", "-w", "k"],
        "waiting for the image to be available",
        "KILL",
    );
    let killed = Instant::now();
    assert_eq!(run.code, -1, "killed: {}", run.stderr);
    let left = ec2.leftovers(true);
    for what in [
        "instance",
        "key pair",
        "security group",
        "image",
        "snapshot",
    ] {
        assert!(
            left.iter().any(|l| l.contains(what)),
            "{what} left: {left:#?}"
        );
    }

    // Right away, they may belong to a build in progress: kept.
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--dry-run"]);
    run.assert_code(0);
    let doc = run.json();
    let plan = doc["plan"].as_array().unwrap();
    let kinds: BTreeSet<&str> = plan.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["image", "instance", "key-pair", "security-group"]),
        "{doc:#}"
    );
    for i in plan {
        assert_eq!(i["action"], "keep", "{i}");
        assert_eq!(reasons(i), ["may-be-in-progress"], "{i}");
    }
    assert!(
        run.stderr.contains("may belong to a build in progress"),
        "{}",
        run.stderr
    );

    // Later, the build is surely over: everything goes, the instance terminated first.
    std::thread::sleep((window + Duration::from_secs(1)).saturating_sub(killed.elapsed()));
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    let s = &doc["summary"];
    assert_eq!(
        (
            &s["images_deleted"],
            &s["instances"],
            &s["security_groups"],
            &s["key_pairs"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{doc:#}"
    );
    assert!(
        doc["plan"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["result"] == "deleted"),
        "{doc:#}"
    );
    ec2.assert_nothing_left();
}

/// The sandbox's pool for `w`, with a third region.
fn three_region_pools() -> Value {
    let mut pools = seed_pools();
    let pool = pools
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["workerPoolId"] == POOL)
        .unwrap();
    let lcs = pool["config"]["launchConfigs"].as_array_mut().unwrap();
    let mut eu = lcs
        .iter()
        .find(|lc| lc["region"] == "us-east-1")
        .unwrap()
        .clone();
    eu["region"] = json!("eu-central-1");
    lcs.push(eu);
    pools
}

/// Registers `count` images of worker type `wt` in `region`, a day apart from 2020-01-01, two
/// snapshots each; returns their ids, oldest first.
fn seed(ec2: &Ec2, region: &str, count: usize, wt: Option<&str>) -> Vec<String> {
    let tags = match wt {
        Some(wt) => json!({"tc-ami:worker-type": wt, "tc-ami:build-id": "b{n}"}),
        None => json!({"Name": "not made by tc-ami"}),
    };
    let out = ec2.server.post(
        "/_sandbox/seed-owned-images",
        json!({
            "region": region,
            "count": count,
            "name_prefix": format!("tc-ami-{}-", wt.unwrap_or("none")),
            "tags": tags,
            "creation_date": "2020-01-01T00:00:00Z",
            "step_seconds": 86400,
            "snapshots_per_image": 2,
        }),
    );
    out["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_thousand_images_over_three_regions() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(three_region_pools());
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "regions = [\"us-east-1\", \"eu-central-1\"]");
    cfg.worker_type(
        "staging",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let regions = ["us-west-2", "us-east-1", "eu-central-1"];
    let mut ours: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (region, n) in regions.iter().zip([334, 333, 333]) {
        ours.insert(region, seed(&ec2, region, n, Some("w")));
    }
    // Another worker type's images, and images tc-ami did not make: never touched by `-w w`.
    let untouched: BTreeSet<String> = seed(&ec2, "us-west-2", 20, Some("staging"))
        .into_iter()
        .chain(seed(&ec2, "us-east-1", 10, None))
        .collect();

    // Deploy image 100 of each region, then image 200: 100 is the rollback target.
    let tc_ami = || TcAmi::new(&ec2, Some(&tc), &cfg);
    for n in [100, 200] {
        let mut args = vec![
            "deploy".to_string(),
            "-w".into(),
            "w".into(),
            "--yes".into(),
        ];
        for r in regions {
            args.extend(["--image".into(), format!("{r}={}", ours[r][n])]);
        }
        tc_ami()
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .assert_code(0);
    }
    let keep: BTreeSet<(String, String)> = regions
        .iter()
        .flat_map(|r| {
            let ids = &ours[r];
            [100, 200, ids.len() - 1, ids.len() - 2, ids.len() - 3]
                .map(|n| (r.to_string(), ids[n].clone()))
        })
        .collect();

    // The first DeregisterImage is refused (a missing permission): that image is reported,
    // the others are all deleted, and the exit code says it was not all done.
    ec2.configure(
        json!({"faults": {"next": 1, "actions": ["DeregisterImage"], "kinds": ["denied"]}}),
    );
    let run = tc_ami().run(&["--json", "cleanup", "-w", "w", "--yes"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["summary"]["images_deleted"], 1000 - 15);
    assert_eq!(doc["summary"]["image_snapshots_deleted"], 2 * (1000 - 15));
    let failed: Vec<&Value> = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["result"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:#?}", failed);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("UnauthorizedOperation"),
        "{}",
        failed[0]
    );
    assert!(
        run.error_line().contains(&format!(
            "cleanup incomplete: 1 of {} deletions failed",
            1000 - 15
        )),
        "{}",
        run.stderr
    );
    assert_eq!(images(&ec2).len(), 15 + 1 + untouched.len());

    // Run again: the rest goes; exactly live, rollback target and the 3 newest remain, with
    // their snapshots, and the others' images.
    let run = tc_ami().run(&["--json", "cleanup", "-w", "w", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["summary"]["images_deleted"], 1);
    let after = images(&ec2);
    let remaining: BTreeSet<(String, String)> = after.keys().cloned().collect();
    let expected: BTreeSet<(String, String)> = keep
        .iter()
        .cloned()
        .chain(untouched.iter().map(|i| {
            let region = after
                .keys()
                .find(|(_, id)| id == i)
                .map(|(r, _)| r.clone())
                .unwrap_or_default();
            (region, i.clone())
        }))
        .collect();
    assert_eq!(remaining, expected);
    assert_eq!(snapshots(&ec2), snapshots_of(&after));
    assert_eq!(snapshots(&ec2).len(), 2 * (15 + untouched.len()));
}
