//! `sluice status`: every site and integration at a glance.

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Client;
use super::error::CliError;
use super::output::{self, hold_kinds, table};
use crate::api::integrations::IntegrationView;
use crate::api::sites::SiteView;

/// One site and its integrations: an element of what `--json` prints.
#[derive(Debug, Deserialize)]
pub struct SiteStatus {
    pub site: SiteView,
    pub integrations: Vec<IntegrationView>,
}

pub async fn run(client: &Client) -> Result<(), CliError> {
    let sites = client.get(&["sites"], &[]).await?;
    let views: Vec<SiteView> = output::read(&sites)?;
    // `--json` prints the daemon's answers as they came.
    let answers = sites.as_array().cloned().unwrap_or_default();
    let mut all = Vec::new();
    for (site, view) in answers.into_iter().zip(views) {
        let integrations = client
            .get(&["sites", &view.name, "integrations"], &[])
            .await?;
        all.push(json!({ "site": site, "integrations": integrations }));
    }
    let all = Value::Array(all);
    output::answer(client.json, &all, |all: &Vec<SiteStatus>| status_table(all))
}

/// One row per integration (a site without any still gets its row).
pub fn status_table(sites: &[SiteStatus]) -> String {
    let mut rows = Vec::new();
    for entry in sites {
        let site = &entry.site;
        let mut row = |i: Option<&IntegrationView>| {
            rows.push(vec![
                site.name.clone(),
                site.state.as_str().to_string(),
                i.map(|i| i.name.clone()).unwrap_or_default(),
                i.map(|i| i.state.as_str()).unwrap_or_default().to_string(),
                i.map(|i| i.status.as_str()).unwrap_or_default().to_string(),
                i.map(hold_kinds).unwrap_or_default(),
                i.map(|i| i.queued.to_string()).unwrap_or_default(),
            ]);
        };
        if entry.integrations.is_empty() {
            row(None);
        }
        for i in &entry.integrations {
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

    /// A site as the daemon answers it, with these fields.
    fn site(fields: Value) -> Value {
        let mut v = json!({"since": "T", "stop_reason": null, "stopped_by": null,
            "stopped_at": null, "log_level": 4, "integrations": [], "endpoints": [], "actions": []});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v
    }

    /// An integration as the daemon answers it, with these fields.
    fn integration(fields: Value) -> Value {
        let mut v = json!({"site": "LIVE", "on_error": "block", "resume": null, "stalled": null,
            "blocked": null, "flows": [], "actions": []});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v
    }

    fn hold(kind: &str) -> Value {
        json!({"kind": kind, "by": "x", "since": "T", "reason": ""})
    }

    #[test]
    fn one_row_per_integration() {
        let all = json!([
            {"site": site(json!({"name": "LIVE", "state": "running"})), "integrations": [
                integration(json!({"name": "orders", "state": "paused", "status": "Running", "queued": 12,
                 "holds": [hold("operator"), hold("endpoint-offline")]})),
                integration(json!({"name": "stock", "state": "active", "status": "Idle", "queued": 0, "holds": []}))
            ]},
            {"site": site(json!({"name": "DEV", "state": "stopped"})), "integrations": []}
        ]);
        let all: Vec<SiteStatus> = serde_json::from_value(all).unwrap();
        assert_eq!(
            status_table(&all),
            "SITE  SITE STATE  INTEGRATION  STATE   STATUS   HOLDS                      QUEUED\n\
             LIVE  running     orders       paused  Running  operator,endpoint-offline  12\n\
             LIVE  running     stock        active  Idle                                0\n\
             DEV   stopped"
        );
    }
}
