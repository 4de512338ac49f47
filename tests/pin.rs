//! `tc-ami pin` and `pin --check` against a local HTTP server on 127.0.0.1 serving files of known
//! content: hashes filled in, a redirect followed, a 404 and a refused connection reported with
//! the script left byte-identical, a changed file when re-pinning, and every other byte of the
//! script unchanged. No EC2 or Taskcluster stand-in is needed.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{Config, POOL, Run};

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone)]
enum Route {
    File(Vec<u8>),
    Redirect(String),
}

/// A small HTTP/1.1 server on a free 127.0.0.1 port: GET path -> file, 302, or 404. Counts
/// requests per path. Stops when dropped.
struct FileServer {
    url: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, hits, stop) = (routes.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, hits) = (routes.clone(), hits.clone());
                    std::thread::spawn(move || serve(stream, &routes, &hits));
                }
            })
        };
        FileServer {
            url: format!("http://{addr}"),
            routes,
            hits,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn file(&self, path: &str, body: &[u8]) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), Route::File(body.to_vec()));
    }

    fn redirect(&self, path: &str, to: &str) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), Route::Redirect(to.into()));
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, hits: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.lock().unwrap().push(path.clone());
    let route = routes.lock().unwrap().get(&path).cloned();
    let (head, body) = match route {
        Some(Route::File(body)) => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            body,
        ),
        Some(Route::Redirect(to)) => (
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Vec::new(),
        ),
        None => (
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\n".to_string(),
            b"not found".to_vec(),
        ),
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The file contents the server holds (a few KiB each, different sizes).
fn content(name: &str, version: u8) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::new();
    for i in 0..(3000 + name.len() * 1000) {
        v.push(
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(name.as_bytes()[0])
                .wrapping_add(version),
        );
    }
    v
}

/// A first-boot script in the project's style, with CRLF endings and text around the block that
/// must survive byte for byte. `{A}`… are where the hashes go.
const TEMPLATE: &str = "# first-boot.ps1 for the pin test\r\n\
$Version = '1.2.3'\r\n\
$Base = 'BASE'\r\n\
$Files = \"$Base/files/v$Version\"\r\n\
$Pins = [ordered]@{\r\n\
\x20 # fetched through a variable\r\n\
\x20 Alpha = @{ Url = \"$Files/alpha.bin\"; Sha256 = '{A}' }\r\n\
\x20 Bravo = @{ Url = \"${Files}/bravo.bin\"; Sha256 = '{B}' }   # served through a 302\r\n\
\x20 Charlie = @{ Url = 'BASE/files/charlie.zip'; Sha256 = '{C}' }\r\n\
\x20 Delta = @{ Url = \"$Base/delta.msi\"; Sha256 = '{D}' }\r\n\
}\r\n\
$bad = @($Pins.Keys | Where-Object { $Pins[$_].Sha256 -notmatch '^[0-9a-fA-F]{64}$' })\r\n\
if ($bad) { throw \"No SHA-256 pinned for: $($bad -join ', ')\" }\r\n\
Write-Host 'Sha256 = ''''; not a pin'\r\n";

struct Setup {
    cfg: Config,
    server: FileServer,
}

impl Setup {
    /// The server with the four files (Bravo behind a redirect), and a config directory with the
    /// worker type `w` whose script has Alpha and Bravo unpinned, Charlie malformed, Delta pinned
    /// (upper case, as Get-FileHash prints it).
    fn new() -> Setup {
        let server = FileServer::start();
        server.file("/files/v1.2.3/alpha.bin", &content("alpha", 0));
        server.redirect("/files/v1.2.3/bravo.bin", "/storage/bravo-blob");
        server.file("/storage/bravo-blob", &content("bravo", 0));
        server.file("/files/charlie.zip", &content("charlie", 0));
        server.file("/delta.msi", &content("delta", 0));
        let cfg = Config::new();
        cfg.worker_type("w", POOL, "");
        let s = Setup { cfg, server };
        let delta = sha256(&content("delta", 0)).to_uppercase();
        s.cfg.write(
            "scripts/first-boot.ps1",
            &s.script("", "", "abc123", &delta),
        );
        s
    }

    fn script(&self, a: &str, b: &str, c: &str, d: &str) -> String {
        TEMPLATE
            .replace("BASE", &self.server.url)
            .replace("{A}", a)
            .replace("{B}", b)
            .replace("{C}", c)
            .replace("{D}", d)
    }

    fn script_path(&self) -> PathBuf {
        self.cfg.path().join("scripts/first-boot.ps1")
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(self.script_path()).expect("read script")
    }

    fn tc_ami(&self, args: &[&str]) -> Run {
        let home = tempfile::tempdir().expect("home");
        let out = Command::new(env!("CARGO_BIN_EXE_tc-ami"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .arg("-C")
            .arg(self.cfg.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tc-ami");
        Run::from(out)
    }
}

fn assert_one_line_error(run: &Run) -> String {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("tc-ami: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line; stderr:\n{}", run.stderr);
    assert_eq!(
        run.stderr.lines().last(),
        Some(errors[0]),
        "the error is last: {}",
        run.stderr
    );
    errors[0].to_string()
}

#[test]
fn pin_fills_in_every_hash_follows_redirects_and_changes_no_other_byte() {
    let s = Setup::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.script_path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let run = s.tc_ami(&["pin", "-w", "w"]);
    run.assert_code(0);

    let (a, b, c) = (
        sha256(&content("alpha", 0)),
        sha256(&content("bravo", 0)),
        sha256(&content("charlie", 0)),
    );
    let delta = sha256(&content("delta", 0)).to_uppercase();
    // Byte for byte: the template with the three hashes filled in, Delta's left as it was.
    let want = s.script(&a, &b, &c, &delta);
    assert_eq!(String::from_utf8(s.read()).unwrap(), want);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.script_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "permissions kept");
    }
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(s.cfg.path().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["first-boot.ps1"]);

    // The redirect was followed to the blob.
    let hits = s.server.hits();
    assert!(
        hits.contains(&"/files/v1.2.3/bravo.bin".to_string()),
        "{hits:?}"
    );
    assert!(
        hits.contains(&"/storage/bravo-blob".to_string()),
        "{hits:?}"
    );

    // The summary says what happened to each entry.
    assert!(
        run.stdout.contains(&format!("Alpha    pinned    {a}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("Charlie  pinned    {c} (was malformed: ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Delta    verified"), "{}", run.stdout);
    assert!(
        run.stdout.contains("first-boot.ps1: 3 pinned, 1 verified"),
        "{}",
        run.stdout
    );

    // Now everything is pinned: --check agrees, and pinning again writes nothing.
    s.tc_ami(&["pin", "--check"]).assert_code(0);
    let before = s.read();
    let again = s.tc_ami(&["--json", "pin"]);
    again.assert_code(0);
    assert_eq!(s.read(), before);
    let doc = again.json();
    assert_eq!(doc["written"], 0);
    let results: Vec<&str> = doc["scripts"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["verified"; 4]);
    assert_eq!(
        doc["scripts"][0]["entries"][1]["final_url"],
        format!("{}/storage/bravo-blob", s.server.url)
    );
}

#[test]
fn a_404_is_one_line_naming_entry_url_and_status_and_nothing_is_written() {
    let s = Setup::new();
    s.server.routes.lock().unwrap().remove("/files/charlie.zip");
    let before = s.read();
    let run = s.tc_ami(&["pin", "-w", "w"]);
    run.assert_code(1);
    let err = assert_one_line_error(&run);
    assert_eq!(
        err,
        format!(
            "tc-ami: error: 1 of 4 downloads failed: Charlie: cannot download {}/files/charlie.zip: HTTP 404 Not Found; nothing was written",
            s.server.url
        )
    );
    assert_eq!(s.read(), before, "the script is byte-identical");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_refused_connection_names_the_entry_and_nothing_is_written() {
    let s = Setup::new();
    // A port that was free a moment ago and has no listener now.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = String::from_utf8(s.read()).unwrap().replace(
        &format!("{}/delta.msi", "$Base"),
        &format!("http://{closed}/delta.msi"),
    );
    s.cfg.write("scripts/first-boot.ps1", &text);
    let run = s.tc_ami(&["pin"]);
    run.assert_code(1);
    let err = assert_one_line_error(&run);
    assert!(
        err.starts_with(&format!(
            "tc-ami: error: 1 of 4 downloads failed: Delta: cannot download http://{closed}/delta.msi: "
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(err.ends_with("; nothing was written"), "{err}");
    assert_eq!(s.read(), text.as_bytes());
}

#[test]
fn a_changed_file_is_reported_and_updated_only_with_force() {
    let s = Setup::new();
    s.tc_ami(&["pin", "-w", "w"]).assert_code(0);
    let pinned = s.read();
    let old = sha256(&content("alpha", 0));
    // The publisher replaces alpha.bin.
    s.server
        .file("/files/v1.2.3/alpha.bin", &content("alpha", 1));
    let new = sha256(&content("alpha", 1));

    let run = s.tc_ami(&["pin", "-w", "w"]);
    run.assert_code(1);
    let err = assert_one_line_error(&run);
    assert!(
        err.starts_with(&format!(
            "tc-ami: error: Alpha: the file changed: was {old}, now {new} ({}/files/v1.2.3/alpha.bin); ",
            s.server.url
        )),
        "{err}"
    );
    assert!(err.contains("`tc-ami pin --force`"), "{err}");
    assert!(err.ends_with("nothing was written"), "{err}");
    assert_eq!(s.read(), pinned, "without --force nothing changes");

    let run = s.tc_ami(&["pin", "-w", "w", "--force"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "tc-ami: Alpha: the file changed: was {old}, now {new}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("Alpha    updated   {new} (was {old})")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("first-boot.ps1: 0 pinned, 1 updated because the file changed, 3 verified"),
        "{}",
        run.stdout
    );
    let want = String::from_utf8(pinned).unwrap().replace(&old, &new);
    assert_eq!(String::from_utf8(s.read()).unwrap(), want);
}

#[test]
fn check_lists_unpinned_and_malformed_entries_and_downloads_nothing() {
    let s = Setup::new();
    // A second worker type sharing the script, and a third with its own, fully pinned script.
    s.cfg.worker_type("w2", POOL, "");
    let hash = sha256(b"x");
    s.cfg.write(
        "scripts/other.ps1",
        &format!("$Pins = @{{\n  Only = @{{ Url = 'https://example.invalid/x'; Sha256 = '{hash}' }}\n}}\n"),
    );
    s.cfg
        .worker_type("w3", POOL, "first_boot_script = \"scripts/other.ps1\"");
    let before = s.read();

    let run = s.tc_ami(&["pin", "--check"]);
    run.assert_code(1);
    let script = s.script_path();
    let other = s.cfg.path().join("scripts/other.ps1");
    let want = format!(
        "{} (w, w2): 3 of 4 downloads are not pinned:\n\
         \x20 Alpha    line 7: no SHA-256\n\
         \x20 Bravo    line 8: no SHA-256\n\
         \x20 Charlie  line 9: malformed SHA-256: 6 hex digits, not 64\n\
         {} (w3): all 1 downloads are pinned\n\
         fill them in with `tc-ami pin` (or by hand, from the publisher's checksums)\n",
        script.display(),
        other.display()
    );
    assert_eq!(run.stdout, want);
    assert!(
        s.server.hits().is_empty(),
        "--check downloads nothing: {:?}",
        s.server.hits()
    );
    assert_eq!(s.read(), before);

    let run = s.tc_ami(&["--json", "pin", "--check", "-w", "w"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    let states: Vec<(&str, &str)> = doc["scripts"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("Alpha", "unpinned"),
            ("Bravo", "unpinned"),
            ("Charlie", "malformed"),
            ("Delta", "pinned")
        ]
    );
    assert_eq!(
        doc["scripts"][0]["entries"][0]["url"],
        format!("{}/files/v1.2.3/alpha.bin", s.server.url)
    );

    s.tc_ami(&["pin", "--check", "-w", "w3"]).assert_code(0);
}

#[test]
fn a_url_that_cannot_be_resolved_is_an_error_naming_the_entry() {
    let s = Setup::new();
    let text = String::from_utf8(s.read())
        .unwrap()
        .replace("\"$Base/delta.msi\"", "\"$Elsewhere/delta.msi\"");
    s.cfg.write("scripts/first-boot.ps1", &text);
    let run = s.tc_ami(&["pin", "-w", "w"]);
    run.assert_code(1);
    let err = assert_one_line_error(&run);
    assert!(
        err.contains("Delta (line 10): cannot resolve its Url \"$Elsewhere/delta.msi\": $Elsewhere is not set above $Pins"),
        "{err}"
    );
    assert!(err.ends_with("nothing was downloaded"), "{err}");
    assert!(s.server.hits().is_empty());
    assert_eq!(s.read(), text.as_bytes());
    // --check reports it too.
    let run = s.tc_ami(&["pin", "--check"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("Delta    line 10: cannot resolve its Url"),
        "{}",
        run.stdout
    );
}

#[test]
fn pinning_that_would_exceed_the_user_data_limit_writes_nothing() {
    let s = Setup::new();
    let head = format!(
        "$Pins = [ordered]@{{\n  Alpha = @{{ Url = '{}/files/v1.2.3/alpha.bin'; Sha256 = '' }}\n}}\n",
        s.server.url
    );
    // 16,384 bytes of user data less the 25 of the <powershell> tags; 10 bytes to spare, and
    // the hash needs 64.
    let filler = 16 * 1024 - 25 - 10 - head.len();
    let text = format!("{head}#{}\n", "x".repeat(filler - 2));
    s.cfg.write("scripts/first-boot.ps1", &text);
    let run = s.tc_ami(&["pin", "-w", "w"]);
    run.assert_code(1);
    let err = assert_one_line_error(&run);
    assert!(
        err.contains("after pinning, user data is 16438 bytes, over EC2's limit"),
        "{err}"
    );
    assert!(err.ends_with("nothing was written"), "{err}");
    assert_eq!(s.read(), text.as_bytes());
}
