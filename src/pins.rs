//! The `$Pins` block of a first-boot script: every file the script downloads, with its URL and
//! SHA-256.
//!
//! ```powershell
//! $Tc = "https://github.com/taskcluster/taskcluster/releases/download/v$TcVersion"
//! $Pins = [ordered]@{
//!   GenericWorker = @{ Url = "$Tc/generic-worker-multiuser-windows-amd64"; Sha256 = '' }
//! }
//! ```
//!
//! Pure: [`parse`] reads the script's text into [`Pin`]s, each with the exact byte range of its
//! `Sha256` value; [`Pin::state`] checks a hash the way the script itself does
//! (`^[0-9a-fA-F]{64}$`); [`rewrite`] replaces only those bytes. URLs may use variables set
//! above the block by simple assignments (`$Name = '…'` or `"…"`, one per line).

use std::collections::HashMap;
use std::ops::Range;

use thiserror::Error;

/// One download of the script.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    /// The hashtable key: `GenericWorker`.
    pub name: String,
    /// 1-based line of the entry in the script.
    pub line: usize,
    /// The URL as written, between its quotes.
    pub url_text: String,
    /// The URL with its variables substituted, or why that cannot be done.
    pub url: Result<String, String>,
    /// The hash as written, between its quotes (may be empty or malformed).
    pub sha256: String,
    /// Where that text sits in the script: replacing these bytes changes the hash and nothing else.
    pub sha256_range: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// 64 hex digits.
    Pinned,
    /// `Sha256 = ''`.
    Unpinned,
    /// Anything else; the text says what is wrong.
    Malformed(String),
}

impl PinState {
    pub fn label(&self) -> &'static str {
        match self {
            PinState::Pinned => "pinned",
            PinState::Unpinned => "unpinned",
            PinState::Malformed(_) => "malformed",
        }
    }
}

impl Pin {
    pub fn state(&self) -> PinState {
        hash_state(&self.sha256)
    }
}

/// Whether `text` is a SHA-256 as the script accepts it: exactly 64 hex digits, either case.
pub fn hash_state(text: &str) -> PinState {
    if text.is_empty() {
        return PinState::Unpinned;
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return PinState::Malformed(format!("{c:?} is not a hex digit"));
    }
    if text.len() != 64 {
        return PinState::Malformed(format!("{} hex digits, not 64", text.len()));
    }
    PinState::Pinned
}

/// The `$Pins` block of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct PinBlock {
    /// 1-based line of `$Pins = [ordered]@{`.
    pub line: usize,
    pub pins: Vec<Pin>,
}

impl PinBlock {
    /// The entries the script would refuse to download: empty or malformed hashes.
    pub fn not_pinned(&self) -> impl Iterator<Item = &Pin> {
        self.pins.iter().filter(|p| p.state() != PinState::Pinned)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct PinsError {
    pub line: usize,
    pub message: String,
}

const ENTRY_SHAPE: &str = "`Name = @{ Url = '...'; Sha256 = '...' }` on one line";

/// Reads the script's `$Pins` block. `Ok(None)`: the script has none.
pub fn parse(script: &str) -> Result<Option<PinBlock>, PinsError> {
    let lines = lines_with_offsets(script);
    let Some(start) = lines.iter().position(|(_, l)| is_pins_line(l)) else {
        if let Some(i) = lines.iter().position(|(_, l)| assigns_pins(l)) {
            return Err(PinsError {
                line: i + 1,
                message: "`$Pins =` must be followed by `[ordered]@{` (or `@{`) and nothing else on its line; one entry per line below it".into(),
            });
        }
        return Ok(None);
    };
    let vars = variables(&lines[..start]);
    let mut pins: Vec<Pin> = Vec::new();
    for (i, (offset, text)) in lines.iter().enumerate().skip(start + 1) {
        let line = i + 1;
        let trimmed = text.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('}') {
            if !is_blank_or_comment(rest) {
                return Err(PinsError {
                    line,
                    message: "the `}` closing $Pins must stand alone on its line".into(),
                });
            }
            return Ok(Some(PinBlock {
                line: start + 1,
                pins,
            }));
        }
        let base = offset + (text.len() - trimmed.len());
        let pin = parse_entry(trimmed, base, line, &vars)
            .map_err(|message| PinsError { line, message })?;
        if let Some(other) = pins.iter().find(|p| p.name.eq_ignore_ascii_case(&pin.name)) {
            return Err(PinsError {
                line,
                message: format!(
                    "{} is listed twice (also on line {}); PowerShell hashtable keys ignore case",
                    pin.name, other.line
                ),
            });
        }
        pins.push(pin);
    }
    Err(PinsError {
        line: start + 1,
        message: "the $Pins block has no closing `}` line".into(),
    })
}

/// The script with the given byte ranges replaced. Ranges come from [`Pin::sha256_range`]: they
/// must not overlap; every byte outside them is kept as it is.
pub fn rewrite(script: &str, edits: &[(Range<usize>, &str)]) -> String {
    let mut sorted: Vec<&(Range<usize>, &str)> = edits.iter().collect();
    sorted.sort_by_key(|(r, _)| r.start);
    let mut out =
        String::with_capacity(script.len() + edits.iter().map(|(_, t)| t.len()).sum::<usize>());
    let mut at = 0;
    for (range, text) in sorted {
        assert!(
            range.start >= at && range.end <= script.len(),
            "overlapping or out-of-bounds edit {range:?}"
        );
        out.push_str(&script[at..range.start]);
        out.push_str(text);
        at = range.end;
    }
    out.push_str(&script[at..]);
    out
}

/// The names of the entries the script would refuse to download (empty or malformed hash).
/// Empty when the script has no `$Pins` block or it cannot be read (see [`build_warning`]).
pub fn unpinned_entries(script: &str) -> Vec<String> {
    match parse(script) {
        Ok(Some(block)) => block.not_pinned().map(|p| p.name.clone()).collect(),
        _ => Vec::new(),
    }
}

/// The one-line warning `build` prints before launching when the script pins nothing for
/// `names`; `None` when every download is pinned.
pub fn unpinned_warning(worker_type: &str, script_path: &str, names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "warning: {script_path} has no valid SHA-256 for {} download{}: {}; the guest will refuse to run (`TC-AMI-FAILED: No SHA-256 pinned for: ...`): run `tc-ami pin -w {worker_type}` first",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    })
}

/// Everything `build` should warn about in a script's pins, as one line: unpinned entries, or a
/// `$Pins` block tc-ami cannot read. `None` when all is well (or the script pins nothing).
pub fn build_warning(worker_type: &str, script_path: &str, script: &str) -> Option<String> {
    match parse(script) {
        Ok(Some(block)) => {
            let names: Vec<String> = block.not_pinned().map(|p| p.name.clone()).collect();
            unpinned_warning(worker_type, script_path, &names)
        }
        Ok(None) => None,
        Err(e) => Some(format!(
            "warning: cannot read the $Pins block of {script_path}: {e}; `tc-ami pin --check -w {worker_type}` cannot check it either"
        )),
    }
}

// ---------------------------------------------------------------------------------------------

/// Each line's byte offset and its text without the line ending.
fn lines_with_offsets(script: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for raw in script.split_inclusive('\n') {
        let text = raw.strip_suffix('\n').unwrap_or(raw);
        let text = text.strip_suffix('\r').unwrap_or(text);
        out.push((offset, text));
        offset += raw.len();
    }
    out
}

fn is_blank_or_comment(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s.starts_with('#')
}

/// `$Pins` (any case) followed by `=` (not `==`, which PowerShell has no use for anyway).
fn assigns_pins(line: &str) -> bool {
    let t = line.trim_start();
    t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("$pins"))
        && t[5..].trim_start().starts_with('=')
}

/// `$Pins = [ordered]@{` or `$Pins = @{`, optionally followed by a comment.
fn is_pins_line(line: &str) -> bool {
    if !assigns_pins(line) {
        return false;
    }
    let t = line.trim_start();
    let rest = t[5..].trim_start()[1..].trim_start();
    let rest = match rest.get(..9) {
        Some(p) if p.eq_ignore_ascii_case("[ordered]") => rest[9..].trim_start(),
        _ => rest,
    };
    rest.strip_prefix("@{").is_some_and(is_blank_or_comment)
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Simple assignments `$Name = '...'` / `"..."` (optionally followed by a comment), in order;
/// a later one replaces an earlier one. Keys are lower case: PowerShell names ignore case.
fn variables(lines: &[(usize, &str)]) -> HashMap<String, Result<String, String>> {
    let mut vars = HashMap::new();
    for (_, text) in lines {
        let t = text.trim_start();
        let Some(rest) = t.strip_prefix('$') else {
            continue;
        };
        let b = rest.as_bytes();
        let n = b.iter().take_while(|c| is_ident_char(**c)).count();
        if n == 0 {
            continue;
        }
        let name = &rest[..n];
        let after = rest[n..].trim_start();
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        if value.starts_with('=') {
            continue;
        }
        let value = value.trim_start();
        let Ok((lit, used)) = string_literal(value, 0) else {
            continue;
        };
        if !is_blank_or_comment(&value[used..]) {
            continue;
        }
        let resolved = lit.value(&vars);
        vars.insert(name.to_ascii_lowercase(), resolved);
    }
    vars
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quote {
    Single,
    Double,
}

/// A quoted string in the source: its kind and its content (between the quotes, as written).
#[derive(Debug)]
struct Literal<'a> {
    quote: Quote,
    content: &'a str,
    /// Byte range of `content` relative to the text it was read from.
    range: Range<usize>,
}

impl Literal<'_> {
    /// The string's value: `''` in single quotes is `'`; double quotes expand `$Name`, `${Name}`,
    /// `""` and the backtick escapes of `$`, `"`, `'` and `` ` ``. Anything else that PowerShell
    /// would evaluate (`$(...)`, `$env:X`, `` `n ``) cannot be resolved here.
    fn value(&self, vars: &HashMap<String, Result<String, String>>) -> Result<String, String> {
        match self.quote {
            Quote::Single => Ok(self.content.replace("''", "'")),
            Quote::Double => expand(self.content, vars),
        }
    }
}

/// Reads a `'...'` or `"..."` literal starting at byte `at` of `text`; returns it and the byte
/// just past its closing quote.
fn string_literal(text: &str, at: usize) -> Result<(Literal<'_>, usize), String> {
    let b = text.as_bytes();
    let quote = match b.get(at) {
        Some(b'\'') => Quote::Single,
        Some(b'"') => Quote::Double,
        _ => return Err("expected a quoted string".into()),
    };
    let q = b[at];
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'`' if quote == Quote::Double => i += 2,
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    let range = at + 1..i;
                    return Ok((
                        Literal {
                            quote,
                            content: &text[range.clone()],
                            range,
                        },
                        i + 1,
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Err("a quoted string is not closed on this line".into())
}

fn expand(content: &str, vars: &HashMap<String, Result<String, String>>) -> Result<String, String> {
    let b = content.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut literal_from = 0;
    while i < b.len() {
        match b[i] {
            b'`' => {
                out.push_str(&content[literal_from..i]);
                match b.get(i + 1) {
                    Some(c @ (b'$' | b'"' | b'\'' | b'`')) => out.push(*c as char),
                    Some(_) => {
                        let esc = content[i..].chars().take(2).collect::<String>();
                        return Err(format!(
                            "it uses the escape {esc}, which tc-ami does not evaluate"
                        ));
                    }
                    None => return Err("it ends with a lone backtick".into()),
                }
                i += 2;
                literal_from = i;
            }
            b'"' if b.get(i + 1) == Some(&b'"') => {
                out.push_str(&content[literal_from..i]);
                out.push('"');
                i += 2;
                literal_from = i;
            }
            b'$' => {
                let Some((name, end)) = variable_at(content, i)? else {
                    // A `$` that starts no variable is itself.
                    i += 1;
                    continue;
                };
                out.push_str(&content[literal_from..i]);
                match vars.get(&name.to_ascii_lowercase()) {
                    Some(Ok(v)) => out.push_str(v),
                    Some(Err(why)) => return Err(format!("${name} cannot be resolved: {why}")),
                    None => {
                        return Err(format!(
                            "${name} is not set above $Pins by a simple assignment (`${name} = '...'`)"
                        ));
                    }
                }
                i = end;
                literal_from = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&content[literal_from..]);
    Ok(out)
}

/// The variable a `$` at `i` starts, and where it ends; None when the `$` starts none.
fn variable_at(content: &str, i: usize) -> Result<Option<(&str, usize)>, String> {
    let b = content.as_bytes();
    Ok(Some(match b.get(i + 1) {
        Some(b'{') => match content[i + 2..].find('}') {
            Some(n) => (&content[i + 2..i + 2 + n], i + 3 + n),
            None => return Err("`${` without its `}`".into()),
        },
        Some(b'(') => {
            return Err("it uses a subexpression `$(...)`, which tc-ami does not evaluate".into());
        }
        Some(c) if is_ident_char(*c) => {
            let n = b[i + 1..].iter().take_while(|c| is_ident_char(**c)).count();
            if b.get(i + 1 + n) == Some(&b':') {
                let m = b[i + 2 + n..]
                    .iter()
                    .take_while(|c| is_ident_char(**c))
                    .count();
                let name = &content[i + 1..i + 1 + n];
                return Err(if m == 0 {
                    // PowerShell itself refuses `"$Name: …"` (a drive-qualified name).
                    format!(
                        "PowerShell cannot parse `${name}:` in a double-quoted string: write `${{{name}}}:`"
                    )
                } else {
                    format!(
                        "it uses ${}, which tc-ami does not evaluate",
                        &content[i + 1..i + 2 + n + m]
                    )
                });
            }
            (&content[i + 1..i + 1 + n], i + 1 + n)
        }
        _ => return Ok(None),
    }))
}

/// Skips spaces and tabs from `at`.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while at < b.len() && (b[at] == b' ' || b[at] == b'\t') {
        at += 1;
    }
    at
}

fn expect(b: &[u8], at: usize, token: &str) -> Result<usize, String> {
    if b[at..].starts_with(token.as_bytes()) {
        Ok(at + token.len())
    } else {
        Err(format!(
            "expected `{token}`: write the entry as {ENTRY_SHAPE}"
        ))
    }
}

/// A bare word (`Name`, `Url`) at `at`, or a quoted one; returns it and the byte past it.
fn key(text: &str, at: usize) -> Result<(String, usize), String> {
    let b = text.as_bytes();
    if matches!(b.get(at), Some(b'\'' | b'"')) {
        let (lit, end) = string_literal(text, at)?;
        return Ok((lit.value(&HashMap::new())?, end));
    }
    let n = b[at..]
        .iter()
        .take_while(|c| is_ident_char(**c) || **c == b'-')
        .count();
    if n == 0 {
        return Err(format!("expected a name: write the entry as {ENTRY_SHAPE}"));
    }
    Ok((text[at..at + n].to_string(), at + n))
}

/// One entry line (leading blanks removed), `base` being its byte offset in the script.
fn parse_entry(
    text: &str,
    base: usize,
    line: usize,
    vars: &HashMap<String, Result<String, String>>,
) -> Result<Pin, String> {
    let b = text.as_bytes();
    let (name, at) = key(text, 0)?;
    let at = skip_ws(b, at);
    let at = expect(b, at, "=")?;
    let at = skip_ws(b, at);
    let mut at = expect(b, at, "@{")?;
    let mut url: Option<(String, Result<String, String>)> = None;
    let mut sha: Option<(String, Range<usize>)> = None;
    loop {
        at = skip_ws(b, at);
        if b.get(at) == Some(&b'}') {
            at += 1;
            break;
        }
        let (k, after) = key(text, at)?;
        at = skip_ws(b, after);
        at = expect(b, at, "=")?;
        at = skip_ws(b, at);
        let (lit, after) = string_literal(text, at)
            .map_err(|e| format!("{name}: the value of {k} must be a quoted string ({e})"))?;
        if k.eq_ignore_ascii_case("url") {
            url = Some((lit.content.to_string(), lit.value(vars)));
        } else if k.eq_ignore_ascii_case("sha256") {
            let range = base + lit.range.start..base + lit.range.end;
            sha = Some((lit.content.to_string(), range));
        }
        at = skip_ws(b, after);
        match b.get(at) {
            Some(b';') => at += 1,
            Some(b'}') => {}
            _ => {
                return Err(format!(
                    "expected `;` or `}}` after {k}: write the entry as {ENTRY_SHAPE}"
                ));
            }
        }
    }
    if !is_blank_or_comment(&text[at..]) {
        return Err(format!(
            "unexpected text after the entry: write it as {ENTRY_SHAPE}"
        ));
    }
    let Some((url_text, url)) = url else {
        return Err(format!("{name} has no Url"));
    };
    let Some((sha256, sha256_range)) = sha else {
        return Err(format!(
            "{name} has no Sha256 (write `Sha256 = ''` and run `tc-ami pin`)"
        ));
    };
    Ok(Pin {
        name,
        line,
        url_text,
        url,
        sha256,
        sha256_range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "68c9986a8dcc0214d909aa1f31bee9fb5461bb839edca996a75b08ddffc1483f";
    const HASH_B: &str = "1B2B58FB516495FEB70353AA91DA230BE0A2B4AA01ACC3BC047EE1FE4846BC4E";

    fn script() -> String {
        format!(
            "# header\r\n$TcVersion = '99.1.0'\r\n$Tc = \"https://example.org/download/v$TcVersion\"\r\n\
             $Deps = 'https://example.org/deps'\r\n$Pins = [ordered]@{{\r\n\
             \x20 GenericWorker = @{{ Url = \"$Tc/generic-worker\"; Sha256 = '' }}\r\n\
             \x20 # a comment\r\n\
             \x20 DotNet = @{{ Url = 'https://example.org/ndp48.exe'; Sha256 = '{HASH_A}' }}\r\n\
             \x20 Git = @{{ Url = \"${{Deps}}/git.exe\"; Sha256 = '{HASH_B}' }}  # upper case\r\n\
             \x20 Bad = @{{ Url = 'https://example.org/x'; Sha256 = 'abc' }}\r\n\
             }}\r\n$Sha256 = 'not part of the block'\r\n"
        )
    }

    #[test]
    fn parses_entries_with_exact_hash_ranges() {
        let s = script();
        let block = parse(&s).unwrap().unwrap();
        assert_eq!(block.line, 5);
        let names: Vec<&str> = block.pins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["GenericWorker", "DotNet", "Git", "Bad"]);
        for p in &block.pins {
            assert_eq!(&s[p.sha256_range.clone()], p.sha256, "{}", p.name);
        }
        assert_eq!(block.pins[0].line, 6);
        assert_eq!(block.pins[0].sha256, "");
        assert_eq!(block.pins[1].line, 8);
        assert_eq!(block.pins[1].sha256, HASH_A);
        // The empty range sits between the quotes.
        let r = block.pins[0].sha256_range.clone();
        assert_eq!(&s[r.start - 1..r.end + 1], "''");
    }

    #[test]
    fn resolves_variables_in_urls() {
        let block = parse(&script()).unwrap().unwrap();
        let urls: Vec<_> = block.pins.iter().map(|p| p.url.clone()).collect();
        assert_eq!(
            urls,
            [
                Ok("https://example.org/download/v99.1.0/generic-worker".to_string()),
                Ok("https://example.org/ndp48.exe".to_string()),
                Ok("https://example.org/deps/git.exe".to_string()),
                Ok("https://example.org/x".to_string()),
            ]
        );
        assert_eq!(block.pins[0].url_text, "$Tc/generic-worker");
    }

    #[test]
    fn states() {
        let block = parse(&script()).unwrap().unwrap();
        let states: Vec<_> = block.pins.iter().map(Pin::state).collect();
        assert_eq!(
            states,
            [
                PinState::Unpinned,
                PinState::Pinned,
                PinState::Pinned,
                PinState::Malformed("3 hex digits, not 64".into())
            ]
        );
        assert_eq!(
            hash_state(&format!("{}g", &HASH_A[..63])),
            PinState::Malformed("'g' is not a hex digit".into())
        );
        assert_eq!(
            hash_state(&format!(" {}", &HASH_A[1..])),
            PinState::Malformed("' ' is not a hex digit".into())
        );
        assert_eq!(
            hash_state(&format!("{HASH_A}0")),
            PinState::Malformed("65 hex digits, not 64".into())
        );
        assert_eq!(unpinned_entries(&script()), ["GenericWorker", "Bad"]);
    }

    #[test]
    fn rewrite_changes_only_the_hash_bytes() {
        let s = script();
        let block = parse(&s).unwrap().unwrap();
        let new = "ab".repeat(32);
        let edits: Vec<(Range<usize>, &str)> = block
            .pins
            .iter()
            .rev() // order of the edits does not matter
            .map(|p| (p.sha256_range.clone(), new.as_str()))
            .collect();
        let out = rewrite(&s, &edits);
        // Byte for byte: the text between the ranges is unchanged, the ranges hold the new hash.
        let mut at_old = 0;
        let mut at_new = 0;
        for p in &block.pins {
            let keep = p.sha256_range.start - at_old;
            assert_eq!(
                out.as_bytes()[at_new..at_new + keep],
                s.as_bytes()[at_old..p.sha256_range.start]
            );
            at_new += keep;
            assert_eq!(&out[at_new..at_new + 64], new);
            at_new += 64;
            at_old = p.sha256_range.end;
        }
        assert_eq!(out.as_bytes()[at_new..], s.as_bytes()[at_old..]);
        // And the result parses to the same entries, all pinned.
        let again = parse(&out).unwrap().unwrap();
        assert!(again.pins.iter().all(|p| p.sha256 == new));
        assert_eq!(again.not_pinned().count(), 0);
        assert_eq!(rewrite(&s, &[]), s);
    }

    #[test]
    fn project_script_parses() {
        let text = include_str!("../scripts/first-boot.ps1");
        let block = parse(text).unwrap().expect("a $Pins block");
        assert!(block.pins.len() >= 10, "{block:?}");
        for p in &block.pins {
            let url = p.url.as_ref().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(url.starts_with("https://"), "{}: {url}", p.name);
            assert!(!url.contains('$'), "{}: {url}", p.name);
            assert_eq!(&text[p.sha256_range.clone()], p.sha256);
        }
        let git = block
            .pins
            .iter()
            .find(|p| p.name == "GenericWorker")
            .unwrap();
        assert!(
            git.url.as_ref().unwrap().contains("/releases/download/v"),
            "{git:?}"
        );
    }

    #[test]
    fn no_block_is_none_and_no_warning() {
        assert_eq!(parse("Write-Host 'hi'\r\nshutdown /s\r\n").unwrap(), None);
        assert_eq!(build_warning("w", "s.ps1", "shutdown /s\n"), None);
        assert!(unpinned_entries("shutdown /s\n").is_empty());
    }

    #[test]
    fn unresolvable_urls_say_why() {
        let s = "$A = \"$(Get-Date)\"\n$Pins = @{\n\
                 X = @{ Url = \"$Nope/x\"; Sha256 = '' }\n\
                 Y = @{ Url = \"$env:TEMP/y\"; Sha256 = '' }\n\
                 Z = @{ Url = \"$A/z\"; Sha256 = '' }\n\
                 W = @{ Url = \"a`nb\"; Sha256 = '' }\n\
                 V = @{ Url = \"`$5 and \"\"q\"\" and $ alone\"; Sha256 = '' }\n\
                 U = @{ Url = \"$A: b\"; Sha256 = '' }\n}\n";
        let block = parse(s).unwrap().unwrap();
        let urls: Vec<_> = block.pins.iter().map(|p| p.url.clone()).collect();
        assert_eq!(
            urls,
            [
                Err("$Nope is not set above $Pins by a simple assignment (`$Nope = '...'`)".into()),
                Err("it uses $env:TEMP, which tc-ami does not evaluate".into()),
                Err("$A cannot be resolved: it uses a subexpression `$(...)`, which tc-ami does not evaluate".into()),
                Err("it uses the escape `n, which tc-ami does not evaluate".into()),
                Ok("$5 and \"q\" and $ alone".into()),
                Err("PowerShell cannot parse `$A:` in a double-quoted string: write `${A}:`".into()),
            ]
        );
    }

    #[test]
    fn later_assignments_win_and_names_ignore_case() {
        let s = "$base = 'https://a'\n$BASE = 'https://b'\n$Pins = [Ordered] @{ # all downloads\nX = @{ Sha256 = ''; Url = \"$Base/x\" }\n  }  # end\n$base = 'https://c'\n";
        let block = parse(s).unwrap().unwrap();
        assert_eq!(block.pins[0].url, Ok("https://b/x".to_string()));
    }

    #[test]
    fn malformed_blocks_are_errors_with_their_line() {
        let cases = [
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u'; Sha256 = '' }\n",
                1,
                "no closing `}`",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u'\n  Sha256 = '' }\n}\n",
                2,
                "expected `;` or `}`",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u' }\n}\n",
                2,
                "X has no Sha256",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Sha256 = '' }\n}\n",
                2,
                "X has no Url",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = $u; Sha256 = '' }\n}\n",
                2,
                "Url must be a quoted string",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u'; Sha256 = '' }\nx = @{ Url = 'v'; Sha256 = '' }\n}\n",
                3,
                "listed twice (also on line 2)",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u'; Sha256 = '' } extra\n}\n",
                2,
                "unexpected text",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u; Sha256 = '' }\n}\n",
                2,
                "a quoted string is not closed on this line",
            ),
            (
                "$Pins = [ordered]@{\nX = @{ Url = 'u'; Sha256 = '' }\n} + $More\n",
                3,
                "must stand alone",
            ),
            ("$Pins = Get-Pins\n", 1, "must be followed by `[ordered]@{`"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        assert!(
            build_warning("w", "s.ps1", cases[0].0)
                .unwrap()
                .contains("cannot read the $Pins block of s.ps1: line 1")
        );
    }

    #[test]
    fn warning_names_every_unpinned_entry_and_the_command() {
        let w = build_warning("servo-win2016", "scripts/first-boot.ps1", &script()).unwrap();
        assert_eq!(
            w,
            "warning: scripts/first-boot.ps1 has no valid SHA-256 for 2 downloads: GenericWorker, Bad; the guest will refuse to run (`TC-AMI-FAILED: No SHA-256 pinned for: ...`): run `tc-ami pin -w servo-win2016` first"
        );
        assert!(!w.contains('\n'));
        assert_eq!(unpinned_warning("w", "s", &[]), None);
        assert!(
            unpinned_warning("w", "s", &["A".into()])
                .unwrap()
                .contains("1 download: A;")
        );
    }
}
