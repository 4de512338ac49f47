//! No function under `src/` runs over 80 lines (from its signature to its closing brace, as
//! rustfmt lays it out): a long function hides its steps (issue 9). Tests are included.

use std::path::{Path, PathBuf};

const LIMIT: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The name of the function a line declares, and the line's indentation.
fn declared_fn(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let mut rest = trimmed;
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            Some(r) => r.split_once(')')?.1,
            None => r,
        };
        rest = rest.trim_start();
    }
    for qualifier in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    let name = rest.strip_prefix("fn ")?;
    let name: &str = &name[..name
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(name.len())];
    (!name.is_empty()).then_some((indent, name))
}

/// (lines, "file:line name") of every function with a body.
fn function_lengths(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("read source");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, name)) = declared_fn(line) else {
            continue;
        };
        // The signature ends at a line ending in `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len())
            .find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open..lines.len()).find(|&k| lines[k] == close) {
            out.push((end - i + 1, format!("{}:{} {name}", file.display(), i + 1)));
        }
    }
    out
}

#[test]
fn no_function_runs_over_80_lines() {
    let mut files = Vec::new();
    rust_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut long: Vec<String> = files
        .iter()
        .flat_map(|f| function_lengths(f))
        .filter(|(n, _)| *n > LIMIT)
        .map(|(n, at)| format!("{at}: {n} lines"))
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "functions over {LIMIT} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_measure_sees_functions() {
    // The check is only worth something if it finds functions: src/ has hundreds.
    let mut files = Vec::new();
    rust_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let count: usize = files.iter().map(|f| function_lengths(f).len()).sum();
    assert!(count > 200, "only {count} functions found under src/");
    assert_eq!(
        declared_fn("    pub(crate) async fn run_build("),
        Some(("    ", "run_build"))
    );
    assert_eq!(declared_fn("let f = fn_ptr;"), None);
}
