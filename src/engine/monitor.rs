//! The Monitor worker (seed 000): endpoint health.
//!
//! At start it tests every endpoint that records are delivered to and logs
//! `Connection to NAME established` (or places the system's hold when it
//! cannot be reached); then it runs the probes that `engine::health`
//! schedules for endpoints that are down, until they answer.
//!
//! It also keeps the site's data file in bounds: every hour it deletes sent
//! and ignored transactions older than the site's `keep_sent`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Site;
use crate::log::level;

/// Sent transactions older than the site's `keep_sent` are deleted this
/// often, the first time this long after the site starts.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_FIRST: Duration = Duration::from_secs(60);

pub async fn run(site: Arc<Site>, token: CancellationToken, ready: oneshot::Sender<()>) {
    site.log.write(level::INFO, "Monitor thread started").await;
    let _ready = ready.send(());
    site.health.restore().await;
    let targets: Vec<_> = site
        .endpoints()
        .filter(|e| e.target.is_some())
        .cloned()
        .collect();
    for endpoint in targets {
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = endpoint.probe(site.config_dir()) => r,
        };
        match &result {
            Ok(_) => {
                site.log
                    .write(
                        level::INFO,
                        format!("Connection to {} established", endpoint.name),
                    )
                    .await
            }
            Err(_) => site.health.probed(&endpoint, &result).await,
        }
    }
    let mut next_prune = tokio::time::Instant::now() + PRUNE_FIRST;
    while !token.is_cancelled() {
        let next_probe = site.health.next_probe();
        let wake = next_probe.map_or(next_prune, |p| p.min(next_prune));
        tokio::select! {
            _ = token.cancelled() => break,
            _ = site.health.changed() => continue,
            _ = tokio::time::sleep_until(wake) => {}
        }
        for endpoint in site.health.due() {
            let result = tokio::select! {
                _ = token.cancelled() => break,
                r = endpoint.probe(site.config_dir()) => r,
            };
            site.health.probed(&endpoint, &result).await;
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            prune(&site).await;
        }
    }
    site.log.write(level::INFO, "Monitor thread stopped.").await;
}

async fn prune(site: &Site) {
    let keep = chrono::Duration::from_std(site.config.keep_sent).unwrap_or(chrono::Duration::MAX);
    let before = chrono::Utc::now()
        .checked_sub_signed(keep)
        .map_or(0, |t| t.timestamp_millis());
    match site.store.prune(before).await {
        Ok(0) => {}
        Ok(n) => {
            site.log
                .write(
                    level::DETAIL,
                    format!("{n} sent transaction(s) older than keep_sent deleted"),
                )
                .await
        }
        Err(e) => {
            // A full disk is said once by the log itself.
            let level = if e.is_disk_full() {
                level::DETAIL
            } else {
                level::ERROR
            };
            site.log
                .write(level, format!("Cannot delete old transactions: {e}"))
                .await
        }
    }
}
