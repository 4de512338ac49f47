//! Text as tc-ami prints it (pure): one-line messages and aligned tables.

use comfy_table::{Table, presets::NOTHING};

/// The name of a JSON value's type, as error messages say it ("it holds a JSON array").
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The text on one line, runs of white space folded to one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table: a header line, then one line per row; columns left-aligned, two spaces apart, no
/// borders, no trailing spaces.
pub fn table<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows.into_iter().map(|r| r.into_iter().collect::<Vec<_>>()));
    let last = header.len().saturating_sub(1);
    for (n, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if n == last { 0 } else { 2 }));
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_white_space() {
        assert_eq!(one_line(" a\n  b\tc "), "a b c");
    }

    #[test]
    fn tables_line_up_without_trailing_spaces() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            [
                vec!["xx".to_string(), "y".into(), "z".into()],
                vec!["x".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A   LONG HEADER  C\nxx  y            z\nx\n");
    }
}
