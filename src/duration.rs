//! Durations as people write them in config files (`90m`, `1h30m`, `45s`, `365d`), and the one
//! formatter of durations and ages that every message and table uses.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("unknown unit `{c}` (use s, m, h or d)")),
        };
        if number.is_empty() {
            return Err(format!("unit `{c}` without a number"));
        }
        let n: u64 = number.parse().map_err(|_| "number too large".to_string())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or("duration too large")?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "`{number}` has no unit (use s, m, h or d, like 90m)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Units from the largest: `(seconds, suffix)`.
const DAYS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
const HOURS: [(u64, &str); 3] = [(3_600, "h"), (60, "m"), (1, "s")];

/// `secs` in at most `parts` consecutive units of `units`, from the largest that fits; units
/// that come to zero are left out (`1h1s`), and zero is `0s`.
fn compose(secs: u64, units: &[(u64, &str)], parts: usize) -> String {
    let first = units
        .iter()
        .position(|(size, _)| secs >= *size)
        .unwrap_or(units.len() - 1);
    let mut out = String::new();
    for (n, (size, unit)) in units.iter().enumerate().skip(first).take(parts) {
        let count = if n == first {
            secs / size
        } else {
            (secs % units[n - 1].0) / size
        };
        if count > 0 || n == first {
            out.push_str(&format!("{count}{unit}"));
        }
    }
    out
}

/// A duration exactly, as config files write it: `1h30m`, `45s`, `1h1s`; `2.5s` for short ones.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 && d.subsec_millis() != 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    compose(secs, &HOURS, HOURS.len())
}

/// How long something took, to a tenth of a second: `2.5s`, `1m3s`.
pub fn format_elapsed(d: Duration) -> String {
    format_duration(Duration::from_millis(d.as_millis() as u64 / 100 * 100))
}

/// An age as people read it, in its two largest units: `3d4h`, `5h12m`, `12m30s`, `42s`; `?`
/// when unknown.
pub fn format_age(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => compose(s, &DAYS, 2),
        None => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86400)));
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(format_duration(Duration::from_secs(3601)), "1h1s");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90 * 3600)), "90h");
        assert_eq!(format_elapsed(Duration::from_millis(2567)), "2.5s");
        assert_eq!(format_elapsed(Duration::from_millis(63_040)), "1m3s");
    }
}
