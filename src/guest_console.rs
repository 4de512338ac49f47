//! The guest's console protocol (PRODUCT.md, "The guest's console protocol"), read from EC2's
//! GetConsoleOutput: first-boot.ps1 writes `TC-AMI-STEP: <text>` when it starts a stage and
//! `TC-AMI-FAILED: <reason>` when it gives up (and then does not shut down). Exactly these
//! prefixes at the start of a line count; lines may end with CRLF; anything else on the console
//! (EC2Launch's boot lines, the password block, event-log errors) is noise. EC2 keeps only the
//! latest 64 KB, so early steps can drop off the front: [`merge_steps`] keeps what was seen.

/// A stage starts: `TC-AMI-STEP: installing Git`.
pub const STEP_PREFIX: &str = "TC-AMI-STEP: ";
/// The script gave up: `TC-AMI-FAILED: No SHA-256 pinned for: Nssm`.
pub const FAILED_PREFIX: &str = "TC-AMI-FAILED: ";

/// What one read of the console says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsoleReport {
    /// The `TC-AMI-STEP` texts, in the order written.
    pub steps: Vec<String>,
    /// The reason of the latest `TC-AMI-FAILED` line, if any.
    pub failed: Option<String>,
}

/// Reads the protocol lines of a console output (decoded text). Control characters in their
/// text (a terminal's escape sequences) are dropped, tabs become spaces: the text is printed.
pub fn parse_console(output: &str) -> ConsoleReport {
    let mut report = ConsoleReport::default();
    for line in output.split('\n') {
        let line = line.trim_end_matches('\r');
        if let Some(text) = line.strip_prefix(STEP_PREFIX) {
            let text = printable(text);
            if !text.is_empty() {
                report.steps.push(text);
            }
        } else if let Some(reason) = line.strip_prefix(FAILED_PREFIX) {
            let reason = printable(reason);
            report.failed = Some(if reason.is_empty() {
                "(no reason given)".to_string()
            } else {
                reason
            });
        }
    }
    report
}

fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Adds to `known` (the steps seen so far, oldest first) the steps of a new read that are new,
/// and returns them. A read holds the latest 64 KB of the console, so its first steps may be
/// fewer than those seen before: the new ones are what follows the longest end of `known`
/// that the read starts with.
pub fn merge_steps(known: &mut Vec<String>, read: &[String]) -> Vec<String> {
    let overlap = (0..=known.len().min(read.len()))
        .rev()
        .find(|&k| known[known.len() - k..] == read[..k])
        .unwrap_or(0);
    let new = read[overlap..].to_vec();
    known.extend(new.iter().cloned());
    new
}

/// The progress line of a step: `first-boot.ps1: installing Git`.
pub fn step_line(step: &str) -> String {
    format!("first-boot.ps1: {step}")
}

/// Whether the guest's reason says downloads have no SHA-256 pinned (first-boot.ps1's
/// `No SHA-256 pinned for: …`, or `Refusing to download … : no SHA-256 pinned`).
pub fn says_unpinned(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("no sha-256 pinned")
}

/// The error of a build whose guest gave up: `the guest reported: <reason>`, the last step it
/// announced, and for unpinned downloads what to run.
pub fn failed_text(reason: &str, steps: &[String], worker_type: &str) -> String {
    let mut text = format!("the guest reported: {reason}");
    if let Some(last) = steps.last() {
        text.push_str(&format!(" (during its step: {last})"));
    }
    if says_unpinned(reason) {
        text.push_str(&format!(
            "; run `tc-ami pin -w {worker_type}` to fill in the SHA-256 of every download, review and commit the script, then build again"
        ));
    }
    text
}

/// What a build that timed out waiting for the shutdown can say about how far the guest got.
pub fn progress_text(steps: &[String]) -> String {
    match steps.last() {
        Some(last) => format!(
            "its last step on the console ({} seen): {last}",
            steps.len()
        ),
        None => {
            "it wrote no TC-AMI-STEP line on the console (did the script run at all?)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn reads_steps_and_failure_among_boot_noise_with_crlf() {
        let console = "2024/06/12 07:00:00Z: AMI-ID: ami-0123\r\n\
            2024/06/12 07:00:01Z: Message: Windows is Ready to use\r\n\
            TC-AMI-STEP: checking the pinned downloads\r\n\
            some output TC-AMI-STEP: not at the start of the line\r\n\
            TC-AMI-STEP: configuring Windows: indexing, Defender\r\n\
            TC-AMI-STEP:missing space\r\n\
            tc-ami-step: wrong case\r\n\
            TC-AMI-FAILED: No SHA-256 pinned for: Nssm, Gst. Fill in $Pins\r\n";
        let r = parse_console(console);
        assert_eq!(
            r.steps,
            s(&[
                "checking the pinned downloads",
                "configuring Windows: indexing, Defender"
            ])
        );
        assert_eq!(
            r.failed.as_deref(),
            Some("No SHA-256 pinned for: Nssm, Gst. Fill in $Pins")
        );
    }

    #[test]
    fn lf_endings_an_unterminated_last_line_and_nothing_at_all() {
        let r = parse_console("TC-AMI-STEP: a\nTC-AMI-STEP: b");
        assert_eq!(r.steps, s(&["a", "b"]));
        assert_eq!(r.failed, None);
        assert_eq!(parse_console(""), ConsoleReport::default());
        assert_eq!(
            parse_console("TC-AMI-FAILED: \r\n").failed.as_deref(),
            Some("(no reason given)")
        );
        assert_eq!(
            parse_console("TC-AMI-STEP: in\u{1b}[31mstalling\tGit \r\n").steps,
            s(&["in[31mstalling Git"])
        );
        // The latest failure wins.
        assert_eq!(
            parse_console("TC-AMI-FAILED: one\nTC-AMI-FAILED: two\n")
                .failed
                .as_deref(),
            Some("two")
        );
    }

    #[test]
    fn merging_reads_keeps_what_dropped_off_the_front() {
        let mut known = vec![];
        assert_eq!(merge_steps(&mut known, &s(&["a", "b"])), s(&["a", "b"]));
        // The same read again: nothing new.
        assert!(merge_steps(&mut known, &s(&["a", "b"])).is_empty());
        assert_eq!(merge_steps(&mut known, &s(&["a", "b", "c"])), s(&["c"]));
        // "a" and "b" fell out of the 64 KB window.
        assert_eq!(merge_steps(&mut known, &s(&["c", "d"])), s(&["d"]));
        assert!(merge_steps(&mut known, &s(&["d"])).is_empty());
        assert_eq!(known, s(&["a", "b", "c", "d"]));
        // A step the script announces twice (a retry) counts twice.
        let mut known = s(&["x"]);
        assert_eq!(merge_steps(&mut known, &s(&["x", "x"])), s(&["x"]));
        // Nothing in common: all of the read is new.
        let mut known = s(&["x"]);
        assert_eq!(merge_steps(&mut known, &s(&["y"])), s(&["y"]));
        assert!(merge_steps(&mut known, &[]).is_empty());
    }

    #[test]
    fn the_failure_names_the_reason_the_last_step_and_for_pins_the_command() {
        let steps = s(&["checking the pinned downloads"]);
        assert_eq!(
            failed_text(
                "No SHA-256 pinned for: GenericWorker, Nssm. Fill in $Pins (see FIRST-BOOT.md).",
                &steps,
                "servo-win2016"
            ),
            "the guest reported: No SHA-256 pinned for: GenericWorker, Nssm. Fill in $Pins (see FIRST-BOOT.md). (during its step: checking the pinned downloads); run `tc-ami pin -w servo-win2016` to fill in the SHA-256 of every download, review and commit the script, then build again"
        );
        assert_eq!(
            failed_text("git.exe missing after install", &[], "w"),
            "the guest reported: git.exe missing after install"
        );
        assert!(says_unpinned(
            "Refusing to download https://example.org/x.msi : no SHA-256 pinned"
        ));
        assert!(!says_unpinned(
            "SHA-256 mismatch for https://example.org/x.msi"
        ));
    }

    #[test]
    fn progress_says_how_far_the_guest_got() {
        assert_eq!(
            progress_text(&s(&["a", "installing Git"])),
            "its last step on the console (2 seen): installing Git"
        );
        assert!(progress_text(&[]).contains("no TC-AMI-STEP line"));
        assert_eq!(
            step_line("installing Git"),
            "first-boot.ps1: installing Git"
        );
    }
}
