//! Cron patterns as the Hooks service reads a hook's `schedule`: cron-parser 5 (npm,
//! harrisiirak/cron-parser), which services/hooks/src/api.js runs on each pattern of
//! `createHook` and `updateHook` (and refuses the hook with the parser's message when it
//! throws), and nextdate.js then runs to find the next date.
//!
//! Pure: [`check`] accepts exactly what the parser accepts and returns its message otherwise.
//! Ported from the emulator's port (`sandbox/tc_emulator_lib/cron.py`, from cron-parser's
//! src/CronExpressionParser.ts and src/fields/CronField.ts): six fields with seconds first,
//! fewer fields filled from the left, the predefined names, month and day aliases, `L`, `#`,
//! lists, ranges, steps, the range and duplicate checks, and the one error nextdate.js can
//! still hit (`L` alone as a day of the week). `tests/hook.rs` compares the two ports.

/// The predefined names cron-parser expands.
const PREDEFINED: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
    ("@minutely", "0 * * * * *"),
    ("@secondly", "* * * * * *"),
    ("@weekdays", "0 0 0 * * 1-5"),
    ("@weekends", "0 0 0 * * 0,6"),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "dayOfMonth",
    "month",
    "dayOfWeek",
];

/// One field's rules: class name (in messages), range, whether `L` is allowed, and the extra
/// characters it takes besides `,*0-9/-`.
struct Rules {
    class: &'static str,
    min: i64,
    max: i64,
    last: bool,
    extra: &'static str,
}

fn rules(name: &str) -> Rules {
    let (class, min, max, last, extra) = match name {
        "second" => ("CronSecond", 0, 59, false, ""),
        "minute" => ("CronMinute", 0, 59, false, ""),
        "hour" => ("CronHour", 0, 23, false, ""),
        "dayOfMonth" => ("CronDayOfMonth", 1, 31, true, "?L"),
        "month" => ("CronMonth", 1, 12, false, ""),
        _ => ("CronDayOfWeek", 0, 7, true, "?L#"),
    };
    Rules {
        class,
        min,
        max,
        last,
        extra,
    }
}

/// A parsed value: a number, or a string holding `L`. `None` numbers are JavaScript's NaN.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(i64),
    Str(String),
}

fn js_num(n: Option<i64>) -> String {
    n.map_or("NaN".to_string(), |n| n.to_string())
}

/// JavaScript `parseInt(s, 10)`: leading whitespace, a sign, digits; NaN otherwise.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    // Beyond i64 the value is out of every range anyway.
    Some(sign * digits.parse::<i64>().unwrap_or(i64::MAX))
}

/// JavaScript unary `+s` for the characters a field can hold: digits only, else NaN.
fn to_number(s: &str) -> Option<i64> {
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        .then(|| s.parse::<i64>().unwrap_or(i64::MAX))
}

/// Checks one cron pattern; `Err` is cron-parser's message (the Hooks service answers 400
/// "`<message>` in `<pattern>`").
pub fn check(pattern: &str) -> Result<(), String> {
    let expression = PREDEFINED
        .iter()
        .find(|(k, _)| *k == pattern)
        .map_or(pattern, |(_, v)| v);
    let raw = raw_fields(expression)?;
    let mut values: Vec<Vec<Val>> = vec![Vec::new(); 6];
    for i in [0, 1, 2, 4, 3] {
        values[i] = parse_field(NAMES[i], &raw[i])?;
    }
    let dow = parse_nth_day(&raw[5])?;
    values[5] = parse_field("dayOfWeek", &dow)?;
    for (i, vals) in values.iter().enumerate() {
        validate(NAMES[i], vals)?;
    }
    // nextdate.js: a day of the week with `L` must start with a digit.
    if let Some(Val::Str(s)) = values[5]
        .iter()
        .find(|v| matches!(v, Val::Str(s) if !s.starts_with(|c: char| c.is_ascii_digit())))
    {
        return Err(format!("Invalid last weekday of the month expression: {s}"));
    }
    Ok(())
}

fn raw_fields(expression: &str) -> Result<Vec<String>, String> {
    let expression = if expression.is_empty() {
        "0 * * * * *"
    } else {
        expression
    };
    let trimmed = expression.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let mut atoms: Vec<String> = trimmed.split_whitespace().map(str::to_string).collect();
    if atoms.is_empty() {
        atoms.push(String::new());
    }
    if atoms.len() > 6 {
        return Err("Invalid cron expression, too many fields".into());
    }
    let defaults = ["*", "*", "*", "*", "*", "0"];
    let mut all: Vec<String> = defaults[atoms.len()..]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(atoms);
    Ok(all)
}

fn alias(word: &str) -> Result<String, String> {
    let w = word.to_ascii_lowercase();
    if let Some(i) = MONTHS.iter().position(|m| *m == w) {
        return Ok((i + 1).to_string());
    }
    match DAYS.iter().position(|d| *d == w) {
        Some(i) => Ok(i.to_string()),
        None => Err(format!("Validation error, cannot resolve alias \"{w}\"")),
    }
}

/// Replaces every run of three letters (left to right, as `/[a-zA-Z]{3}/g`) by its number.
fn replace_aliases(value: &str) -> Result<String, String> {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 3 <= chars.len() && chars[i..i + 3].iter().all(char::is_ascii_alphabetic) {
            out.push_str(&alias(&chars[i..i + 3].iter().collect::<String>())?);
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn parse_field(name: &str, value: &str) -> Result<Vec<Val>, String> {
    let r = rules(name);
    let value = if name == "month" || name == "dayOfWeek" {
        replace_aliases(value)?
    } else {
        value.to_string()
    };
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| ",*-/".contains(c) || c.is_ascii_digit() || r.extra.contains(c));
    if !valid {
        return Err(format!("Invalid characters, got value: {value}"));
    }
    let value = value.replace(['*', '?'], &format!("{}-{}", r.min, r.max));
    let mut stack = Vec::new();
    for atom in value.split(',') {
        if atom.is_empty() {
            return Err("Invalid list value format".into());
        }
        match parse_repeat(name, atom, &r)? {
            Repeat::List(list) => stack.extend(list.into_iter().map(Val::Num)),
            Repeat::One(text) if r.last && text.contains('L') => stack.push(Val::Str(text)),
            Repeat::One(text) => {
                let v = parse_int(&text).filter(|v| (r.min..=r.max).contains(v));
                let Some(v) = v else {
                    return Err(format!(
                        "Constraint error, got value {text} expected range {}-{}",
                        r.min, r.max
                    ));
                };
                stack.push(Val::Num(if name == "dayOfWeek" { v % 7 } else { v }));
            }
        }
    }
    Ok(stack)
}

enum Repeat {
    List(Vec<i64>),
    /// A single value as written (a number or a string with `L`).
    One(String),
}

fn parse_repeat(name: &str, val: &str, r: &Rules) -> Result<Repeat, String> {
    let atoms: Vec<&str> = val.split('/').collect();
    match atoms.as_slice() {
        [first, step] => {
            let start = if parse_int(first).is_some() {
                format!("{first}-{}", r.max)
            } else {
                first.to_string()
            };
            parse_range(name, &start, parse_int(step), r)
        }
        [_] => parse_range(name, val, Some(1), r),
        _ => Err(format!("Invalid repeat: {val}")),
    }
}

fn parse_range(name: &str, val: &str, repeat: Option<i64>, r: &Rules) -> Result<Repeat, String> {
    let atoms: Vec<&str> = val.split('-').collect();
    if atoms.len() <= 1 {
        return Ok(Repeat::One(match to_number(val) {
            Some(n) => n.to_string(),
            None => val.to_string(),
        }));
    }
    let (mn, mx) = (parse_int(atoms[0]), parse_int(atoms[1]));
    let range = match (mn, mx) {
        (Some(a), Some(b)) if a >= r.min && b <= r.max => Some((a, b)),
        _ => None,
    };
    let Some((lo, hi)) = range else {
        return Err(format!(
            "Constraint error, got range {}-{} expected range {}-{}",
            js_num(mn),
            js_num(mx),
            r.min,
            r.max
        ));
    };
    if lo > hi {
        return Err(format!("Invalid range: {lo}-{hi}, min({lo}) > max({hi})"));
    }
    let step = match repeat {
        Some(s) if s > 0 => s,
        other => {
            return Err(format!(
                "Constraint error, cannot repeat at every {} time.",
                js_num(other)
            ));
        }
    };
    let mut stack = if name == "dayOfWeek" && hi % 7 == 0 {
        vec![0]
    } else {
        vec![]
    };
    let mut i = lo;
    while i <= hi {
        if !stack.contains(&i) {
            stack.push(i);
        }
        i = i.saturating_add(step);
    }
    Ok(Repeat::List(stack))
}

/// `<value>#<n>` in the day of the week: the value, after checking the occurrence.
fn parse_nth_day(val: &str) -> Result<String, String> {
    let atoms: Vec<&str> = val.split('#').collect();
    if atoms.len() <= 1 {
        return Ok(val.to_string());
    }
    let nth = atoms.last().and_then(|a| to_number(a));
    // cron-parser's /[,-/]/: a character class from `,` to `/`.
    if let Some(c) = val.chars().find(|c| (','..='/').contains(c)) {
        return Err(format!(
            "Constraint error, invalid dayOfWeek `#` and `{c}` special characters are incompatible"
        ));
    }
    if !(atoms.len() <= 2 && nth.is_some_and(|n| (1..=5).contains(&n))) {
        return Err("Constraint error, invalid dayOfWeek occurrence number (#)".into());
    }
    Ok(atoms[0].to_string())
}

/// CronField's validation: each value in range (or `L` with up to two digits before it), and no
/// duplicate other than 0 (the parser's `assert(!duplicate)` lets a falsy one pass).
fn validate(name: &str, values: &[Val]) -> Result<(), String> {
    let r = rules(name);
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.cmp(y),
        (Val::Num(_), Val::Str(_)) => std::cmp::Ordering::Less,
        (Val::Str(_), Val::Num(_)) => std::cmp::Ordering::Greater,
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
    });
    let chars = if r.last { " or chars L" } else { "" };
    for v in &sorted {
        let (ok, text) = match v {
            Val::Num(n) => ((r.min..=r.max).contains(n), n.to_string()),
            Val::Str(s) => {
                let digits = s.strip_suffix('L').unwrap_or("x");
                let ok = r.last && digits.len() <= 2 && digits.chars().all(|c| c.is_ascii_digit());
                (ok, s.clone())
            }
        };
        if !ok {
            return Err(format!(
                "{} Validation error, got value {text} expected range {}-{}{chars}",
                r.class, r.min, r.max
            ));
        }
    }
    let dup = sorted
        .iter()
        .enumerate()
        .find(|(i, v)| sorted.iter().position(|w| w == *v) != Some(*i));
    if let Some((_, v)) = dup
        && *v != Val::Num(0)
    {
        let text = match v {
            Val::Num(n) => n.to_string(),
            Val::Str(s) => s.clone(),
        };
        return Err(format!(
            "{} Validation error, duplicate values found: {text}",
            r.class
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_cron_parser_accepts() {
        for p in [
            "0 0 3 * * *",
            "0 3 * * *",
            "@daily",
            "@weekdays",
            "*/15 * * * *",
            "0 0 0 L * *",
            "0 0 0 * * 5L",
            "0 0 0 * * mon#2",
            "0 0 0 1 jan,jul *",
            "0 0 0 * * 1-5",
            "0 0 0 * * 0,7",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn refuses_with_the_parsers_messages() {
        for (p, message) in [
            ("0 0 0 * * * *", "Invalid cron expression, too many fields"),
            (
                "0 60 * * * *",
                "Constraint error, got value 60 expected range 0-59",
            ),
            (
                "0 0 25 * * *",
                "Constraint error, got value 25 expected range 0-23",
            ),
            ("0 0 x * * *", "Invalid characters, got value: x"),
            (
                "0 0 0 * foo *",
                "Validation error, cannot resolve alias \"foo\"",
            ),
            ("0 0 5-1 * * *", "Invalid range: 5-1, min(5) > max(1)"),
            (
                "0 */0 * * * *",
                "Constraint error, cannot repeat at every 0 time.",
            ),
            ("0 1,,2 * * * *", "Invalid list value format"),
            (
                "0 1,1 * * * *",
                "CronMinute Validation error, duplicate values found: 1",
            ),
            (
                "0 0 0 * * 1#6",
                "Constraint error, invalid dayOfWeek occurrence number (#)",
            ),
            (
                "0 0 0 * * L",
                "Invalid last weekday of the month expression: L",
            ),
            (
                "0 0 0 L5 * *",
                "CronDayOfMonth Validation error, got value L5 expected range 1-31 or chars L",
            ),
        ] {
            assert_eq!(check(p), Err(message.to_string()), "{p}");
        }
    }
}
