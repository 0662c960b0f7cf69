//! What every site is doing at one moment, as plain data: what a reader
//! outside the engine (the `/metrics` exposition) needs, so that it depends
//! on these few fields and not on the engine's moving parts.
//!
//! Read from the same state the API's views read (site and integration
//! states, holds, the store's queue count, endpoint health), so the two
//! never disagree.

use super::endpoint::EndpointState;
use super::Daemon;
use crate::model::{HoldKind, IntegrationState, SiteState};

/// Every site, in name order.
#[derive(Debug)]
pub struct Snapshot {
    pub sites: Vec<SiteSnapshot>,
}

#[derive(Debug)]
pub struct SiteSnapshot {
    pub name: String,
    pub state: SiteState,
    pub integrations: Vec<IntegrationSnapshot>,
    pub endpoints: Vec<EndpointSnapshot>,
}

#[derive(Debug)]
pub struct IntegrationSnapshot {
    pub name: String,
    pub state: IntegrationState,
    /// The kinds of hold it has (one of each at most).
    pub holds: Vec<HoldKind>,
    /// Transactions queued and not yet sent, as the API's `queued`; or why
    /// the store could not count them.
    pub queued: super::Result<i64>,
}

#[derive(Debug)]
pub struct EndpointSnapshot {
    pub name: String,
    pub state: EndpointState,
}

impl Daemon {
    /// Every site's state, its integrations' states, holds and queue
    /// depths, and its endpoints' states, read now.
    pub async fn snapshot(&self) -> Snapshot {
        let mut sites = Vec::new();
        for site in self.sites() {
            let mut integrations = Vec::new();
            for integration in site.integrations() {
                let record = integration.record();
                integrations.push(IntegrationSnapshot {
                    name: integration.name.clone(),
                    state: record.state,
                    holds: HoldKind::ALL
                        .iter()
                        .copied()
                        .filter(|k| record.holds.get(*k).is_some())
                        .collect(),
                    queued: site.queued(&integration.name).await,
                });
            }
            let endpoints = site
                .endpoints()
                .map(|endpoint| EndpointSnapshot {
                    name: endpoint.name.clone(),
                    state: endpoint.state(),
                })
                .collect();
            sites.push(SiteSnapshot {
                name: site.name.clone(),
                state: site.state(),
                integrations,
                endpoints,
            });
        }
        Snapshot { sites }
    }
}
