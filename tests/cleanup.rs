//! `cleanup` against moto, the guest simulator and the Taskcluster emulator: what it keeps
//! (every launch config's image, pools no worker type describes, rollback targets, the newest
//! deployments, the N newest, builds in progress by their `tc-ami:expires-at`), what it removes
//! (everywhere, with every snapshot and the password secrets), leftovers of a killed or kept
//! build, a pool changed between the plan and the deletion (also at the prompt, through a pty),
//! Taskcluster outages (nothing deleted), refusal without a terminal, and 1,000 images.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Where the worker type `w` stores its administrator passwords: in the project's namespace,
/// where the operator (a Servo project administrator) may write and remove secrets.
const SECRET_PREFIX: &str = "project/servo/windows-administrator/w";

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

    // Every resource of the build carries the end of its build: its start + 5s + 2 × 3s.
    let state = ec2.state();
    let west = &state["regions"]["us-west-2"];
    let mut tagged = Vec::new();
    for kind in [
        "instances",
        "key_pairs",
        "security_groups",
        "images",
        "snapshots",
        "volumes",
    ] {
        for r in west[kind].as_array().unwrap() {
            if r["seeded"] == true || r["default"] == true || r["tags"]["tc-ami:build-id"].is_null()
            {
                continue;
            }
            let created = parse_time(r["tags"]["tc-ami:created-at"].as_str().unwrap());
            let expires = parse_time(
                r["tags"]["tc-ami:expires-at"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{kind} without tc-ami:expires-at: {r}")),
            );
            assert_eq!(
                expires - created,
                chrono::Duration::seconds(11),
                "{kind}: {r}"
            );
            tagged.push(kind);
        }
    }
    // (The image's snapshots get the image's tags once it is available: not yet.)
    for kind in [
        "instances",
        "key_pairs",
        "security_groups",
        "images",
        "volumes",
    ] {
        assert!(tagged.contains(&kind), "no {kind} tagged: {tagged:?}");
    }

    // Later, the build is surely over. But say it was kept after its failure
    // (`--keep-on-failure`): its instance, group and key pair carry a later expires-at, and stay.
    std::thread::sleep((window + Duration::from_secs(1)).saturating_sub(killed.elapsed()));
    let kept: Vec<String> = ["instances", "security_groups", "key_pairs"]
        .iter()
        .flat_map(|kind| {
            west[*kind]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["default"] != true && !r["tags"]["tc-ami:build-id"].is_null())
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    create_tags(&ec2, "us-west-2", &kept, "tc-ami:expires-at", &later);
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--dry-run"]);
    run.assert_code(0);
    let doc = run.json();
    for id in &kept {
        let i = item(&doc, id);
        assert_eq!(i["action"], "keep", "{i}");
        assert_eq!(
            parse_time(i["why"][0]["until"].as_str().unwrap()),
            parse_time(&later),
            "{i}"
        );
        assert!(i["why"][0].get("window_seconds").is_none(), "{i}");
    }
    assert_eq!(doc["summary"]["images_deleted"], 1, "{doc:#}");

    // Once that time has passed, everything goes, the instance terminated first.
    let earlier = (chrono::Utc::now() - chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    create_tags(&ec2, "us-west-2", &kept, "tc-ami:expires-at", &earlier);
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
    assert!(
        run.stderr
            .contains(&format!("its tc-ami:expires-at {earlier} has passed")),
        "the table: {}",
        run.stderr
    );
    ec2.assert_nothing_left();
}

fn parse_time(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Tags resources behind tc-ami's back, as another tool would (boto3).
fn create_tags(ec2: &Ec2, region: &str, ids: &[String], key: &str, value: &str) {
    let status = std::process::Command::new(python())
        .args(["-c", "import boto3, sys; boto3.client('ec2', region_name=sys.argv[2], endpoint_url=sys.argv[1], aws_access_key_id='x', aws_secret_access_key='x').create_tags(Resources=sys.argv[5:], Tags=[{'Key': sys.argv[3], 'Value': sys.argv[4]}])"])
        .args([&ec2.server.url, region, key, value])
        .args(ids)
        .status()
        .expect("run boto3");
    assert!(status.success(), "create_tags {ids:?}");
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

/// The ids of our images (not seed ones) that moto holds, in every region.
fn image_ids(ec2: &Ec2) -> BTreeSet<String> {
    images(ec2).into_keys().map(|(_, id)| id).collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `pool`'s launch configs, every ImageId set by region (`images`).
fn pools_running(images: &[(&str, &str)]) -> Value {
    let mut pools = seed_pools();
    let pool = pools
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["workerPoolId"] == POOL)
        .unwrap();
    for lc in pool["config"]["launchConfigs"].as_array_mut().unwrap() {
        let region = lc["region"].as_str().unwrap().to_string();
        if let Some((_, image)) = images.iter().find(|(r, _)| *r == region) {
            lc["launchConfig"]["ImageId"] = json!(image);
        }
    }
    pools
}

/// A pool no worker type describes, with one launch config in us-west-2 on `image`.
fn other_pool(pool_id: &str, image: &str) -> Value {
    json!({
        "workerPoolId": pool_id, "providerId": "aws", "description": "not in worker-types/",
        "owner": "someone@example.invalid", "emailOnError": false,
        "config": {"minCapacity": 0, "maxCapacity": 1, "launchConfigs": [
            {"region": "us-west-2", "launchConfig": {"ImageId": image}}
        ]}
    })
}

fn deleted_ids(doc: &Value) -> BTreeSet<String> {
    doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "delete")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_canary_launch_config_on_another_image_is_kept() {
    // Production runs build 2 everywhere, plus a canary launch config in us-west-2 on build 3:
    // `cleanup --keep 0` used to count only the first launch config of each region.
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
    let west = seed(&ec2, "us-west-2", 4, Some("w"));
    let east = seed(&ec2, "us-east-1", 4, Some("w"));
    let mut pools = pools_running(&[("us-west-2", &west[2]), ("us-east-1", &east[2])]);
    let pool = pools
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["workerPoolId"] == POOL)
        .unwrap();
    let lcs = pool["config"]["launchConfigs"].as_array_mut().unwrap();
    let mut canary = lcs
        .iter()
        .find(|lc| lc["region"] == "us-west-2")
        .unwrap()
        .clone();
    canary["launchConfig"]["ImageId"] = json!(west[3]);
    canary.as_object_mut().unwrap().remove("workerManager");
    // Last, so that it is not the region's first launch config.
    lcs.push(canary);
    let tc = Tc::start(pools);

    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--keep", "0", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(reasons(item(&doc, &west[3])), ["live"], "{doc:#}");
    assert_eq!(item(&doc, &west[3])["why"][0]["pool"], POOL);
    assert_eq!(
        doc["pools"][0]["live"]["us-west-2"],
        json!([&west[2], &west[3]].into_iter().collect::<BTreeSet<_>>()),
        "{doc:#}"
    );
    assert_eq!(
        image_ids(&ec2),
        set(&[&west[2], &west[3], &east[2]]),
        "only the images the pool launches are left"
    );
}

#[test]
fn pools_no_worker_type_describes_are_listed_and_their_images_kept() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "");
    let west = seed(&ec2, "us-west-2", 3, Some("w"));
    // A thousand other pools first, so that the one running a tc-ami image is on the second
    // page of listWorkerPools (its continuation request is signed with its query string).
    let mut pools = seed_pools();
    let list = pools.as_array_mut().unwrap();
    for n in 0..1000 {
        list.push(other_pool(
            &format!("proj-filler/p{n:04}"),
            &format!("ami-{n:017}"),
        ));
    }
    list.push(other_pool("zz-other/canary", &west[1]));
    let tc = Tc::start(pools);

    let run =
        TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--keep", "0", "--dry-run"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(
        item(&doc, &west[1])["why"],
        json!([{"reason": "live", "pool": "zz-other/canary"}]),
        "{doc:#}"
    );
    assert_eq!(deleted_ids(&doc), set(&[&west[0], &west[2]]));
    let listed: Vec<&Value> = doc["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["worker_types"] == json!([]))
        .collect();
    assert_eq!(
        listed.len(),
        1,
        "only the pool running a candidate: {doc:#}"
    );
    assert_eq!(listed[0]["workerPoolId"], "zz-other/canary");
    // The second page was asked for, with a continuation token, and accepted.
    let requests = tc.state()["requests"].clone();
    let pages: Vec<&Value> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["apiMethod"] == "listWorkerPools")
        .collect();
    assert_eq!(pages.len(), 2, "{pages:#?}");
    assert!(
        pages[1]["path"]
            .as_str()
            .unwrap()
            .contains("continuationToken=")
    );
    assert!(pages.iter().all(|r| r["status"] == 200), "{pages:#?}");

    // A client that may not list the pools: one line says so, and only the known pools
    // protect images.
    let run = TcAmi::new(&ec2, Some(&tc), &cfg)
        .env("TASKCLUSTER_CLIENT_ID", NARROW_ID)
        .env("TASKCLUSTER_ACCESS_TOKEN", NARROW_TOKEN)
        .run(&["--json", "cleanup", "--keep", "0", "--dry-run"]);
    run.assert_code(0);
    let notes: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("worker-manager:list-worker-pools"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", run.stderr);
    assert!(
        notes[0].starts_with(&format!(
            "tc-ami: warning: client `{NARROW_ID}` lacks the scope worker-manager:list-worker-pools (403), so"
        )),
        "{}",
        notes[0]
    );
    assert!(notes[0].contains("only the pools of worker-types/ protect images"));
    assert!(notes[0].ends_with("temporary pools left by tc-ami try are not looked for"));
    let doc = run.json();
    assert_eq!(deleted_ids(&doc), set(&[&west[0], &west[1], &west[2]]));
    assert_eq!(doc["try_pools"], Value::Null, "{doc:#}");

    // With the listing, the deletion keeps it.
    let before = image_ids(&ec2);
    TcAmi::new(&ec2, Some(&tc), &cfg)
        .run(&["cleanup", "--keep", "0", "--yes"])
        .assert_code(0);
    assert_eq!(image_ids(&ec2), set(&[&west[1]]));
    assert_eq!(before.len(), 3);
}

#[test]
fn the_images_of_the_newest_deployments_are_kept() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    // Seeded images have no password secret: removing one that does not exist is fine.
    cfg.worker_type(
        "w",
        POOL,
        &format!("regions = [\"us-east-1\"]\npassword_secret_prefix = \"{SECRET_PREFIX}\""),
    );
    let west = seed(&ec2, "us-west-2", 6, Some("w"));
    let east = seed(&ec2, "us-east-1", 6, Some("w"));
    let tc_ami = || TcAmi::new(&ec2, Some(&tc), &cfg);
    for n in 1..=4 {
        tc_ami()
            .run(&[
                "deploy",
                "-w",
                "w",
                "--yes",
                "--image",
                &format!("us-west-2={}", west[n]),
                "--image",
                &format!("us-east-1={}", east[n]),
            ])
            .assert_code(0);
    }
    // Live: 4 (#4); rollback target: 3; the newest deployments: #4, #3, #2, #1.
    let dry = |keep_deployments: &str| {
        let run = tc_ami().run(&[
            "--json",
            "cleanup",
            "--keep",
            "0",
            "--keep-deployments",
            keep_deployments,
            "--dry-run",
        ]);
        run.assert_code(0);
        run.json()
    };
    let doc = dry("1");
    assert_eq!(
        deleted_ids(&doc),
        set(&[
            &west[0], &west[1], &west[2], &west[5], &east[0], &east[1], &east[2], &east[5]
        ])
    );
    assert_eq!(reasons(item(&doc, &west[3])), ["rollback-target"]);
    assert_eq!(reasons(item(&doc, &west[4])), ["live", "deployed"]);
    let doc = dry("3");
    assert_eq!(
        deleted_ids(&doc),
        set(&[&west[0], &west[1], &west[5], &east[0], &east[1], &east[5]])
    );
    assert_eq!(
        item(&doc, &east[2])["why"],
        json!([{"reason": "deployed", "pool": POOL, "seq": 2}])
    );
    assert_eq!(
        doc["pools"][0]["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 3, 2]
    );

    // The default is 3.
    let run = tc_ami().run(&["--json", "cleanup", "--keep", "0", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["keep_deployments"], 3);
    assert_eq!(
        image_ids(&ec2),
        set(&[&west[2], &west[3], &west[4], &east[2], &east[3], &east[4]])
    );
    // The secrets of the deleted builds are removed (the service answers success whether or
    // not they exist): seeded images carry no source tag, so each is its build's source.
    let secrets = doc["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 6, "{doc:#}");
    for s in secrets {
        assert_eq!(s["result"], "removed", "{s}");
    }
    assert!(
        secrets
            .iter()
            .any(|s| s["name"] == format!("{SECRET_PREFIX}/{}", west[0])),
        "{doc:#}"
    );
}

#[test]
fn a_pool_changed_between_the_plan_and_the_deletion_is_read_again_and_replanned() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "");
    let west = seed(&ec2, "us-west-2", 3, Some("w"));
    // Right after cleanup has read the pool, someone deploys image 1 in us-west-2.
    tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 1, "patch": {"config": {"launchConfigs": {
            "us-west-2": {"launchConfig": {"ImageId": west[1]}}
        }}}}),
    );
    let run = TcAmi::new(&ec2, Some(&tc), &cfg).run(&["--json", "cleanup", "--keep", "0", "--yes"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "the worker pools changed since the plan ({}: now live in {POOL}); the new plan:",
            west[1]
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("going on with the new plan (--yes)"));
    let doc = run.json();
    assert_eq!(item(&doc, &west[1])["action"], "keep");
    assert_eq!(image_ids(&ec2), set(&[&west[1]]));
    // Read three times: the plan, the read that found the change, the one that found none.
    let gets = tc.state()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["apiMethod"] == "workerPool")
        .count();
    assert_eq!(gets, 3);
}

/// tc-ami run in a pseudo-terminal by the venv's Python (`pty`): at each `[y/N]` question
/// the driver prints `PROMPT`, the test does `at_prompt(n)` and its answer is typed in.
fn run_in_pty(tc_ami: TcAmi, args: &[&str], mut at_prompt: impl FnMut(usize) -> String) -> Run {
    const DRIVER: &str = r#"
import json, os, pty, select, sys
argv = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, prompts, inputs = b"", 0, [fd, sys.stdin]
while True:
    ready, _, _ = select.select(inputs, [], [], 120)
    if not ready:
        os.kill(pid, 9)
        break
    if fd in ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        out += data
        while prompts < out.count(b"[y/N]"):
            prompts += 1
            print("PROMPT", flush=True)
    if sys.stdin in ready:
        line = sys.stdin.readline()
        if line:
            os.write(fd, line.encode())
        else:
            inputs.remove(sys.stdin)
_, status = os.waitpid(pid, 0)
print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
print(json.dumps(out.decode("utf-8", "replace")), flush=True)
"#;
    let mut argv = vec![tc_ami.cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(
        tc_ami
            .cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut driver = std::process::Command::new(python());
    driver
        .args(["-c", DRIVER, &serde_json::to_string(&argv).unwrap()])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (k, v) in tc_ami.cmd.get_envs() {
        if let Some(v) = v {
            driver.env(k, v);
        }
    }
    let mut child = driver.spawn().expect("start the pty driver");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout);
    let mut prompts = 0;
    let code = loop {
        let line = lines.next().expect("the driver's output").unwrap();
        if line == "PROMPT" {
            prompts += 1;
            let answer = at_prompt(prompts);
            std::io::Write::write_all(&mut stdin, format!("{answer}\n").as_bytes()).unwrap();
        } else if let Some(code) = line.strip_prefix("EXIT ") {
            break code.parse().unwrap();
        }
    };
    let out: String = serde_json::from_str(&lines.next().expect("the output").unwrap()).unwrap();
    child.wait().unwrap();
    // Everything tc-ami wrote, stdout and stderr, went to the terminal.
    Run {
        code,
        stdout: out.clone(),
        stderr: out,
    }
}

#[test]
fn at_the_prompt_a_change_is_shown_and_asked_about_again_and_an_outage_deletes_nothing() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "");
    let west = seed(&ec2, "us-west-2", 3, Some("w"));

    // While the question waits, someone deploys image 1: after the answer cleanup reads the
    // pool again, shows the change and the new plan, and asks again.
    let run = run_in_pty(
        TcAmi::new(&ec2, Some(&tc), &cfg),
        &["cleanup", "--keep", "0"],
        |n| {
            if n == 1 {
                tc.server.post(
                    "/_emulator/concurrent-change",
                    json!({"workerPoolId": POOL, "after_requests": 0, "patch": {"config": {
                        "launchConfigs": {"us-west-2": {"launchConfig": {"ImageId": west[1]}}}
                    }}}),
                );
            }
            "y".into()
        },
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Delete 3 images (6 snapshots)? [y/N]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("({}: now live in {POOL})", west[1])),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Delete 2 images (4 snapshots)? [y/N]"),
        "{}",
        run.stderr
    );
    assert_eq!(image_ids(&ec2), set(&[&west[1]]));

    // Taskcluster goes down while the question waits: the read after the answer fails, and
    // nothing is deleted.
    let more = seed(&ec2, "us-west-2", 2, Some("w2"));
    cfg.worker_type("w2", POOL, "");
    let before = image_ids(&ec2);
    assert!(before.contains(&more[0]));
    let run = run_in_pty(
        TcAmi::new(&ec2, Some(&tc), &cfg),
        &["cleanup", "-w", "w2", "--keep", "0"],
        |_| {
            tc.server.post(
                "/_emulator/faults",
                json!({"fail": {"status": 503, "count": 1000}}),
            );
            "y".into()
        },
    );
    tc.server.post("/_emulator/faults", json!({"clear": true}));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("tc-ami: error:"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(
        error.contains(&format!(
            "cannot tell which images worker pool {POOL} needs (worker type w, w2), so nothing was deleted"
        )),
        "{error}"
    );
    assert_eq!(image_ids(&ec2), before);
}

#[test]
fn a_taskcluster_outage_before_the_plan_deletes_nothing() {
    let ec2 = Ec2::start(json!({}));
    let tc = Tc::start(seed_pools());
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "");
    seed(&ec2, "us-west-2", 3, Some("w"));
    let before = image_ids(&ec2);
    let cleanup = || TcAmi::new(&ec2, Some(&tc), &cfg).run(&["cleanup", "--keep", "0", "--yes"]);

    // Every request answers 503, longer than the client retries: the first read fails.
    tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 503, "count": 1000}}),
    );
    let run = cleanup();
    run.assert_code(1);
    assert!(
        run.error_line().contains(&format!(
            "cannot tell which images worker pool {POOL} needs (worker type w), so nothing was deleted: fetching worker pool {POOL}: {} answered 503",
            tc.server.url
        )),
        "{}",
        run.stderr
    );
    assert_eq!(image_ids(&ec2), before);

    // Only the listing of the pools fails.
    tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 503, "count": 1000, "match": {"path_contains": "/worker-pools"}}}),
    );
    let run = cleanup();
    run.assert_code(1);
    assert!(
        run.error_line().contains(&format!(
            "cannot tell which images the worker pools listed at {} need, so nothing was deleted",
            tc.server.url
        )),
        "{}",
        run.stderr
    );
    assert_eq!(image_ids(&ec2), before);
    tc.server.post("/_emulator/faults", json!({"clear": true}));
    cleanup().assert_code(0);
    assert!(image_ids(&ec2).is_empty());
}

#[test]
fn the_build_end_comes_from_the_expires_at_tag_not_from_the_cleaners_config() {
    let w = World::new();
    w.ec2.configure(json!({
        "instance_boot_seconds": 0, "password_delay_seconds": 0,
        "guest": {"shutdown_after_seconds": 0}, "image_pending_seconds": 0,
        "copy_pending_seconds": 0, "instance_stop_seconds": 0, "instance_terminate_seconds": 0,
    }));
    // Built with 30s and 30s: its build may run until its start + 90s.
    let built = w.build();
    let started = Instant::now();
    let state = w.ec2.state();
    for region in ["us-west-2", "us-east-1"] {
        let image = state["regions"][region]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id(&built, region))
            .unwrap();
        let tags = &image["tags"];
        assert_eq!(
            parse_time(tags["tc-ami:expires-at"].as_str().unwrap())
                - parse_time(tags["tc-ami:created-at"].as_str().unwrap()),
            chrono::Duration::seconds(90),
            "{image}"
        );
        // Its snapshots (and, for the copy, the copy's) carry the same end.
        for snap in image["snapshot_ids"].as_array().unwrap() {
            let snapshot = state["regions"][region]["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == *snap)
                .unwrap();
            assert_eq!(
                snapshot["tags"]["tc-ami:expires-at"], tags["tc-ami:expires-at"],
                "{snapshot}"
            );
        }
    }
    // The cleaning machine's config says builds take 2s: the tag still keeps the image.
    w.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\nbuild_timeout = \"1s\"\nimage_timeout = \"1s\"",
    );
    // And the other way round: an image younger than a machine's window (24h), whose own tag
    // says its build ended long ago, goes; one without the tag (built by an older tc-ami) is
    // judged by that window, and the reason says so.
    let seed_one = |prefix: &str, tags: Value| {
        w.ec2.server.post(
            "/_sandbox/seed-owned-images",
            json!({"region": "us-west-2", "count": 1, "name_prefix": prefix, "tags": tags}),
        )["images"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ended = seed_one(
        "tc-ami-w-ended-",
        json!({"tc-ami:worker-type": "w", "tc-ami:build-id": "s1",
               "tc-ami:expires-at": "2020-01-01T00:00:00Z"}),
    );
    let untagged = seed_one(
        "tc-ami-w-untagged-",
        json!({"tc-ami:worker-type": "w", "tc-ami:build-id": "s2"}),
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    let run = w
        .tc_ami()
        .run(&["--json", "cleanup", "--keep", "0", "--dry-run"]);
    run.assert_code(0);
    let doc = run.json();
    for region in ["us-west-2", "us-east-1"] {
        let i = item(&doc, &id(&built, region));
        assert_eq!(i["action"], "keep", "{i}");
        assert_eq!(reasons(i), ["may-be-in-progress"]);
        assert!(i["why"][0].get("window_seconds").is_none(), "{i}");
    }
    assert!(
        run.stderr.contains(", its tc-ami:expires-at)"),
        "{}",
        run.stderr
    );
    // 3s old, older than this config's 3s window: without the tag it would go.
    assert_eq!(item(&doc, &untagged)["action"], "delete");

    w.cfg.worker_type(
        "w",
        POOL,
        "regions = [\"us-east-1\"]\nbuild_timeout = \"24h\"",
    );
    let run = w
        .tc_ami()
        .run(&["--json", "cleanup", "--keep", "0", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    let gone = item(&doc, &ended);
    assert_eq!(gone["result"], "deleted", "{gone}");
    assert!(gone["why"][0].get("window_seconds").is_none(), "{gone}");
    let kept = item(&doc, &untagged);
    assert_eq!(kept["action"], "keep", "{kept}");
    assert_eq!(kept["why"][0]["window_seconds"], 24 * 3600 + 60, "{kept}");
    assert!(
        run.stderr.contains(
            "may belong to a build in progress (no tc-ami:expires-at: younger than this machine's"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        image_ids(&w.ec2),
        set(&[
            &id(&built, "us-west-2"),
            &id(&built, "us-east-1"),
            &untagged
        ])
    );
}

#[test]
fn the_password_secrets_of_deregistered_images_are_removed() {
    let w = World::new();
    w.ec2.configure(json!({
        "instance_boot_seconds": 0, "password_delay_seconds": 0,
        "guest": {"shutdown_after_seconds": 0}, "image_pending_seconds": 0,
        "copy_pending_seconds": 0, "instance_stop_seconds": 0, "instance_terminate_seconds": 0,
    }));
    w.cfg.worker_type(
        "w",
        POOL,
        &format!("regions = [\"us-east-1\"]\nbuild_timeout = \"4s\"\nimage_timeout = \"1s\"\npassword_secret_prefix = \"{SECRET_PREFIX}\""),
    );
    let mut built = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        built.push(w.build());
    }
    let done = Instant::now();
    let secret = |b: &Value| format!("{SECRET_PREFIX}/{}", id(b, "us-west-2"));
    let secrets = || -> BTreeSet<String> {
        w.tc.state()["secrets"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(&format!("{SECRET_PREFIX}/")))
            .cloned()
            .collect()
    };
    assert_eq!(secrets(), built.iter().map(secret).collect());
    // Every build has ended (6s after its start).
    std::thread::sleep(Duration::from_secs(7).saturating_sub(done.elapsed()));

    let run = w
        .tc_ami()
        .run(&["--json", "cleanup", "--keep", "2", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(
        doc["secrets"],
        json!([{"name": secret(&built[0]), "worker_type": "w", "build_id": item(&doc, &id(&built[0], "us-west-2"))["build_id"],
                "images": [["us-east-1", id(&built[0], "us-east-1")], ["us-west-2", id(&built[0], "us-west-2")]],
                "result": "removed"}]),
        "{doc:#}"
    );
    assert!(
        run.stderr
            .contains("2 images (2 snapshots, 1 password secret)"),
        "{}",
        run.stderr
    );
    assert_eq!(secrets(), [&built[1], &built[2]].map(secret).into());

    // A client without `secrets:set`: one warning naming the scope; the images still count.
    let run = w
        .tc_ami()
        .env("TASKCLUSTER_CLIENT_ID", NARROW_ID)
        .env("TASKCLUSTER_ACCESS_TOKEN", NARROW_TOKEN)
        .run(&["--json", "cleanup", "--keep", "1", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["secrets"][0]["result"], "not-allowed");
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("password secret"))
        .filter(|l| l.starts_with("tc-ami: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(
        warnings[0].contains(&format!(
            "lacks the scope secrets:set:{}",
            secret(&built[1])
        )),
        "{}",
        warnings[0]
    );
    assert!(!image_ids(&w.ec2).contains(&id(&built[1], "us-west-2")));
    assert_eq!(secrets(), [&built[1], &built[2]].map(secret).into());
}
