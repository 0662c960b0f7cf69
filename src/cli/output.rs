//! What the subcommands print: the daemon's answers read as the API's own
//! view types (`crate::api::…View`, the structs the daemon writes them
//! from), aligned tables, and writes to standard output that end quietly
//! when the reader has gone (`sluice log SITE --follow | head`).

use std::fmt::Display;
use std::io::Write;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::CliError;
use crate::api::integrations::IntegrationView;

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

/// Reads the daemon's answer as the API's view type `T` (the one the
/// daemon wrote it from). An answer it cannot read is an error that says
/// so, never a guess.
pub fn read<T: DeserializeOwned>(v: &Value) -> Result<T, CliError> {
    T::deserialize(v).map_err(|e| {
        CliError::Failed(format!(
            "an answer this sluice cannot read ({e}): {}",
            truncate(&v.to_string(), 300)
        ))
    })
}

/// Prints the daemon's answer: as it came under `--json`, else read as the
/// view `T` and written as `human` says.
pub fn answer<T: DeserializeOwned>(
    as_json: bool,
    v: &Value,
    human: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if as_json {
        json(v)
    } else {
        line(human(&read(v)?))
    }
}

/// What an answer offers its caller (its `actions`): `pause, stop`, or
/// `none`.
pub fn actions(actions: &[String]) -> String {
    if actions.is_empty() {
        "none".to_string()
    } else {
        actions.join(", ")
    }
}

/// An optional text as a cell: empty when absent.
pub fn or_blank(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
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

/// The holds of an integration, one `kind by WHO since WHEN: reason` each.
pub fn holds(integration: &IntegrationView) -> Vec<String> {
    integration
        .holds
        .iter()
        .map(|h| {
            let mut s = format!("{} by {}", h.kind.as_str(), h.by);
            if !h.since.is_empty() {
                s.push_str(&format!(" since {}", h.since));
            }
            if !h.reason.is_empty() {
                s.push_str(&format!(": {}", h.reason));
            }
            s
        })
        .collect()
}

/// The kinds of an integration's holds, comma-separated.
pub fn hold_kinds(integration: &IntegrationView) -> String {
    integration
        .holds
        .iter()
        .map(|h| h.kind.as_str())
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
    fn answers_are_read_as_views() {
        let read: Result<crate::api::sites::SiteView, _> = read(&json!({"name": "LIVE"}));
        let e = read.unwrap_err().to_string();
        assert!(e.starts_with("an answer this sluice cannot read"), "{e}");
        assert!(e.contains(r#"{"name":"LIVE"}"#), "{e}");
        assert_eq!(actions(&[]), "none");
        assert_eq!(actions(&["pause".into(), "stop".into()]), "pause, stop");
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
        let i: IntegrationView = serde_json::from_value(json!({
            "name": "orders", "site": "LIVE", "state": "paused", "status": "Running",
            "queued": 0, "on_error": "block", "resume": null, "stalled": null, "blocked": null,
            "flows": [], "actions": [],
            "holds": [
                {"kind": "operator", "by": "ann@cli", "since": "2026-11-24T10:00:00Z", "reason": "stocktake"},
                {"kind": "endpoint-offline", "by": "system", "since": "", "reason": ""}
            ]
        }))
        .unwrap();
        assert_eq!(
            holds(&i),
            [
                "operator by ann@cli since 2026-11-24T10:00:00Z: stocktake",
                "endpoint-offline by system"
            ]
        );
        assert_eq!(hold_kinds(&i), "operator,endpoint-offline");
        let none = IntegrationView { holds: vec![], ..i };
        assert_eq!(hold_kinds(&none), "");
    }
}
