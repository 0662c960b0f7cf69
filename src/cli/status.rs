//! `sluice status`: every site and integration at a glance.

use super::client::{seg, table, text, CliError, Client};

pub async fn run(client: &Client) -> Result<(), CliError> {
    let sites = client.get("/sites").await?;
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for site in sites.as_array().into_iter().flatten() {
        let name = text(&site["name"]);
        let integrations = client
            .get(&format!("/sites/{}/integrations", seg(&name)))
            .await?;
        for i in integrations.as_array().into_iter().flatten() {
            let holds: Vec<String> = i["holds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| text(&h["kind"]))
                .collect();
            rows.push(vec![
                name.clone(),
                text(&site["state"]),
                text(&i["name"]),
                text(&i["state"]),
                text(&i["status"]),
                holds.join(","),
                text(&i["queued"]),
            ]);
        }
        if integrations.as_array().is_none_or(|a| a.is_empty()) {
            rows.push(vec![
                name.clone(),
                text(&site["state"]),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        all.push(serde_json::json!({"site": site, "integrations": integrations}));
    }
    if !client.print_json(&serde_json::Value::Array(all)) {
        println!(
            "{}",
            table(
                &[
                    "SITE",
                    "SITE STATE",
                    "INTEGRATION",
                    "STATE",
                    "STATUS",
                    "HOLDS",
                    "QUEUED"
                ],
                &rows
            )
        );
    }
    Ok(())
}
