//! `tc-ami debug-instance` against the sandbox: the launch (one RDP rule from --cidr, shutdown
//! behaviour terminate, the TTL tags and the scheduled shutdown in the user data), the password
//! file and the .rdp file, --show-password and --json, --list, --stop, the guest's own shutdown,
//! cleanup after the TTL, Ctrl-C before the password, and bad arguments.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const CIDR: &str = "203.0.113.7/32";

/// A Windows image of the sandbox's seed in us-west-2 (what a build would start from).
fn base_image(w: &World) -> String {
    let run = w.tc_ami().run(&["--json", "base-ami", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    doc["image"]["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no image id in {}", run.stdout))
}

/// The world, with the pool's live images replaced by `image` (so that the default image of a
/// debug instance exists in the EC2 stand-in).
fn world_with_live(image: &str) -> World {
    let pools = seed_pools()
        .to_string()
        .replace("ami-00000000000a2016a", image)
        .replace("ami-00000000000a2016b", image);
    World::with_tc(Tc::start(serde_json::from_str(&pools).unwrap()))
}

/// Runs boto3 against the sandbox: `code` prints one JSON document, using `ec2` (us-west-2).
fn boto3(w: &World, code: &str) -> Value {
    let script = format!(
        "import boto3, json, sys\nec2 = boto3.client('ec2', region_name='us-west-2', endpoint_url=sys.argv[1], aws_access_key_id='x', aws_secret_access_key='x')\n{code}"
    );
    let out = Command::new(python())
        .args(["-c", &script, &w.ec2.server.url])
        .output()
        .expect("run boto3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("boto3 JSON")
}

/// The instance as the sandbox holds it.
fn instance(w: &World, id: &str) -> Value {
    w.ec2
        .all("instances")
        .into_iter()
        .map(|(_, i)| i)
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no instance {id}"))
}

fn live_instances(w: &World) -> Vec<Value> {
    w.ec2
        .all("instances")
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i["state"] != "terminated")
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A line of the human output: `host      …` → `…`.
fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no `{name}` in {stdout}"))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn launch_password_file_rdp_file_list_and_stop() {
    let probe = World::new();
    let image = base_image(&probe);
    drop(probe);
    let w = world_with_live(&image);
    let data = tempfile::tempdir().unwrap();
    let data_home = data.path().to_str().unwrap();
    let run = w.tc_ami().env("XDG_DATA_HOME", data_home).run(&[
        "debug-instance",
        "-w",
        "w",
        "--cidr",
        CIDR,
    ]);
    run.assert_code(0);
    let out = &run.stdout;
    let id = out
        .split_whitespace()
        .find(|t| t.starts_with("i-"))
        .unwrap_or_else(|| panic!("no instance id in {out}"))
        .to_string();
    let inst = instance(&w, &id);
    // The default image is the pool's live image in the build region.
    assert_eq!(inst["image_id"], image.as_str());
    assert_eq!(inst["instance_type"], "c5.xlarge");
    assert_eq!(inst["shutdown_behavior"], "terminate");
    assert_eq!(inst["guest"], "scheduled-shutdown");
    assert_eq!(inst["scheduled_shutdown_seconds"], 14400);
    assert!(inst["build_id"].is_null());
    let tags = &inst["tags"];
    assert_eq!(tags["tc-ami:worker-type"], "w");
    let debug_id = tags["tc-ami:debug-id"].as_str().unwrap().to_string();
    assert!(tags.get("tc-ami:build-id").is_none());
    let launched =
        chrono::DateTime::parse_from_rfc3339(tags["tc-ami:created-at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(tags["tc-ami:expires-at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - launched, chrono::Duration::hours(4));
    let name = format!("tc-ami-debug-w-{debug_id}");
    assert_eq!(tags["Name"], name.as_str());
    assert_eq!(inst["key_name"], name.as_str());
    // The user data schedules the shutdown after the TTL.
    let user_data = boto3(
        &w,
        &format!(
            "import base64\na = ec2.describe_instance_attribute(InstanceId='{id}', Attribute='userData')\nprint(json.dumps(base64.b64decode(a['UserData']['Value']).decode()))"
        ),
    );
    assert!(
        user_data
            .as_str()
            .unwrap()
            .contains("<powershell>\nshutdown.exe /s /t 14400 /c"),
        "{user_data}"
    );
    // Its group admits TCP 3389 from the CIDR and nothing else, and is tagged.
    let groups = inst["security_group_ids"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group = boto3(
        &w,
        &format!(
            "g = ec2.describe_security_groups(GroupIds=['{}'])['SecurityGroups'][0]\nprint(json.dumps({{'perms': g['IpPermissions'], 'tags': {{t['Key']: t['Value'] for t in g.get('Tags', [])}}, 'name': g['GroupName']}}))",
            groups[0].as_str().unwrap()
        ),
    );
    let perms = group["perms"].as_array().unwrap();
    assert_eq!(perms.len(), 1, "{group}");
    assert_eq!(perms[0]["IpProtocol"], "tcp");
    assert_eq!(
        (perms[0]["FromPort"].as_i64(), perms[0]["ToPort"].as_i64()),
        (Some(3389), Some(3389))
    );
    let ranges: Vec<&str> = perms[0]["IpRanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["CidrIp"].as_str().unwrap())
        .collect();
    assert_eq!(ranges, [CIDR]);
    assert_eq!(group["name"], name.as_str());
    assert_eq!(group["tags"]["tc-ami:debug-id"], debug_id.as_str());
    assert_eq!(
        group["tags"]["tc-ami:expires-at"],
        tags["tc-ami:expires-at"]
    );
    let key = w
        .ec2
        .all("key_pairs")
        .into_iter()
        .map(|(_, k)| k)
        .find(|k| k["name"] == name.as_str())
        .unwrap();
    assert_eq!(key["tags"]["tc-ami:expires-at"], tags["tc-ami:expires-at"]);

    // Host, port, user, expiry; the password only in its file.
    let password = inst["password"].as_str().unwrap().to_string();
    run.assert_hides(&password);
    assert_eq!(field(out, "port"), "3389");
    assert_eq!(field(out, "user"), "Administrator");
    let host = field(out, "host").to_string();
    assert!(!host.is_empty() && !host.starts_with("none"), "{out}");
    assert!(field(out, "expires").starts_with(tags["tc-ami:expires-at"].as_str().unwrap()));
    let dir = data.path().join("tc-ami/debug").join(&id);
    let password_file = dir.join("password.txt");
    assert_eq!(
        field(out, "password"),
        format!("in {} (mode 0600)", password_file.display())
    );
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), password);
    assert_eq!(mode(&password_file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let key_file = dir.join(format!("{id}.pem"));
    assert_eq!(mode(&key_file), 0o600);
    assert!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let rdp = dir.join(format!("{id}.rdp"));
    assert_eq!(field(out, "rdp file"), rdp.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&rdp).unwrap(),
        format!("full address:s:{host}\r\nusername:s:Administrator\r\n")
    );

    // --list shows it, in the build region, not expired.
    let list = w.tc_ami().run(&["--json", "debug-instance", "--list"]);
    list.assert_code(0);
    let listed = list.json()["instances"].as_array().cloned().unwrap();
    assert_eq!(listed.len(), 1, "{}", list.stdout);
    assert_eq!(listed[0]["instance_id"], id.as_str());
    assert_eq!(listed[0]["region"], "us-west-2");
    assert_eq!(listed[0]["worker_type"], "w");
    assert_eq!(listed[0]["expired"], false);
    let table = w.tc_ami().run(&["debug-instance", "--list", "-w", "w"]);
    table.assert_code(0);
    assert!(table.stdout.starts_with("INSTANCE"), "{}", table.stdout);
    assert!(table.stdout.lines().nth(1).unwrap().starts_with(&id));

    // --stop removes the instance, its group, its key pair and the files.
    let stop = w
        .tc_ami()
        .env("XDG_DATA_HOME", data_home)
        .run(&["debug-instance", "--stop", &id]);
    stop.assert_code(0);
    assert!(
        stop.stdout.contains(&format!("stopped {id}")),
        "{}",
        stop.stdout
    );
    w.ec2.assert_nothing_left_but_images();
    assert!(!dir.exists());
    let list = w.tc_ami().run(&["--json", "debug-instance", "--list"]);
    assert_eq!(list.json()["instances"], json!([]));

    // --show-password --json: the password in the document, no password file.
    let run = w.tc_ami().env("XDG_DATA_HOME", data_home).run(&[
        "--json",
        "debug-instance",
        "-w",
        "w",
        "--cidr",
        "2001:db8::/64",
        "--image",
        &image,
        "--ttl",
        "90m",
        "--show-password",
    ]);
    run.assert_code(0);
    let doc = run.json();
    let id = doc["instance_id"].as_str().unwrap().to_string();
    let inst = instance(&w, &id);
    assert_eq!(doc["password"], inst["password"]);
    assert_eq!(doc["port"], 3389);
    assert_eq!(doc["user"], "Administrator");
    assert_eq!(doc["ttl_seconds"], 5400);
    assert_eq!(inst["scheduled_shutdown_seconds"], 5400);
    assert!(doc["files"]["password"].is_null());
    assert!(Path::new(doc["files"]["rdp"].as_str().unwrap()).exists());
    let stop = w
        .tc_ami()
        .env("XDG_DATA_HOME", data_home)
        .run(&["debug-instance", "--stop", &id]);
    stop.assert_code(0);
    w.ec2.assert_nothing_left_but_images();
}

#[test]
fn the_guest_terminates_itself_and_cleanup_removes_the_rest_after_the_ttl() {
    let w = World::new();
    let image = base_image(&w);
    let data = tempfile::tempdir().unwrap();
    let launch = |ttl: &str| {
        let run = w
            .tc_ami()
            .env("XDG_DATA_HOME", data.path().to_str().unwrap())
            .run(&[
                "-vv",
                "--json",
                "debug-instance",
                "-w",
                "w",
                "--image",
                &image,
                "--cidr",
                CIDR,
                "--ttl",
                ttl,
            ]);
        run.assert_code(0);
        let id = run.json()["instance_id"].as_str().unwrap().to_string();
        // Neither the password nor the private key shows at -vv (the SDK's own log included).
        run.assert_hides(instance(&w, &id)["password"].as_str().unwrap());
        let key =
            std::fs::read_to_string(run.json()["files"]["private_key"].as_str().unwrap()).unwrap();
        for line in key.lines().filter(|l| !l.starts_with("-----")).take(3) {
            run.assert_hides(line);
        }
        id
    };
    // A guest that never shuts down (its 3 s become 3000 s): cleanup is the backstop.
    w.ec2.configure(json!({"user_data_shutdown_scale": 1000}));
    let stuck = launch("3s");
    // A guest that shuts down after its TTL: shutdown behaviour terminate.
    w.ec2.configure(json!({"user_data_shutdown_scale": 1}));
    let ending = launch("2s");
    wait_until(
        "the guest's shutdown terminates it",
        Duration::from_secs(20),
        || instance(&w, &ending)["state"] == "terminated",
    );
    let ended = instance(&w, &ending);
    assert_eq!(
        ended["state_reason"]["code"],
        "Client.InstanceInitiatedShutdown"
    );
    assert_eq!(instance(&w, &stuck)["state"], "running");
    // --stop after the guest ended it: its group and key pair go.
    let name_of = |id: &str| instance(&w, id)["key_name"].as_str().unwrap().to_string();
    let ending_name = name_of(&ending);
    let stop = w.tc_ami().run(&["debug-instance", "--stop", &ending]);
    stop.assert_code(0);
    assert!(
        stop.stdout.contains(&format!("key pair {ending_name}")),
        "{}",
        stop.stdout
    );
    assert!(
        stop.stdout.contains("security group sg-"),
        "{}",
        stop.stdout
    );
    assert!(
        !w.ec2
            .all("key_pairs")
            .iter()
            .any(|(_, k)| k["name"] == ending_name.as_str())
    );
    // Before the TTL has passed, cleanup keeps what is left (a fresh launch).
    w.ec2.configure(json!({"user_data_shutdown_scale": 1000}));
    let young = launch("1h");
    // Once it has passed (the 3 s of `stuck`), cleanup removes the instance, the groups and
    // the key pairs.
    std::thread::sleep(Duration::from_secs(4));
    let run = w.tc_ami().run(&["cleanup", "-w", "w", "--yes"]);
    run.assert_code(0);
    assert!(run.stdout.contains(&stuck), "{}", run.stdout);
    let left: Vec<String> = w.ec2.leftovers(false);
    let live: Vec<Value> = live_instances(&w);
    assert_eq!(live.len(), 1, "{left:#?}");
    assert_eq!(live[0]["id"], young.as_str());
    // Only the young one's key pair and group are left.
    let young_name = live[0]["key_name"].as_str().unwrap().to_string();
    let keys: Vec<Value> = w
        .ec2
        .all("key_pairs")
        .into_iter()
        .map(|(_, k)| k["name"].clone())
        .collect();
    assert_eq!(keys, [young_name.as_str()], "{left:#?}");
    let groups: Vec<Value> = w
        .ec2
        .all("security_groups")
        .into_iter()
        .filter(|(_, g)| g["default"] != true)
        .map(|(_, g)| g["name"].clone())
        .collect();
    assert_eq!(groups, [young_name.as_str()], "{left:#?}");
    let stop = w.tc_ami().run(&["debug-instance", "--stop", &young]);
    stop.assert_code(0);
    w.ec2.assert_nothing_left_but_images();
}

#[test]
fn ctrl_c_before_the_password_leaves_nothing() {
    let w = World::new();
    let image = base_image(&w);
    // Windows takes a minute to make the password: the signal lands in that wait.
    w.ec2.configure(json!({"password_delay_seconds": 60}));
    let data = tempfile::tempdir().unwrap();
    for signal in ["INT", "TERM"] {
        let run = w
            .tc_ami()
            .env("XDG_DATA_HOME", data.path().to_str().unwrap())
            .interrupt_at(
                &[
                    "debug-instance",
                    "-w",
                    "w",
                    "--image",
                    &image,
                    "--cidr",
                    CIDR,
                ],
                "to make the administrator password",
                signal,
            );
        run.assert_code(if signal == "INT" { 130 } else { 143 });
        let line = run.error_line();
        assert!(
            line.contains("the debug instance was not ready; removed"),
            "{line}"
        );
        assert!(line.contains("instance i-"), "{line}");
        w.ec2.assert_nothing_left_but_images();
        assert!(live_instances(&w).is_empty());
        assert!(
            !data.path().join("tc-ami/debug").exists()
                || std::fs::read_dir(data.path().join("tc-ami/debug"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }
}

#[test]
fn bad_arguments_are_one_line_and_launch_nothing() {
    let w = World::new();
    let image = base_image(&w);
    let before = w.ec2.all("instances").len();
    let cases: &[(&[&str], &str)] = &[
        (&["-w", "w"], "--cidr is required"),
        (
            &["-w", "w", "--cidr", "203.0.113.7"],
            "not in CIDR notation",
        ),
        (&["-w", "w", "--cidr", "203.0.113.7/40"], "0 to 32"),
        (
            &["-w", "w", "--cidr", "10.0.0.1/8"],
            "host bits are set; the network is 10.0.0.0/8",
        ),
        (&["-w", "w", "--cidr", "0.0.0.0/0"], "every address"),
        (&["-w", "w", "--cidr", CIDR, "--ttl", "0s"], "at once"),
        (&["-w", "w", "--cidr", CIDR, "--ttl", "4x"], "unknown unit"),
        (
            &["-w", "w", "--cidr", CIDR, "--ttl", "3651d"],
            "at most 315360000",
        ),
        (&["-w", "nope", "--cidr", CIDR], "nope"),
        (&["--cidr", CIDR], "-w W is required"),
        (
            &[
                "-w",
                "w",
                "--cidr",
                CIDR,
                "--image",
                "ami-0123456789abcdef0",
            ],
            "no such image",
        ),
        (&["--stop", "i-nothex"], "not an instance id"),
        (
            &["--stop", "i-0123456789abcdef0"],
            "no instance i-0123456789abcdef0",
        ),
    ];
    for (args, wanted) in cases {
        let mut all = vec!["debug-instance"];
        all.extend_from_slice(args);
        let run = w.tc_ami().run(&all);
        run.assert_code(1);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("tc-ami:"))
            .collect();
        assert_eq!(errors.len(), 1, "{all:?}: {}", run.stderr);
        assert!(errors[0].contains(wanted), "{all:?}: {}", errors[0]);
        assert_eq!(
            w.ec2.all("instances").len(),
            before,
            "{all:?} launched something"
        );
        w.ec2.assert_nothing_left_but_images();
    }
    // Someone else's instance is not tc-ami's to stop.
    let other = boto3(
        &w,
        &format!(
            "r = ec2.run_instances(ImageId='{image}', MinCount=1, MaxCount=1, InstanceType='t3.micro')\nprint(json.dumps(r['Instances'][0]['InstanceId']))"
        ),
    );
    let other = other.as_str().unwrap();
    let run = w.tc_ami().run(&["debug-instance", "--stop", other]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("is not a tc-ami debug instance"),
        "{}",
        run.stderr
    );
    assert_ne!(instance(&w, other)["state"], "terminated");
}
