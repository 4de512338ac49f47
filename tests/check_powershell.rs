//! scripts/check-powershell: the project's first-boot.ps1 passes, and broken copies of it fail
//! with the line and column of the break.

mod support;

use std::process::Command;

use support::{python, repo_root};

struct Checked {
    code: i32,
    stdout: String,
}

fn check(file: &std::path::Path) -> Checked {
    let out = Command::new(python())
        .arg(repo_root().join("scripts/check-powershell"))
        .arg(file)
        .output()
        .expect("run scripts/check-powershell");
    Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn project_script() -> String {
    std::fs::read_to_string(repo_root().join("scripts/first-boot.ps1")).expect("read script")
}

/// The project's script with `from` replaced once by `to`, in a temporary file.
fn broken(dir: &tempfile::TempDir, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = project_script();
    assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once");
    let path = dir.path().join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    path
}

/// 1-based line and column of the first occurrence of `needle` in the project's script.
fn position_of(needle: &str) -> (usize, usize) {
    let text = project_script();
    let at = text.find(needle).expect("needle");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[test]
fn the_project_script_has_no_syntax_error() {
    let path = repo_root().join("scripts/first-boot.ps1");
    let r = check(&path);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("no syntax errors found"), "{}", r.stdout);
    // It uses a parameter with digits, which the grammar alone would misread.
    assert!(project_script().contains(" -Sha256 "));
}

#[test]
fn broken_copies_fail_naming_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");

    // A closing brace removed: the `if` block of the Git check is never closed.
    let needle = "{ throw 'git.exe missing after install' }";
    let path = broken(
        &dir,
        "brace.ps1",
        needle,
        "{ throw 'git.exe missing after install'",
    );
    let r = check(&path);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("syntax error: missing `}`"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .all(|l| l.starts_with(&format!("{}:", path.display()))),
        "{}",
        r.stdout
    );

    // An unterminated string on a known line: reported at that line.
    let needle = "Write-Step 'installing Python'";
    let (line, _) = position_of(needle);
    let path = broken(&dir, "string.ps1", needle, "Write-Step 'installing Python");
    let r = check(&path);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let first = r.stdout.lines().next().unwrap_or_default();
    let want = format!("{}:{line}:", path.display());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&want) && l.contains("syntax error")),
        "want an error at line {line}: {first}\n{}",
        r.stdout
    );

    // `"$TcVersion: …"` parses for the grammar but not for PowerShell.
    let needle = "\"installing Taskcluster $TcVersion (";
    let (line, column) = position_of(needle);
    let path = broken(
        &dir,
        "colon.ps1",
        needle,
        "\"installing Taskcluster $TcVersion: (",
    );
    let r = check(&path);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let col = column + "\"installing Taskcluster ".len();
    assert_eq!(
        r.stdout,
        format!(
            "{}:{line}:{col}: `$TcVersion:` in a double-quoted string is not valid PowerShell: write `${{TcVersion}}:`\n",
            path.display()
        )
    );

    // A missing closing parenthesis in a condition.
    let needle = "if ($succeeded) {";
    let (line, _) = position_of(needle);
    let path = broken(&dir, "paren.ps1", needle, "if ($succeeded {");
    let r = check(&path);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{}:{line}:", path.display())),
        "want an error at line {line}:\n{}",
        r.stdout
    );
}

#[test]
fn an_unreadable_file_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = check(&dir.path().join("missing.ps1"));
    assert_eq!(r.code, 2, "{}", r.stdout);
}
