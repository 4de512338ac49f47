//! `tc-ami completions SHELL` and `tc-ami man`: generated from the same clap definitions as the
//! parser, so every command `tc-ami --help` lists must be in them. Needs no stand-in.

use std::process::{Command, Output};

fn tc_ami(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tc-ami"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run tc-ami");
    assert!(
        out.status.success(),
        "tc-ami {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(tc_ami(args).stdout).expect("utf-8")
}

/// The commands `tc-ami --help` lists (its "Commands:" block), without `help`.
fn commands() -> Vec<String> {
    let help = stdout(&["--help"]);
    let block = help.split("Commands:\n").nth(1).expect("a Commands: block");
    let names: Vec<String> = block
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    for expected in ["base-ami", "deploy", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    names
}

#[test]
fn every_shell_completes_every_command() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = stdout(&["completions", shell]);
        for command in &commands {
            assert!(
                script.contains(command.as_str()),
                "{shell}: no `{command}` in the script"
            );
        }
        // Options of a command are there too.
        assert!(script.contains("worker-type"), "{shell}");
        assert!(script.contains("update-file"), "{shell}");
    }
    let zsh = stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef tc-ami"), "{}", &zsh[..40]);
    let fish = stdout(&["completions", "fish"]);
    assert!(fish.contains("complete -c tc-ami"), "fish registers tc-ami");
    let ps = stdout(&["completions", "powershell"]);
    assert!(ps.contains("Register-ArgumentCompleter"), "powershell");
    assert!(ps.contains("'tc-ami'"), "powershell registers tc-ami");
}

/// Runs bash's completion function on a command line, as a Tab would.
fn bash_complete(script: &str, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source /dev/stdin <<'EOF'\n{script}\nEOF\n\
         complete -p tc-ami >/dev/null || exit 3\n\
         COMP_WORDS=({}); COMP_CWORD={cword}\n\
         _tc_ami tc-ami '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words_q.join(" "),
        words[cword]
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The bash script really completes: commands, a command's options (also after a hyphenated
/// command name), and a command's values.
#[test]
fn bash_completes_commands_options_and_values() {
    let script = stdout(&["completions", "bash"]);
    assert_eq!(bash_complete(&script, &["tc-ami", "dep"]), vec!["deploy"]);
    let all = bash_complete(&script, &["tc-ami", ""]);
    for command in commands() {
        assert!(all.contains(&command), "{command} not offered: {all:?}");
    }
    let deploy = bash_complete(&script, &["tc-ami", "deploy", "--"]);
    for option in [
        "--worker-type",
        "--image",
        "--dry-run",
        "--managed-ok",
        "--update-file",
    ] {
        assert!(deploy.iter().any(|o| o == option), "{option}: {deploy:?}");
    }
    let base_ami = bash_complete(&script, &["tc-ami", "base-ami", "--"]);
    for option in [
        "--worker-type",
        "--list",
        "--pattern",
        "--region",
        "--owner",
    ] {
        assert!(
            base_ami.iter().any(|o| o == option),
            "{option}: {base_ami:?}"
        );
    }
    assert_eq!(
        bash_complete(&script, &["tc-ami", "completions", "p"]),
        vec!["powershell"]
    );
}

#[test]
fn the_man_page_is_roff_with_every_command() {
    let page = stdout(&["man"]);
    assert!(
        page.lines().any(|l| l.starts_with(".TH tc-ami 1")),
        "{page}"
    );
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(page.contains(&format!(".SH {section}\n")), "{section}");
    }
    // roff escapes hyphens: tc\-ami\-deploy(1).
    for command in commands() {
        let reference = format!("tc\\-ami\\-{}(1)", command.replace('-', "\\-"));
        assert!(page.contains(&reference), "{reference} missing");
    }
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stdout(&["man", "--dir", &dir.path().display().to_string()]);
    let commands = commands();
    assert!(
        out.starts_with(&format!("wrote {} man pages: ", commands.len() + 1)),
        "{out}"
    );
    let top = std::fs::read_to_string(dir.path().join("tc-ami.1")).expect("tc-ami.1");
    assert!(top.contains(".TH tc-ami 1"));
    for command in &commands {
        let path = dir.path().join(format!("tc-ami-{command}.1"));
        let page = std::fs::read_to_string(&path).expect("a page per command");
        assert!(page.contains(&format!(".TH tc-ami-{command} 1")), "{page}");
        assert!(page.contains(".SH SYNOPSIS"), "{command}");
    }
    let deploy = std::fs::read_to_string(dir.path().join("tc-ami-deploy.1")).expect("deploy");
    assert!(deploy.contains("\\-\\-dry\\-run"), "deploy's options");
    assert!(deploy.contains("\\-\\-update\\-file"), "deploy's options");
}

#[test]
fn json_wraps_the_script_and_the_page() {
    let doc: serde_json::Value =
        serde_json::from_slice(&tc_ami(&["--json", "completions", "fish"]).stdout).expect("json");
    assert_eq!(doc["shell"], "fish");
    assert!(
        doc["script"]
            .as_str()
            .expect("script")
            .contains("complete -c tc-ami")
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&tc_ami(&["--json", "man"]).stdout).expect("json");
    assert_eq!(doc["page"], "tc-ami.1");
    assert!(doc["roff"].as_str().expect("roff").contains(".TH tc-ami 1"));
}
