//! What the subcommands print: aligned tables, JSON values as short text,
//! and writes to standard output that end quietly when the reader has gone
//! (`sluice log SITE --follow | head`).

use std::fmt::Display;
use std::io::Write;

use serde_json::Value;

use super::error::CliError;

/// Writes one line to standard output.
pub fn line(s: impl Display) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

/// Writes text as it is, ending it with a newline if it has none.
pub fn text_block(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    if !s.is_empty() && !s.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Prints a JSON value, pretty.
pub fn json(v: &Value) -> Result<(), CliError> {
    line(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
}

/// Prints the daemon's answer: as JSON under `--json`, else as `human` says.
pub fn answer(
    as_json: bool,
    v: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<(), CliError> {
    if as_json {
        json(v)
    } else {
        line(human(v))
    }
}

/// A JSON value as short text: strings without quotes, "" for null or a
/// missing field, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most `max` characters on one line; a cut is marked with '…'.
pub fn truncate(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The rows of a table, one per element of a JSON array (none if it is not
/// an array).
pub fn rows(v: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.as_array().into_iter().flatten().map(row).collect()
}

/// Rows as columns under a header, each column as wide as its widest cell
/// (in characters), two spaces apart, no trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (cell, width) in cells.zip(&widths) {
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        line.trim_end().to_string()
    };
    let mut out = format(&mut header.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&format(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The holds of an integration, one `kind by WHO (reason)` each.
pub fn holds(integration: &Value) -> Vec<String> {
    integration["holds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let mut s = format!("{} by {}", text(&h["kind"]), text(&h["by"]));
            let since = text(&h["since"]);
            if !since.is_empty() {
                s.push_str(&format!(" since {since}"));
            }
            let reason = text(&h["reason"]);
            if !reason.is_empty() {
                s.push_str(&format!(": {reason}"));
            }
            s
        })
        .collect()
}

/// The kinds of an integration's holds, comma-separated.
pub fn hold_kinds(integration: &Value) -> String {
    integration["holds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| text(&h["kind"]))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "y".into(), "1".into()],
                vec!["z".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   1\nz");
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let t = table(&["ROUTE", "N"], &[vec!["erp → crm".into(), "1".into()]]);
        assert_eq!(t, "ROUTE      N\nerp → crm  1");
    }

    #[test]
    fn short_rows_and_empty_tables() {
        assert_eq!(table(&["A", "B"], &[]), "A  B");
        assert_eq!(table(&["A", "B"], &[vec!["long".into()]]), "A     B\nlong");
    }

    #[test]
    fn values_as_text() {
        assert_eq!(text(&json!(null)), "");
        assert_eq!(text(&json!("LIVE")), "LIVE");
        assert_eq!(text(&json!(12)), "12");
        assert_eq!(text(&json!({"a": 1})["missing"]), "");
    }

    #[test]
    fn truncation_keeps_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(truncate("a\nb\tc", 10), "a b c");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }

    #[test]
    fn holds_are_described() {
        let i = json!({"holds": [
            {"kind": "operator", "by": "ann@cli", "since": "2026-11-24T10:00:00Z", "reason": "stocktake"},
            {"kind": "endpoint-offline", "by": "system", "since": null, "reason": ""}
        ]});
        assert_eq!(
            holds(&i),
            [
                "operator by ann@cli since 2026-11-24T10:00:00Z: stocktake",
                "endpoint-offline by system"
            ]
        );
        assert_eq!(hold_kinds(&i), "operator,endpoint-offline");
        assert_eq!(hold_kinds(&json!({})), "");
    }
}
