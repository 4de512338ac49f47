//! `tc-ami pin [-w W] [--check] [--force]`: fill in the SHA-256 of every download the first-boot
//! script pins, or (`--check`) list the ones that are not pinned.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::config_dir::{list_worker_types, load_worker_type};
use crate::download::{self, Downloaded};
use crate::pins::{self, Pin, PinBlock, PinState};
use crate::shell::Shell;
use crate::user_data::user_data_for;

/// Downloads at a time.
const PARALLEL: usize = 4;

/// A first-boot script and the worker types that use it.
struct Script {
    path: PathBuf,
    worker_types: Vec<String>,
    text: String,
    block: PinBlock,
}

impl Script {
    fn shown(&self) -> String {
        format!("{} ({})", self.path.display(), self.worker_types.join(", "))
    }
}

pub async fn run(ctx: &Ctx, worker_type: Option<&str>, check: bool, force: bool) -> Result<u8> {
    let scripts = scripts(&ctx.config_dir, worker_type)?;
    if check {
        return Ok(report_check(ctx, &scripts));
    }
    pin(ctx, &scripts, force).await
}

/// The scripts of `worker_type`, or of every worker type, each once.
fn scripts(config_dir: &Path, worker_type: Option<&str>) -> Result<Vec<Script>> {
    let names = match worker_type {
        Some(w) => vec![w.to_string()],
        None => {
            let all = list_worker_types(config_dir);
            if all.is_empty() {
                bail!(
                    "no worker types in {}: add worker-types/<W>.toml, or pass -C DIR to pick another config directory",
                    config_dir.join("worker-types").display()
                );
            }
            all
        }
    };
    let mut by_path: Vec<(PathBuf, PathBuf, Vec<String>)> = Vec::new();
    for name in names {
        let wt = load_worker_type(config_dir, &name)?;
        let key = std::fs::canonicalize(&wt.first_boot_script)
            .unwrap_or_else(|_| wt.first_boot_script.clone());
        match by_path.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, users)) => users.push(name),
            None => by_path.push((key, wt.first_boot_script.clone(), vec![name])),
        }
    }
    by_path
        .into_iter()
        .map(|(_, path, worker_types)| {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the first-boot script {} (first_boot_script of {})",
                    path.display(),
                    worker_types.join(", ")
                )
            })?;
            let block = pins::parse(&text)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
                .ok_or_else(|| {
                    anyhow!(
                        "{} has no `$Pins = [ordered]@{{ ... }}` block, so tc-ami cannot see what it downloads (see scripts/FIRST-BOOT.md, \"Pins\")",
                        path.display()
                    )
                })?;
            Ok(Script {
                path,
                worker_types,
                text,
                block,
            })
        })
        .collect()
}

fn url_problem(p: &Pin) -> Option<String> {
    p.url
        .as_ref()
        .err()
        .map(|why| format!("cannot resolve its Url \"{}\": {why}", p.url_text))
}

/// The entries of a script that are not pinned, or whose URL does not resolve, and why.
fn check_problems(s: &Script) -> Vec<(&Pin, String)> {
    s.block
        .pins
        .iter()
        .filter_map(|p| {
            let mut why = Vec::new();
            match p.state() {
                PinState::Pinned => {}
                PinState::Unpinned => why.push("no SHA-256".to_string()),
                PinState::Malformed(m) => why.push(format!("malformed SHA-256: {m}")),
            }
            why.extend(url_problem(p));
            (!why.is_empty()).then(|| (p, why.join("; ")))
        })
        .collect()
}

/// An entry as `--check --json` reports it.
fn check_entry(p: &Pin) -> Value {
    let state = p.state();
    let mut e = json!({
        "name": p.name,
        "line": p.line,
        "url": p.url.as_ref().ok(),
        "sha256": p.sha256,
        "state": state.label(),
    });
    if let PinState::Malformed(m) = &state {
        e["problem"] = json!(m);
    }
    if let Some(u) = url_problem(p) {
        e["url_problem"] = json!(u);
    }
    e
}

/// `--check`: 0 when every entry of every script is pinned and its URL resolves, else 1.
fn report_check(ctx: &Ctx, scripts: &[Script]) -> u8 {
    let mut human = Vec::new();
    let mut docs = Vec::new();
    let mut all_ok = true;
    for s in scripts {
        let problems = check_problems(s);
        let ok = problems.is_empty();
        all_ok &= ok;
        if ok {
            human.push(format!(
                "{}: all {} downloads are pinned",
                s.shown(),
                s.block.pins.len()
            ));
        } else {
            human.push(format!(
                "{}: {} of {} downloads are not pinned:",
                s.shown(),
                problems.len(),
                s.block.pins.len()
            ));
            let width = problems
                .iter()
                .map(|(p, _)| p.name.len())
                .max()
                .unwrap_or(0);
            for (p, why) in &problems {
                human.push(format!("  {:width$}  line {}: {why}", p.name, p.line));
            }
        }
        let entries: Vec<Value> = s.block.pins.iter().map(check_entry).collect();
        docs.push(json!({
            "script": s.path.display().to_string(),
            "worker_types": s.worker_types,
            "ok": ok,
            "entries": entries,
        }));
    }
    if !all_ok {
        human.push(
            "fill them in with `tc-ami pin` (or by hand, from the publisher's checksums)".into(),
        );
    }
    ctx.shell
        .result(&human.join("\n"), &json!({"ok": all_ok, "scripts": docs}));
    u8::from(!all_ok)
}

/// What became of one entry.
enum Outcome {
    /// It had no valid hash; now it has the download's.
    Filled,
    /// Its hash matches the download.
    Verified,
    /// Its hash differs from the download.
    Changed { was: String },
}

async fn pin(ctx: &Ctx, scripts: &[Script], force: bool) -> Result<u8> {
    // Every URL must resolve before anything is downloaded.
    let unresolved: Vec<String> = scripts
        .iter()
        .flat_map(|s| {
            s.block.pins.iter().filter_map(move |p| {
                url_problem(p)
                    .map(|why| format!("{}: {} (line {}): {why}", s.path.display(), p.name, p.line))
            })
        })
        .collect();
    if !unresolved.is_empty() {
        bail!("{}; nothing was downloaded", unresolved.join("; "));
    }

    // Each distinct URL once, in script order, under the first name that uses it.
    let mut urls: Vec<(String, String)> = Vec::new();
    for p in scripts.iter().flat_map(|s| &s.block.pins) {
        let url = p.url.clone().unwrap_or_default();
        if !urls.iter().any(|(_, u)| *u == url) {
            urls.push((p.name.clone(), url));
        }
    }
    let got = download_all(&ctx.shell, &urls).await?;

    let mut human = Vec::new();
    let mut docs = Vec::new();
    let mut refused = Vec::new();
    let mut writes: Vec<(&Script, String)> = Vec::new();
    let mut summary = Vec::new();
    for s in scripts {
        let judged = judge_script(ctx, s, &got, force)?;
        human.extend(judged.human);
        refused.extend(judged.refused);
        summary.push(judged.summary);
        docs.push(judged.doc);
        if let Some(new_text) = judged.new_text {
            writes.push((s, new_text));
        }
    }
    if !refused.is_empty() {
        ctx.shell.note(&human.join("\n"));
        bail!(
            "{}; the publisher may have replaced the file, or the URL serves whatever is newest: check the new file (and the publisher's checksum) before accepting it with `tc-ami pin --force`; nothing was written",
            refused.join("; ")
        );
    }
    for (s, new_text) in &writes {
        crate::files::write_in_place(
            &s.path,
            &s.text,
            new_text,
            "while tc-ami was downloading; nothing was written: run `tc-ami pin` again",
        )?;
    }
    if writes.is_empty() {
        summary.push("nothing to write: every hash matches its download".into());
    }
    human.extend(summary);
    let written = writes.len();
    ctx.shell.result(
        &human.join("\n"),
        &json!({"scripts": docs, "written": written}),
    );
    Ok(0)
}

/// One script's entries against their downloads.
struct JudgedScript {
    human: Vec<String>,
    /// The entries whose file changed, when they are not to be written.
    refused: Vec<String>,
    summary: String,
    doc: Value,
    /// The script with its new hashes, when any changes.
    new_text: Option<String>,
}

fn judge_script(
    ctx: &Ctx,
    s: &Script,
    got: &BTreeMap<String, Downloaded>,
    force: bool,
) -> Result<JudgedScript> {
    let mut edits: Vec<(Range<usize>, &str)> = Vec::new();
    let mut entries = Vec::new();
    let mut refused = Vec::new();
    let (mut filled, mut verified, mut changed) = (0, 0, 0);
    let mut human = vec![format!("{}:", s.shown())];
    let width = s.block.pins.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &s.block.pins {
        let url = p.url.as_deref().unwrap_or_default();
        let d = &got[url];
        let outcome = match p.state() {
            PinState::Pinned if p.sha256.eq_ignore_ascii_case(&d.sha256) => Outcome::Verified,
            PinState::Pinned => Outcome::Changed {
                was: p.sha256.clone(),
            },
            _ => Outcome::Filled,
        };
        match &outcome {
            Outcome::Verified => verified += 1,
            Outcome::Filled => filled += 1,
            Outcome::Changed { .. } => changed += 1,
        }
        let judged = judge_entry(ctx, p, d, &outcome, force);
        if judged.write {
            edits.push((p.sha256_range.clone(), d.sha256.as_str()));
        }
        refused.extend(judged.refused);
        human.push(format!("  {:width$}  {}", p.name, judged.human));
        entries.push(judged.doc);
    }
    let new_text = pins::rewrite(&s.text, &edits);
    if let Err(e) = user_data_for(&new_text, &s.path.display().to_string()) {
        bail!("after pinning, {e}; nothing was written");
    }
    let mut counts = vec![format!("{filled} pinned")];
    if changed > 0 {
        counts.push(if force {
            format!("{changed} updated because the file changed")
        } else {
            format!("{changed} changed, not written")
        });
    }
    counts.push(format!("{verified} verified"));
    Ok(JudgedScript {
        human,
        refused,
        summary: format!("{}: {}", s.path.display(), counts.join(", ")),
        doc: json!({
            "script": s.path.display().to_string(),
            "worker_types": s.worker_types,
            "written": !edits.is_empty(),
            "entries": entries,
        }),
        new_text: (!edits.is_empty()).then_some(new_text),
    })
}

/// One entry against its download.
struct JudgedEntry {
    /// Its line in the table, after the name.
    human: String,
    doc: Value,
    /// Whether its hash is to be written.
    write: bool,
    refused: Option<String>,
}

fn judge_entry(ctx: &Ctx, p: &Pin, d: &Downloaded, outcome: &Outcome, force: bool) -> JudgedEntry {
    let url = p.url.as_deref().unwrap_or_default();
    let (label, note, write, refused) = match outcome {
        Outcome::Verified => ("verified", String::new(), false, None),
        Outcome::Filled => {
            let was = match p.state() {
                PinState::Malformed(m) => format!(" (was malformed: {m})"),
                _ => String::new(),
            };
            ("pinned", was, true, None)
        }
        Outcome::Changed { was } => {
            let line = format!(
                "{}: the file changed: was {was}, now {} ({url})",
                p.name, d.sha256
            );
            ctx.shell.note(&format!("tc-ami: {line}"));
            let label = if force { "updated" } else { "CHANGED" };
            (
                label,
                format!(" (was {was})"),
                force,
                (!force).then_some(line),
            )
        }
    };
    if let Some(warning) = looks_like_a_page(d) {
        ctx.shell.warn(&format!("{}: {warning}", p.name));
    }
    let mut doc = json!({
        "name": p.name,
        "line": p.line,
        "url": url,
        "final_url": d.final_url,
        "bytes": d.bytes,
        "sha256": d.sha256,
        "previous": p.sha256,
        "result": match outcome {
            Outcome::Filled => "pinned",
            Outcome::Verified => "verified",
            Outcome::Changed { .. } if force => "updated",
            Outcome::Changed { .. } => "changed",
        },
    });
    if let Some(ct) = &d.content_type {
        doc["content_type"] = json!(ct);
    }
    JudgedEntry {
        human: format!("{label:8}  {}{note}  {}", d.sha256, human_bytes(d.bytes)),
        doc,
        write,
        refused,
    }
}

/// A web page where a binary was expected: a moved download often answers 200 with HTML.
fn looks_like_a_page(d: &Downloaded) -> Option<String> {
    let ct = d.content_type.as_deref()?;
    ct.to_ascii_lowercase().starts_with("text/html").then(|| {
        format!(
            "{} was served as {ct}: check that it is the file and not a web page",
            d.final_url
        )
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The bar of a download whose size is known, and the spinner of one whose size is not.
fn bar_styles(width: usize) -> (ProgressStyle, ProgressStyle) {
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:{width}}} [{{bar:30}}] {{bytes:>10}}/{{total_bytes:10}} {{bytes_per_sec:>12}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let spinner = ProgressStyle::with_template(&format!(
        "{{prefix:{width}}} {{spinner}} {{bytes:>10}} {{bytes_per_sec:>12}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    (style, spinner)
}

/// Downloads one file into its SHA-256, showing it on `bar` (a line when finished, when stderr
/// is not a terminal).
async fn download_one(
    shell: &Shell,
    client: &reqwest::Client,
    bar: &ProgressBar,
    style: &ProgressStyle,
    name: &str,
    url: &str,
    terminal: bool,
) -> Result<Downloaded, download::DownloadError> {
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(150));
    let r = download::sha256_of(client, url, |total, done| {
        if let Some(t) = total
            && bar.length() != Some(t)
        {
            bar.set_length(t);
            bar.set_style(style.clone());
        }
        bar.set_position(done);
    })
    .await;
    match &r {
        Ok(d) => {
            bar.finish_with_message("ok");
            if !terminal {
                shell.note(&format!(
                    "tc-ami: {name}: {} {}",
                    human_bytes(d.bytes),
                    d.sha256
                ));
            }
        }
        Err(e) => {
            bar.abandon_with_message(format!("failed: {e}"));
            if !terminal {
                shell.note(&format!("tc-ami: {name}: failed: {e}"));
            }
        }
    }
    r
}

/// Downloads every `(name, url)`, a few at a time, with a progress bar per file on a terminal
/// (a line per finished file otherwise). All or nothing: any failure is an error naming every
/// failed entry.
async fn download_all(
    shell: &Shell,
    urls: &[(String, String)],
) -> Result<BTreeMap<String, Downloaded>> {
    let client = download::client()?;
    let terminal = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let width = urls.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let (style, spinner) = bar_styles(width);
    if !terminal {
        shell.note(&format!(
            "tc-ami: downloading {} file{}",
            urls.len(),
            if urls.len() == 1 { "" } else { "s" }
        ));
    }
    let results: Vec<(String, String, Result<Downloaded, download::DownloadError>)> =
        futures::stream::iter(urls.iter().cloned())
            .map(|(name, url)| {
                let client = &client;
                let multi = &multi;
                let (style, spinner) = (style.clone(), spinner.clone());
                async move {
                    let bar = multi.add(ProgressBar::no_length().with_style(spinner.clone()));
                    let r = download_one(shell, client, &bar, &style, &name, &url, terminal).await;
                    (name, url, r)
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
    let _ = multi.clear();
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    // Report failures in the order of the script.
    for (name, url) in urls {
        if let Some((_, _, r)) = results.iter().find(|(n, u, _)| n == name && u == url) {
            match r {
                Ok(d) => {
                    ok.insert(url.clone(), d.clone());
                }
                Err(e) => failed.push(format!("{name}: cannot download {url}: {e}")),
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} downloads failed: {}; nothing was written",
            failed.len(),
            urls.len(),
            failed.join("; ")
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(120 * 1024 * 1024), "120.0 MiB");
    }

    #[test]
    fn html_is_suspicious() {
        let d = |ct: Option<&str>| Downloaded {
            sha256: String::new(),
            bytes: 1,
            final_url: "https://x/y".into(),
            content_type: ct.map(str::to_string),
        };
        assert!(looks_like_a_page(&d(Some("text/html; charset=utf-8"))).is_some());
        assert!(looks_like_a_page(&d(Some("application/octet-stream"))).is_none());
        assert!(looks_like_a_page(&d(None)).is_none());
    }
}
