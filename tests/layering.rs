//! The layering that the README's "Layout" draws: no module under `src/` uses a module of a
//! later layer. Reads the README's table and every `crate::` (in `main.rs`, `tc_ami::`) path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module name → layer, from the first code block after `## Layout`: lines that start with
/// the layer's number, then its modules (`a, b, c`), then two spaces and what they are.
fn layers() -> BTreeMap<String, u32> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let layout = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a Layout section");
    let block = layout.split("```").nth(1).expect("a code block in Layout");
    let mut out = BTreeMap::new();
    for line in block.lines() {
        let Some((number, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(layer) = number.parse::<u32>() else {
            continue;
        };
        let modules = rest.trim_start().split("  ").next().unwrap_or_default();
        for module in modules.split(", ") {
            out.insert(module.trim().trim_end_matches(".rs").to_string(), layer);
        }
    }
    out
}

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

/// The top-level modules a line names through `prefix` (`crate::`, `tc_ami::`).
fn used_modules(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .map(|(at, _)| {
            line[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn no_module_uses_a_later_layer() {
    let layers = layers();
    assert!(layers.len() > 20, "the Layout table: {layers:?}");
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue;
        }
        let Some(&layer) = layers.get(&top) else {
            problems.push(format!(
                "{}: module `{top}` is not in README's Layout",
                rel.display()
            ));
            continue;
        };
        let prefix = if top == "main" { "tc_ami::" } else { "crate::" };
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in used_modules(line, prefix) {
                match layers.get(&used) {
                    Some(&l) if l <= layer => {}
                    Some(&l) => problems.push(format!(
                        "{}:{}: `{top}` (layer {layer}) uses `{used}` (layer {l})",
                        rel.display(),
                        n + 1
                    )),
                    None => problems.push(format!(
                        "{}:{}: `{used}` is not in README's Layout",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
