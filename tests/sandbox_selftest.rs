//! The stand-ins' own tests (pytest, sandbox/tests/): the EC2 sandbox driven by boto3, and
//! the Taskcluster emulator driven by the official Python `taskcluster` client with real Hawk
//! signatures and by raw requests. Run here so that `cargo test` is the one test command.

mod support;

use std::process::Command;

#[test]
fn sandbox_python_tests_pass() {
    let out = Command::new(support::python())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "sandbox/tests",
        ])
        .current_dir(support::repo_root())
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
        .unwrap_or("");
    eprintln!("pytest: {summary}");
    assert!(out.status.success(), "pytest failed:\n{text}");
}
