//! `sluice status`: every site and integration at a glance.

use serde_json::{json, Value};

use super::client::Client;
use super::error::CliError;
use super::output::{self, hold_kinds, table, text};

pub async fn run(client: &Client) -> Result<(), CliError> {
    let sites = client.get(&["sites"], &[]).await?;
    let mut all = Vec::new();
    for site in sites.as_array().into_iter().flatten() {
        let name = text(&site["name"]);
        let integrations = client.get(&["sites", &name, "integrations"], &[]).await?;
        all.push(json!({ "site": site, "integrations": integrations }));
    }
    let all = Value::Array(all);
    output::answer(client.json, &all, status_table)
}

/// One row per integration (a site without any still gets its row), from
/// `[{"site": …, "integrations": […]}]`.
pub fn status_table(sites: &Value) -> String {
    let mut rows = Vec::new();
    for entry in sites.as_array().into_iter().flatten() {
        let site = &entry["site"];
        let integrations = entry["integrations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let mut row = |i: Option<&Value>| {
            let i = i.unwrap_or(&Value::Null);
            rows.push(vec![
                text(&site["name"]),
                text(&site["state"]),
                text(&i["name"]),
                text(&i["state"]),
                text(&i["status"]),
                hold_kinds(i),
                text(&i["queued"]),
            ]);
        };
        if integrations.is_empty() {
            row(None);
        }
        for i in integrations {
            row(Some(i));
        }
    }
    table(
        &[
            "SITE",
            "SITE STATE",
            "INTEGRATION",
            "STATE",
            "STATUS",
            "HOLDS",
            "QUEUED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_integration() {
        let all = json!([
            {"site": {"name": "LIVE", "state": "running"}, "integrations": [
                {"name": "orders", "state": "paused", "status": "Running", "queued": 12,
                 "holds": [{"kind": "operator"}, {"kind": "endpoint-offline"}]},
                {"name": "stock", "state": "active", "status": "Idle", "queued": 0, "holds": []}
            ]},
            {"site": {"name": "DEV", "state": "stopped"}, "integrations": []}
        ]);
        assert_eq!(
            status_table(&all),
            "SITE  SITE STATE  INTEGRATION  STATE   STATUS   HOLDS                      QUEUED\n\
             LIVE  running     orders       paused  Running  operator,endpoint-offline  12\n\
             LIVE  running     stock        active  Idle                                0\n\
             DEV   stopped"
        );
    }
}
