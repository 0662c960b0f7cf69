//! The Monitor worker (seed 000): watches whether the HTTP endpoints of the
//! site can be reached, and logs when that changes.
//!
//! It opens a TCP connection to each `http` endpoint's host every
//! [`PROBE_EVERY`] and logs `Connection to NAME established` when one is
//! reached (at first, and again after it was lost) and `Connection to NAME
//! lost` when it no longer is. It only observes: deliveries decide health.
//!
//! It also keeps the site's data file in bounds: every hour it deletes sent
//! and ignored transactions older than the site's `keep_sent`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Site;
use crate::connectors::EndpointKind;
use crate::log::level;

pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Sent transactions older than the site's `keep_sent` are deleted this
/// often, the first time this long after the site starts.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_FIRST: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(site: Arc<Site>, token: CancellationToken, ready: oneshot::Sender<()>) {
    site.log.write(level::INFO, "Monitor thread started").await;
    let _ready = ready.send(());
    let probes: Vec<(String, String)> = site
        .endpoints()
        .filter_map(|e| match &e.kind {
            EndpointKind::Http(c) => {
                let url = reqwest::Url::parse(&c.url).ok()?;
                let host = url.host_str()?.to_string();
                let port = url.port_or_known_default()?;
                Some((e.name.clone(), format!("{host}:{port}")))
            }
            _ => None,
        })
        .collect();
    let mut reachable: HashMap<String, bool> = HashMap::new();
    let mut next_prune = tokio::time::Instant::now() + PRUNE_FIRST;
    loop {
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            prune(&site).await;
        }
        for (name, addr) in &probes {
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            let before = reachable.insert(name.clone(), ok);
            match (before, ok) {
                (None | Some(false), true) => {
                    site.log
                        .write(level::INFO, format!("Connection to {name} established"))
                        .await
                }
                (None, false) => {
                    site.log
                        .write(
                            level::ERROR,
                            format!("Connection to {name} ({addr}) cannot be established"),
                        )
                        .await
                }
                (Some(true), false) => {
                    site.log
                        .write(level::ERROR, format!("Connection to {name} ({addr}) lost"))
                        .await
                }
                _ => {}
            }
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
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
            site.log
                .write(level::ERROR, format!("Cannot delete old transactions: {e}"))
                .await
        }
    }
}
