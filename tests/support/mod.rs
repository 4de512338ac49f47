//! The test harness: the stand-ins (moto's EC2 with the guest simulator, the Taskcluster
//! emulator) started on free 127.0.0.1 ports, a config directory per test, and the tc-ami
//! binary run against them with a clean environment.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod proxy;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sandbox's Python, installed by scripts/ensure-venv on first use.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/ensure-venv"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/ensure-venv");
        assert!(out.status.success(), "scripts/ensure-venv failed");
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
    })
    .clone()
}

/// A server process of ours that prints `READY <url>` and is killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(script: &str, args: &[String]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut child = Command::new(python())
            .arg(repo_root().join(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read READY line");
        let Some(url) = line.trim().strip_prefix("READY ") else {
            let _ = child.kill();
            panic!(
                "{script} did not start: {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            url: url.to_string(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Value {
        http_json("GET", &format!("{}{path}", self.url), None).1
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = http_json("POST", &format!("{}{path}", self.url), Some(body));
        assert!(status < 300, "POST {path}: {status} {v}");
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP/1.0 JSON client for the control endpoints (no auth, loopback only).
pub fn http_json(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = TcpStream::connect(hostport).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// moto's EC2 with the guest simulator (sandbox/ec2_sandbox.py).
pub struct Ec2 {
    pub server: Server,
}

impl Ec2 {
    /// `config` is deep-merged into the sandbox defaults; `first_boot_script` defaults to the
    /// project's script, so the guest checks the user data against it.
    pub fn start(config: Value) -> Ec2 {
        let mut cfg = json!({
            "first_boot_script": repo_root().join("scripts/first-boot.ps1"),
            "instance_boot_seconds": 0.3,
            "password_delay_seconds": 0.3,
            "guest": {"mode": "stop", "shutdown_after_seconds": 0.8},
            "image_pending_seconds": 0.5,
            "copy_pending_seconds": 0.5,
            "instance_stop_seconds": 0.2,
            "instance_terminate_seconds": 0.2,
        });
        merge(&mut cfg, config);
        let server = Server::start(
            "sandbox/ec2_sandbox.py",
            &[
                "--port".into(),
                "0".into(),
                "--config".into(),
                cfg.to_string(),
                "--parent-pid".into(),
                std::process::id().to_string(),
            ],
        );
        Ec2 { server }
    }

    pub fn state(&self) -> Value {
        self.server.get("/_sandbox/state")
    }

    pub fn stats(&self) -> Value {
        self.server.get("/_sandbox/stats")
    }

    /// Deregisters an image behind tc-ami's back, as another operator would (boto3).
    pub fn deregister(&self, region: &str, image_id: &str) {
        let status = Command::new(python())
            .args(["-c", "import boto3, sys; boto3.client('ec2', region_name=sys.argv[2], endpoint_url=sys.argv[1], aws_access_key_id='x', aws_secret_access_key='x').deregister_image(ImageId=sys.argv[3])"])
            .args([&self.server.url, region, image_id])
            .status()
            .expect("run boto3");
        assert!(status.success(), "deregister {image_id}");
    }

    pub fn configure(&self, config: Value) {
        self.server.post("/_sandbox/config", config);
    }

    /// Every resource of a region list of kind (`instances`, `images`, …) in every region.
    pub fn all(&self, kind: &str) -> Vec<(String, Value)> {
        let state = self.state();
        let mut out = Vec::new();
        if let Some(regions) = state["regions"].as_object() {
            for (region, r) in regions {
                for item in r[kind].as_array().into_iter().flatten() {
                    out.push((region.clone(), item.clone()));
                }
            }
        }
        out
    }

    /// What a build could have left: instances not terminated, key pairs, security groups
    /// but the defaults, volumes, and (with `images`) our images and snapshots.
    pub fn leftovers(&self, images: bool) -> Vec<String> {
        let state = self.state();
        let mut left = Vec::new();
        let list = |r: &Value, kind: &str| r[kind].as_array().cloned().unwrap_or_default();
        for (region, r) in state["regions"].as_object().into_iter().flatten() {
            for i in list(r, "instances") {
                if i["state"] != "terminated" {
                    left.push(format!("{region} instance {} {}", i["id"], i["state"]));
                }
            }
            for k in list(r, "key_pairs") {
                left.push(format!("{region} key pair {}", k["name"]));
            }
            for g in list(r, "security_groups") {
                if g["default"] != true {
                    left.push(format!("{region} security group {}", g["name"]));
                }
            }
            for v in list(r, "volumes") {
                if v["state"] != "deleted" {
                    left.push(format!("{region} volume {} {}", v["id"], v["state"]));
                }
            }
            if images {
                for i in list(r, "images") {
                    if i["seeded"] != true {
                        left.push(format!("{region} image {} {}", i["id"], i["state"]));
                    }
                }
                for s in list(r, "snapshots") {
                    if s["seeded"] != true {
                        left.push(format!("{region} snapshot {}", s["id"]));
                    }
                }
            }
        }
        left
    }

    /// Nothing a build created is left in moto.
    pub fn assert_nothing_left(&self) {
        let left = self.leftovers(true);
        assert!(left.is_empty(), "left behind in moto: {left:#?}");
    }

    /// Only the images (and their snapshots) a successful build made are left.
    pub fn assert_nothing_left_but_images(&self) {
        let left = self.leftovers(false);
        assert!(left.is_empty(), "left behind in moto: {left:#?}");
    }
}

/// The Taskcluster emulator (sandbox/tc_emulator.py) with the given seed.
pub struct Tc {
    pub server: Server,
    _seed: tempfile::NamedTempFile,
    /// The client tc-ami runs as by default against this emulator (id, token).
    pub client: (&'static str, &'static str),
}

/// The default client of every tc-ami run in the tests: what a Servo project administrator holds
/// on the community deployment (`assume:project-admin:servo` through the sandbox seed's
/// `project-admin:*` role, and the scopes of its `anonymous` role, which every client there
/// gets; see sandbox/TASKCLUSTER.md). The tests thus prove the whole flow works with it.
pub const OPERATOR_ID: &str = "project/servo/tc-ami";
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdefghijklmno";
/// A broad client (`worker-manager:*`, `secrets:*`), only for what a project administrator may
/// not do: reading the old history secret `tc-ami/deployments/<pool>` (tests/scopes.rs).
pub const ADMIN_ID: &str = "tc-ami-admin";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijklmnopqrs";
pub const READONLY_ID: &str = "tc-ami-readonly";
pub const READONLY_TOKEN: &str = "test-readonly-token-0123456789abcdefghijklmn";
/// May read pools and secrets, but neither list pools nor write or remove secrets.
pub const NARROW_ID: &str = "tc-ami-narrow";
pub const NARROW_TOKEN: &str = "test-narrow-token-0123456789abcdefghijklmnopq";

/// May edit Servo's pools and store passwords under `project/servo/windows-administrator/`,
/// and touch no other secret (so not the deployment history).
pub const NO_HISTORY_ID: &str = "tc-ami-no-history";
pub const NO_HISTORY_TOKEN: &str = "test-no-history-token-0123456789abcdefghijk";
/// Like the operator, but may only read Servo's secrets: it cannot record a deployment.
pub const HISTORY_READER_ID: &str = "tc-ami-history-reader";
pub const HISTORY_READER_TOKEN: &str = "test-history-reader-token-0123456789abcdefg";
/// Like the operator, but with the scope of another provider (`aws`) than the pools' own.
pub const OTHER_PROVIDER_ID: &str = "tc-ami-other-provider";
pub const OTHER_PROVIDER_TOKEN: &str = "test-other-provider-token-0123456789abcdefg";

/// The sandbox seed (sandbox/seed/taskcluster.json).
fn sandbox_seed() -> Value {
    let text = std::fs::read_to_string(repo_root().join("sandbox/seed/taskcluster.json"))
        .expect("read the sandbox seed");
    serde_json::from_str(&text).expect("the sandbox seed is JSON")
}

/// The scopes of the sandbox seed's role `role_id`.
fn role_scopes(seed: &Value, role_id: &str) -> Vec<Value> {
    seed["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["roleId"] == role_id)
        .and_then(|r| r["scopes"].as_array().cloned())
        .unwrap_or_else(|| panic!("the sandbox seed has no role {role_id}"))
}

impl Tc {
    pub fn start(pools: Value) -> Tc {
        Tc::start_with(pools, json!({}))
    }

    /// The emulator with `pools` and `secrets` (name → `{secret, expires}`).
    pub fn start_with_secrets(pools: Value, secrets: Value) -> Tc {
        Tc::start_with(pools, json!({"secrets": secrets}))
    }

    /// As [`Tc::start`], with `extra` added to the seed: its `clients` and `roles` join the
    /// default ones (a client with the id of a default client takes its place); any other key
    /// (`simulation`, `secrets`, …) is set as given.
    pub fn start_with(pools: Value, extra: Value) -> Tc {
        Tc::launch(Tc::seed(pools, extra), &[])
    }

    /// The emulator with `seed`, started with `args` besides the port, the seed and `--quiet`;
    /// tc-ami runs as the operator.
    fn launch(seed: Value, args: &[String]) -> Tc {
        let mut file = tempfile::NamedTempFile::new().expect("seed file");
        file.write_all(seed.to_string().as_bytes())
            .expect("write seed");
        let mut all = vec![
            "--port".to_string(),
            "0".into(),
            "--seed".into(),
            file.path().display().to_string(),
            "--quiet".into(),
        ];
        all.extend_from_slice(args);
        Tc {
            server: Server::start("sandbox/tc_emulator.py", &all),
            _seed: file,
            client: (OPERATOR_ID, OPERATOR_TOKEN),
        }
    }

    /// The seed of [`Tc::start_with`].
    fn seed(pools: Value, extra: Value) -> Value {
        let sandbox = sandbox_seed();
        // The community deployment's anonymous role goes to the operator only, so that the
        // other clients hold exactly the scopes listed here.
        // As the sandbox seed's operator: a project administrator's role, and the scheduler id
        // every login identity holds on the community deployment (config/grants.yml), which
        // createTask needs.
        let mut operator = vec![
            json!("assume:project-admin:servo"),
            json!("queue:scheduler-id:-"),
        ];
        operator.extend(role_scopes(&sandbox, "anonymous"));
        let mut seed = json!({
            "clients": [
                {"clientId": OPERATOR_ID, "accessToken": OPERATOR_TOKEN, "scopes": operator},
                {"clientId": ADMIN_ID, "accessToken": ADMIN_TOKEN, "scopes": ["worker-manager:*", "secrets:*"]},
                {"clientId": READONLY_ID, "accessToken": READONLY_TOKEN, "scopes": ["worker-manager:get-worker-pool:*", "worker-manager:list-worker-pools"]},
                {"clientId": NARROW_ID, "accessToken": NARROW_TOKEN, "scopes": ["worker-manager:get-worker-pool:*", "secrets:get:*"]},
                {"clientId": NO_HISTORY_ID, "accessToken": NO_HISTORY_TOKEN, "scopes": [
                    "worker-manager:get-worker-pool:*",
                    "worker-manager:list-worker-pools",
                    "worker-manager:manage-worker-pool:proj-servo/*",
                    "worker-manager:provider:community-tc-workers-*",
                    "secrets:set:project/servo/windows-administrator/*",
                ]},
                {"clientId": HISTORY_READER_ID, "accessToken": HISTORY_READER_TOKEN, "scopes": [
                    "worker-manager:get-worker-pool:*",
                    "worker-manager:manage-worker-pool:proj-servo/*",
                    "worker-manager:provider:community-tc-workers-*",
                    "secrets:get:project/servo/*",
                ]},
                {"clientId": OTHER_PROVIDER_ID, "accessToken": OTHER_PROVIDER_TOKEN, "scopes": [
                    "worker-manager:get-worker-pool:*",
                    "worker-manager:manage-worker-pool:proj-servo/*",
                    "worker-manager:provider:aws",
                    "secrets:get:project/servo/*",
                    "secrets:set:project/servo/*",
                ]},
            ],
            "roles": [
                {"roleId": "project-admin:*", "scopes": role_scopes(&sandbox, "project-admin:*")},
            ],
            "providers": {
                "community-tc-workers-aws": {"providerType": "aws", "setup": "ok"},
                "aws": {"setup": "ok"},
            },
            "workerPools": pools,
            "secrets": {},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            match (k.as_str(), v) {
                ("clients", Value::Array(more)) => {
                    let clients = seed["clients"].as_array_mut().expect("clients");
                    for client in more {
                        clients.retain(|c| c["clientId"] != client["clientId"]);
                        clients.push(client);
                    }
                }
                ("roles", Value::Array(more)) => {
                    seed["roles"].as_array_mut().expect("roles").extend(more)
                }
                (_, v) => seed[k.as_str()] = v,
            }
        }
        seed
    }

    pub fn state(&self) -> Value {
        self.server.get("/_emulator/state")
    }

    /// Adds simulated workers to a pool (`POST /_emulator/workers`); returns them.
    pub fn add_workers(&self, pool: &str, workers: Value) -> Vec<Value> {
        let body = json!({"workerPoolId": pool, "workers": workers});
        self.server.post("/_emulator/workers", body)["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every simulated worker, with its image, task and the Queue's record.
    pub fn workers(&self) -> Vec<Value> {
        self.server.get("/_emulator/workers")["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Moves the simulated clock forward, processing every event on the way.
    pub fn advance(&self, seconds: f64) {
        self.server
            .post("/_emulator/advance", json!({"seconds": seconds}));
    }

    /// Real seconds per simulated second from now on (0 freezes the clock).
    pub fn time_scale(&self, scale: f64) {
        self.server
            .post("/_emulator/time-scale", json!({"timeScale": scale}));
    }

    /// The API requests so far (`method`, `path` with its query, `apiMethod`, `status`, …).
    pub fn requests(&self) -> Vec<Value> {
        self.state()["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A config directory (worker-types/, scripts/, base-ami.txt) for one test.
pub struct Config {
    pub dir: tempfile::TempDir,
}

impl Config {
    /// The project's base-ami.txt and first-boot.ps1, and no worker type yet.
    pub fn new() -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("worker-types")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
        std::fs::copy(
            repo_root().join("base-ami.txt"),
            dir.path().join("base-ami.txt"),
        )
        .expect("copy");
        std::fs::copy(
            repo_root().join("scripts/first-boot.ps1"),
            dir.path().join("scripts/first-boot.ps1"),
        )
        .expect("copy");
        Config { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// A worker type with short timeouts for tests; `extra` lines are appended and replace
    /// the defaults they name.
    pub fn worker_type(&self, name: &str, pool: &str, extra: &str) {
        let defaults = [
            ("build_region", "\"us-west-2\""),
            ("instance_type", "\"c5.xlarge\""),
            ("root_volume_gb", "60"),
            ("build_timeout", "\"30s\""),
            ("image_timeout", "\"30s\""),
        ];
        let mut text = format!("worker_pool_id = \"{pool}\"\n");
        for (key, value) in defaults {
            if !extra
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ")))
            {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text.push_str(extra);
        text.push('\n');
        self.write(&format!("worker-types/{name}.toml"), &text);
    }
}

/// A tc-ami invocation against the stand-ins, with nothing from the caller's environment.
pub struct TcAmi {
    pub cmd: Command,
    pub home: tempfile::TempDir,
}

impl TcAmi {
    pub fn new(ec2: &Ec2, tc: Option<&Tc>, config: &Config) -> TcAmi {
        let home = tempfile::tempdir().expect("home");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tc-ami"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_ENDPOINT_URL", &ec2.server.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-west-2")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .arg("-C")
            .arg(config.path())
            .stdin(Stdio::null());
        if let Some(tc) = tc {
            cmd.env("TASKCLUSTER_ROOT_URL", &tc.server.url)
                .env("TASKCLUSTER_CLIENT_ID", tc.client.0)
                .env("TASKCLUSTER_ACCESS_TOKEN", tc.client.1);
        }
        TcAmi { cmd, home }
    }

    /// Runs as another client of the emulator's seed.
    pub fn client(self, id: &str, token: &str) -> Self {
        self.env("TASKCLUSTER_CLIENT_ID", id)
            .env("TASKCLUSTER_ACCESS_TOKEN", token)
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn run(mut self, args: &[&str]) -> Run {
        let out: Output = self.cmd.args(args).output().expect("run tc-ami");
        Run::from(out)
    }

    /// Starts tc-ami, waits until its stderr shows `marker`, sends `signal`, and waits for it.
    pub fn interrupt_at(self, args: &[&str], marker: &str, signal: &str) -> Run {
        self.signals_at(args, &[(marker, signal)])
    }

    /// Starts tc-ami and, for each `(marker, signal)` in turn, waits until its stderr shows
    /// `marker` (after the previous signal), then sends `signal`; then waits for it to exit.
    pub fn signals_at(mut self, args: &[&str], steps: &[(&str, &str)]) -> Run {
        let mut child = self
            .cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tc-ami");
        let stderr = read_lines(child.stderr.take().expect("stderr"));
        let mut stdout_pipe = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout_pipe.read_to_string(&mut out);
            out
        });
        let mut from = 0;
        for (marker, signal) in steps {
            from = wait_for(&mut child, &stderr.0, marker, from);
            // Let the stage's first poll go out, so the signal lands in the wait itself.
            std::thread::sleep(Duration::from_millis(300));
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
        let status = child.wait().expect("wait");
        stderr.1.join().expect("reader");
        let stderr = stderr.0.lock().expect("lock").clone();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().expect("stdout reader"),
            stderr,
        }
    }

    /// Starts tc-ami with a pseudo-terminal as its controlling terminal and stdin (stdout and
    /// stderr are pipes), waits until its stderr shows `marker` (a `[y/N]` prompt), then types
    /// Ctrl-C on the terminal: the terminal sends SIGINT, as for a person at the keyboard.
    /// Checks that the terminal's settings are as they were once tc-ami has exited.
    pub fn ctrl_c_at_prompt(mut self, args: &[&str], marker: &str) -> Run {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, slave) = unsafe {
            let (mut m, mut s) = (0, 0);
            let r = libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            );
            assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
            (
                std::fs::File::from(OwnedFd::from_raw_fd(m)),
                OwnedFd::from_raw_fd(s),
            )
        };
        let termios = |fd: i32| unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(fd, &mut t), 0);
            (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc)
        };
        let before = termios(master.as_raw_fd());
        // The child leads a session of its own whose controlling terminal is the pty, so
        // Ctrl-C typed on it signals the child's process group.
        unsafe {
            self.cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = self
            .cmd
            .args(args)
            .stdin(Stdio::from(slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tc-ami");
        // Drop the parent's copy of the slave (moved into Stdio), and drain what the terminal
        // echoes.
        let mut echo = master.try_clone().expect("dup master");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while matches!(echo.read(&mut buf), Ok(n) if n > 0) {}
        });
        let stderr = read_lines(child.stderr.take().expect("stderr"));
        let mut stdout_pipe = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout_pipe.read_to_string(&mut out);
            out
        });
        wait_for(&mut child, &stderr.0, marker, 0);
        std::thread::sleep(Duration::from_millis(300));
        master.write_all(&[0x03]).expect("type Ctrl-C");
        // At once: a prompt that waited for Enter would never end.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "tc-ami did not stop at Ctrl-C; stderr:\n{}",
                    stderr.0.lock().expect("lock")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        stderr.1.join().expect("reader");
        assert_eq!(
            termios(master.as_raw_fd()),
            before,
            "the terminal's settings changed"
        );
        let stderr = stderr.0.lock().expect("lock").clone();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().expect("stdout reader"),
            stderr,
        }
    }
}

type Lines = (Arc<Mutex<String>>, std::thread::JoinHandle<()>);

/// Collects what a pipe says as it comes (a prompt ends without a newline).
fn read_lines(mut pipe: impl Read + Send + 'static) -> Lines {
    let text = Arc::new(Mutex::new(String::new()));
    let reader = {
        let text = text.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                bytes.extend_from_slice(&buf[..n]);
                *text.lock().unwrap_or_else(|e| e.into_inner()) =
                    String::from_utf8_lossy(&bytes).into_owned();
            }
        })
    };
    (text, reader)
}

/// Waits until `text` shows `marker` after byte `from`; returns where it ends.
fn wait_for(child: &mut Child, text: &Mutex<String>, marker: &str, from: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let t = text.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = t.get(from..).and_then(|rest| rest.find(marker)) {
                return from + at + marker.len();
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let said = text.lock().unwrap_or_else(|e| e.into_inner()).clone();
            panic!("tc-ami never reached {marker:?}; stderr:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The last line tc-ami wrote to stderr: its error message.
    pub fn error_line(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("tc-ami:"))
            .unwrap_or_default()
            .to_string()
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Neither stdout nor stderr contains `secret`.
    pub fn assert_hides(&self, secret: &str) -> &Self {
        assert!(!secret.is_empty());
        assert!(
            !self.stdout.contains(secret),
            "secret in stdout: {}",
            self.stdout
        );
        assert!(
            !self.stderr.contains(secret),
            "secret in stderr: {}",
            self.stderr
        );
        self
    }
}

pub const POOL: &str = "proj-servo/win2016";

/// The sandbox's realistic pools (two regions, two launch configs per region for win2016).
pub fn seed_pools() -> Value {
    sandbox_seed()["workerPools"].clone()
}

pub struct World {
    pub ec2: Ec2,
    pub tc: Tc,
    pub cfg: Config,
}

impl World {
    /// moto, the emulator with the sandbox's pools, and the worker type `w` for
    /// proj-servo/win2016 built in us-west-2 and copied to us-east-1.
    pub fn new() -> World {
        World::with_tc(Tc::start(seed_pools()))
    }

    /// The same, with this emulator.
    pub fn with_tc(tc: Tc) -> World {
        let ec2 = Ec2::start(json!({}));
        let cfg = Config::new();
        cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
        World { ec2, tc, cfg }
    }

    pub fn tc_ami(&self) -> TcAmi {
        TcAmi::new(&self.ec2, Some(&self.tc), &self.cfg)
    }

    /// Builds an image; returns region → id.
    pub fn build(&self) -> Value {
        let run = self.tc_ami().run(&["--json", "build", "-w", "w"]);
        run.assert_code(0);
        run.json()["images"].clone()
    }

    /// The pool as the emulator holds it: active launch configs, and all of them.
    pub fn pool(&self) -> (Vec<Value>, Vec<Value>) {
        let state = self.tc.state();
        let lcs = state["workerPools"][POOL]["launchConfigs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let active = lcs
            .iter()
            .filter(|l| l["isArchived"] == false)
            .cloned()
            .collect();
        (active, lcs)
    }

    /// The active launch config of the pool in `region`.
    pub fn live_launch_config(&self, region: &str) -> Value {
        let (active, _) = self.pool();
        active
            .into_iter()
            .find(|lc| lc["configuration"]["region"] == region)
            .unwrap_or_else(|| panic!("no active launch config in {region}"))
    }

    /// The image the pool's active launch config in `region` runs.
    pub fn live_image(&self, region: &str) -> String {
        image_of(&self.live_launch_config(region)).to_string()
    }

    /// The images the pool's active launch configs run, region → id.
    pub fn live_images(&self) -> std::collections::BTreeMap<String, String> {
        self.pool()
            .0
            .iter()
            .map(|lc| {
                let region = lc["configuration"]["region"].as_str().unwrap_or_default();
                (region.to_string(), image_of(lc).to_string())
            })
            .collect()
    }

    /// The deployments of `w`'s history, as `tc-ami --json history -w w` shows them.
    pub fn history(&self) -> Vec<Value> {
        let run = self.tc_ami().run(&["--json", "history", "-w", "w"]);
        run.assert_code(0);
        run.json()["deployments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The pool as a push changes it: its definition but `lastModified`, and each launch
    /// config's id and whether it is archived (not their `lastModified`, which every update
    /// sets). An update that posts the pool back unchanged, as the scope check before a push
    /// does, leaves it as it was.
    pub fn pool_shape(&self) -> Value {
        let (_, lcs) = self.pool();
        let mut definition = self.tc.state()["workerPools"][POOL]["definition"].clone();
        if let Some(d) = definition.as_object_mut() {
            d.remove("lastModified");
        }
        // Sorted: an update reorders the rows it keeps.
        let mut lcs: Vec<(String, bool)> = lcs
            .iter()
            .map(|lc| {
                (
                    lc["launchConfigId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    lc["isArchived"] == true,
                )
            })
            .collect();
        lcs.sort();
        json!({"definition": definition, "launchConfigs": lcs})
    }

    /// The reads of the pool [`POOL`] (`workerPool`) so far, from the request log.
    pub fn pool_reads(&self) -> usize {
        let tail = format!("/worker-pool/{POOL}");
        self.tc
            .requests()
            .iter()
            .filter(|r| r["apiMethod"] == "workerPool")
            .filter_map(|r| r["path"].as_str())
            .filter(|p| p.replace("%2F", "/").replace("%2f", "/").ends_with(&tail))
            .count()
    }

    /// The `updateWorkerPool` requests so far, those that change nothing included.
    pub fn updates(&self) -> usize {
        self.tc.state()["requests"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|x| x["apiMethod"] == "updateWorkerPool")
                    .count()
            })
            .unwrap_or(0)
    }
}

/// An emulator launch config row's ImageId.
pub fn image_of(lc: &Value) -> &str {
    lc["configuration"]["launchConfig"]["ImageId"]
        .as_str()
        .unwrap()
}

/// An emulator launch config row's deploymentId.
pub fn deployment_id_of(lc: &Value) -> &str {
    lc["configuration"]["workerConfig"]["genericWorker"]["config"]["deploymentId"]
        .as_str()
        .unwrap()
}

/// A server on 127.0.0.1 that answers every request with 200 and a body that is not JSON, as a
/// misconfigured proxy or a wrong root URL would. Runs until the test process ends.
pub fn junk_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            let body = "<html>this is not the worker-manager API</html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

// ---- `tc-ami try`: the emulator's Queue and simulated workers, images checked in moto ----

/// The admin's scopes when the Queue is used: worker-manager, secrets and the Queue.
pub const TRY_ADMIN_SCOPES: [&str; 3] = ["worker-manager:*", "secrets:*", "queue:*"];

impl Tc {
    /// The emulator for `try`: the seed of [`Tc::start_with`] where the admin also holds the
    /// Queue's scopes and the history reader may try too; simulated workers start
    /// only on images that are available in `ec2` (and fail their tasks when the image carries
    /// `sandbox:task-outcome=failed`), and the simulated clock runs `time_scale` real seconds
    /// per simulated second (0.001: a 600 s task takes 0.6 s).
    pub fn start_simulating(pools: Value, ec2: &Ec2, time_scale: f64) -> Tc {
        let extra = json!({"clients": [
            {"clientId": ADMIN_ID, "accessToken": ADMIN_TOKEN, "scopes": TRY_ADMIN_SCOPES},
            // May try (pools, the Queue) and read the history, not record a deployment.
            {"clientId": HISTORY_READER_ID, "accessToken": HISTORY_READER_TOKEN, "scopes": [
                "worker-manager:*", "queue:*", "secrets:get:project/servo/*",
            ]},
        ]});
        let args = [
            "--ec2-url".to_string(),
            ec2.server.url.clone(),
            "--time-scale".into(),
            time_scale.to_string(),
        ];
        Tc {
            // try needs the Queue's scopes (TRY_ADMIN_SCOPES): the broad admin runs it.
            client: (ADMIN_ID, ADMIN_TOKEN),
            ..Tc::launch(Tc::seed(pools, extra), &args)
        }
    }

    /// The Queue's tasks as the simulation sees them (`GET /_emulator/tasks`).
    pub fn tasks(&self) -> Vec<Value> {
        self.server.get("/_emulator/tasks")["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every pool whose id has `-try-` in it: id → the definition as `workerPool` returns it.
    pub fn try_pools(&self) -> Vec<(String, Value)> {
        let state = self.state();
        state["workerPools"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(id, _)| id.contains("-try-"))
            .map(|(id, p)| (id.clone(), p["definition"].clone()))
            .collect()
    }

    /// The temporary pools (`-try-` in their id) that were created, from the request log: the
    /// emulator forgets a deleted pool once its workers are gone, which at a scaled clock can be
    /// before a test looks.
    pub fn created_try_pools(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r["apiMethod"] == "createWorkerPool" && r["status"] == 200)
            .filter_map(|r| {
                let path = r["path"].as_str()?.replace("%2F", "/").replace("%2f", "/");
                let id = path.split_once("/worker-pool/")?.1.to_string();
                id.contains("-try-").then_some(id)
            })
            .collect()
    }

    /// The temporary pools that still exist and are not deleted (worker-manager shows a deleted
    /// pool with `null-provider` until its workers are gone).
    pub fn live_try_pools(&self) -> Vec<String> {
        self.try_pools()
            .into_iter()
            .filter(|(_, def)| def["providerId"] != "null-provider")
            .map(|(id, _)| id)
            .collect()
    }
}

impl Ec2 {
    /// Tags an image behind tc-ami's back (boto3), as a test marks its tasks to fail.
    pub fn tag_image(&self, region: &str, image_id: &str, key: &str, value: &str) {
        let status = Command::new(python())
            .args(["-c", "import boto3, sys; boto3.client('ec2', region_name=sys.argv[2], endpoint_url=sys.argv[1], aws_access_key_id='x', aws_secret_access_key='x').create_tags(Resources=[sys.argv[3]], Tags=[{'Key': sys.argv[4], 'Value': sys.argv[5]}])"])
            .args([&self.server.url, region, image_id, key, value])
            .status()
            .expect("run boto3");
        assert!(status.success(), "tag {image_id}");
    }
}

impl World {
    /// As [`World::new`], with the emulator's Queue and workers ([`Tc::start_simulating`]).
    pub fn simulating(pools: Value) -> World {
        let ec2 = Ec2::start(json!({}));
        let tc = Tc::start_simulating(pools, &ec2, 0.001);
        let cfg = Config::new();
        cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
        World { ec2, tc, cfg }
    }
}
