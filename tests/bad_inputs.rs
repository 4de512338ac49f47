//! The bad-input table: every bad input gets a one-line error naming what is wrong, a non-zero
//! exit, and no change anywhere (no EC2 resource created, no pool updated, no secret written).

mod support;

use serde_json::{Value, json};
use support::*;

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Environment changes (value "" unsets the variable).
    env: Vec<(&'static str, String)>,
    /// Worker type files written before the run: (name, pool, extra lines).
    worker_types: Vec<(&'static str, &'static str, String)>,
    want: String,
}

fn case(name: &'static str, args: &[&str], want: impl Into<String>) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        worker_types: vec![],
        want: want.into(),
    }
}

impl Case {
    fn env(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.env.push((k, v.into()));
        self
    }
    fn worker_type(
        mut self,
        name: &'static str,
        pool: &'static str,
        extra: impl Into<String>,
    ) -> Self {
        self.worker_types.push((name, pool, extra.into()));
        self
    }
}

/// Everything that could change: EC2 create calls, pool updates, secrets.
fn snapshot(w: &World) -> (u64, usize, Value) {
    let stats = w.ec2.stats();
    let creates = [
        "CreateKeyPair",
        "CreateSecurityGroup",
        "RunInstances",
        "CreateImage",
        "CopyImage",
        "DeregisterImage",
        "DeleteSnapshot",
        "CreateTags",
    ]
    .iter()
    .map(|a| stats["requests"][a].as_u64().unwrap_or(0))
    .sum();
    (creates, w.updates(), w.tc.state()["secrets"].clone())
}

#[test]
fn bad_inputs_fail_with_one_line_and_change_nothing() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    // A pool whose definition has no launch configs at all.
    w.tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": "proj-servo/win2016-staging", "after_requests": 0, "patch": {"config": {"launchConfigs": []}}}),
    );
    w.cfg.write("scripts/big.ps1", &"#".repeat(17_000));
    std::fs::create_dir_all(w.cfg.path().join("scripts/a-directory.ps1")).unwrap();
    w.cfg.write(
        "worker-types/broken.toml",
        "worker_pool_id = \"proj-servo/win2016\"\nbuild_region = ",
    );
    let pending = "ami-bbc33a8682d2d1a1d";
    let url = w.tc.server.url.clone();
    let junk_url = junk_server();

    let cases = vec![
        case("unknown worker type", &["build", "-w", "nope"], "unknown worker type `nope`"),
        case("worker type name with a path", &["build", "-w", "../etc/x"], "invalid worker type name `../etc/x`"),
        case("malformed worker type file", &["build", "-w", "broken"], "broken.toml: not valid TOML"),
        case("unknown key", &["build", "-w", "x"], "x.toml: unknown key `image_id`; allowed keys:")
            .worker_type("x", "proj-servo/win2016", "image_id = \"ami-1\""),
        case("bad region", &["build", "-w", "x"], "bad value for `build_region`: `mars` is not a region name")
            .worker_type("x", "proj-servo/win2016", "build_region = \"mars\""),
        case("bad pool id", &["diff", "-w", "x"], "bad value for `worker_pool_id`")
            .worker_type("x", "proj-servo/Win", ""),
        case("empty base pattern", &["base-ami", "-w", "x"], "bad value for `base_ami_pattern`: it is empty")
            .worker_type("x", "proj-servo/win2016", "base_ami_pattern = \"\""),
        case("unmatched base pattern", &["build", "-w", "x"], "no available Windows image named `Windows_Server-1999-*` owned by amazon in us-west-2")
            .worker_type("x", "proj-servo/win2016", "base_ami_pattern = \"Windows_Server-1999-*\""),
        case("bad timeout", &["build", "-w", "x"], "bad value for `build_timeout`: `forever`")
            .worker_type("x", "proj-servo/win2016", "build_timeout = \"forever\""),
        case("volume too small", &["build", "-w", "x"], "bad value for `root_volume_gb`: 1 is out of range")
            .worker_type("x", "proj-servo/win2016", "root_volume_gb = 1"),
        case("bad account to share with", &["build", "-w", "x"], "`12` is not an account id")
            .worker_type("x", "proj-servo/win2016", "share_with_accounts = [\"12\"]"),
        case("user data over 16 KB", &["build", "-w", "x"], "over EC2's limit of 16384 bytes (16 KB): shorten")
            .worker_type("x", "proj-servo/win2016", "first_boot_script = \"scripts/big.ps1\""),
        case("missing first-boot script", &["build", "-w", "x"], "cannot read the first-boot script")
            .worker_type("x", "proj-servo/win2016", "first_boot_script = \"scripts/missing.ps1\""),
        case("unreadable first-boot script", &["build", "-w", "x"], "a-directory.ps1 (first_boot_script in")
            .worker_type("x", "proj-servo/win2016", "first_boot_script = \"scripts/a-directory.ps1\""),
        case("malformed AMI id", &["deploy", "-w", "w", "--image", "ami-12", "--yes"], "--image ami-12: `ami-12` is not an AMI id"),
        case("image for an unknown region", &["deploy", "-w", "w", "--image", &format!("eu-west-1={west}"), "--yes"], "worker pool proj-servo/win2016 has no launch configs in eu-west-1"),
        case("two images for a region", &["diff", "-w", "w", "--image", &format!("us-east-1={west}"), "--image", &format!("us-east-1={west}")], "a second image for us-east-1"),
        case("image not available", &["deploy", "-w", "w", "--image", &format!("us-west-2={pending}"), "--image", &format!("us-east-1={pending}"), "--yes"], "is pending, not available"),
        case("image that does not exist", &["deploy", "-w", "w", "--image", "ami-0123456789abcdef0", "--yes"], "image ami-0123456789abcdef0 does not exist in us-west-2"),
        case("no AWS credentials", &["base-ami", "-w", "w"], "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            .env("AWS_ACCESS_KEY_ID", "")
            .env("AWS_SECRET_ACCESS_KEY", ""),
        case("no Taskcluster root URL", &["diff", "-w", "w"], "TASKCLUSTER_ROOT_URL is not set").env("TASKCLUSTER_ROOT_URL", ""),
        case("root URL not a URL", &["diff", "-w", "w"], "TASKCLUSTER_ROOT_URL `tc.example.com` is not an http(s) URL").env("TASKCLUSTER_ROOT_URL", "tc.example.com"),
        case("client id without token", &["diff", "-w", "w"], "TASKCLUSTER_ACCESS_TOKEN is not set").env("TASKCLUSTER_ACCESS_TOKEN", ""),
        case("wrong access token", &["deploy", "-w", "w", "--image", &west, "--yes"], format!("{url} refused the credentials of client `tc-ami-admin` (401: Unauthorized: Bad mac)"))
            .env("TASKCLUSTER_ACCESS_TOKEN", "not-the-token"),
        case("unknown client", &["diff", "-w", "w"], "Client with clientId 'nobody' not found").env("TASKCLUSTER_CLIENT_ID", "nobody"),
        case("missing scopes", &["deploy", "-w", "w", "--image", &west, "--yes"], "client `tc-ami-readonly` lacks scopes")
            .env("TASKCLUSTER_CLIENT_ID", READONLY_ID)
            .env("TASKCLUSTER_ACCESS_TOKEN", READONLY_TOKEN),
        case("pool missing", &["deploy", "-w", "x", "--image", &west, "--yes"], format!("worker pool proj-servo/missing does not exist at {url} (404)"))
            .worker_type("x", "proj-servo/missing", ""),
        case("pool without launch configs", &["deploy", "-w", "x", "--image", &west, "--yes"], "worker pool proj-servo/win2016-staging has no config.launchConfigs list")
            .worker_type("x", "proj-servo/win2016-staging", ""),
        case("invalid JSON from the server", &["diff", "-w", "w"], "answered something that is not the JSON the API promises")
            .env("TASKCLUSTER_ROOT_URL", junk_url),
        case("no terminal, no --yes", &["deploy", "-w", "w", "--image", &west], format!("refusing to push this change to worker pool proj-servo/win2016 at {url} without confirmation")),
        case("rollback to a malformed AMI", &["rollback", "-w", "w", "--to", "nope", "--yes"], "--to nope: `nope` is not an AMI id"),
        case("promote to the same pool", &["promote", "--from", "w", "--to", "w2", "--yes"], "are the same worker pool proj-servo/win2016")
            .worker_type("w2", "proj-servo/win2016", ""),
        case("usage error", &["diff", "-w", "w", "-U", "many"], "invalid value 'many' for '--unified <N>'"),
        case("rollback with no history", &["rollback", "-w", "w", "--yes"], "no deployment of worker pool proj-servo/win2016 recorded by tc-ami"),
    ];
    assert!(cases.len() >= 25);

    for c in cases {
        for (name, pool, extra) in &c.worker_types {
            w.cfg.worker_type(name, pool, extra);
        }
        let before = snapshot(&w);
        let mut t = w.tc_ami();
        for (k, v) in &c.env {
            t = if v.is_empty() {
                t.env_remove(k)
            } else {
                t.env(k, v)
            };
        }
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let run = t.run(&args);
        assert_eq!(
            run.code, 1,
            "{}: exit code; stderr:\n{}",
            c.name, run.stderr
        );
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("tc-ami:") && !l.starts_with("tc-ami: warning:"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "{}: one error line: {}",
            c.name,
            run.stderr
        );
        assert!(
            errors[0].contains(&c.want),
            "{}: want {:?} in {:?}",
            c.name,
            c.want,
            errors[0]
        );
        // Nothing on stdout but, for a refused push, the diff that was reviewed.
        assert!(
            run.stdout.is_empty() || run.stdout.starts_with("diff tc-ami "),
            "{}: stdout: {}",
            c.name,
            run.stdout
        );
        assert_eq!(snapshot(&w), before, "{}: something changed", c.name);
        run.assert_hides(ADMIN_TOKEN);
    }
    w.ec2.assert_nothing_left_but_images();
}
