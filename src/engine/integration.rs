//! An integration at run time: the lifecycle state a person set, the holds
//! that keep it from sending, and the gate that makes a pause final.
//!
//! # Invariants
//! - A person's change is written to the store first, together with its
//!   audit entry, and takes effect here only once it is stored: what the API
//!   answers is durable and audited, and a restart restores it. A change the
//!   store refuses (a full disk) changes nothing, here or there. System
//!   holds are written to the store first too.
//! - The sender starts a delivery only while holding [`Integration::gate`]
//!   and after seeing [`Integration::may_send`] true under it. A pause (or a
//!   stop) writes the new state, then takes the gate once: when it has it,
//!   the delivery in flight (if any) has ended and no other will start, so
//!   "pause returns only when no send will start any more".
//! - What changes, the model decides ([`IntegrationRecord::apply`] for a
//!   person, [`Holds::place_by_system`] and [`Holds::lift_by_system`] for
//!   the system); the store stores that change and memory takes it, so the
//!   two cannot decide differently. The system removes only holds the
//!   system placed.
//! - Stall detection and the resume's rate and time left read tokio's
//!   clock (`tokio::time::Instant`), which `tokio::time::pause()` drives.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::Result;
use crate::config::{IntegrationConfig, OnError};
use crate::model::{
    now_millis, Hold, HoldKind, Holds, IntegrationChange, IntegrationEvent, IntegrationRecord,
    IntegrationState,
};
use crate::store::{AuditEntry, Store};

/// Whether this node may send the integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A single node: always.
    Always,
    /// A node of a cluster holding the integration's lease: until then (a
    /// little before the lease expires in the database, by this node's
    /// clock), unless renewed.
    Until(Instant),
    /// A node of a cluster not holding the lease.
    Not,
}

/// The backlog drain that a resume started.
#[derive(Debug, Clone)]
struct Drain {
    total: i64,
    done: i64,
    started: Instant,
}

/// Progress as shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ResumeProgress {
    pub done: i64,
    pub total: i64,
    /// Transactions per second since the resume.
    pub rate: f64,
    /// Estimated seconds left, once a rate is known.
    pub eta_s: Option<f64>,
}

pub struct Integration {
    pub name: String,
    pub config: IntegrationConfig,
    store: Arc<dyn Store>,
    record: Mutex<IntegrationRecord>,
    may_send: watch::Sender<bool>,
    /// Held by the sender for the whole of a delivery.
    gate: tokio::sync::Mutex<()>,
    /// Serialises operator actions on this integration.
    control: tokio::sync::Mutex<()>,
    /// Rung when transactions are queued, so an idle sender looks again.
    wake: Notify,
    progress: Mutex<Option<Drain>>,
    /// The sequence numbers in flight: shown as Sending.
    in_flight: Mutex<Option<(i64, i64)>>,
    /// Set when a transaction behind the sender's position is queued again
    /// (a retry): the sender reads from the start of the queue once more.
    rewind: std::sync::atomic::AtomicBool,
    /// Since when deliveries have been failing, and the last error.
    failing: Mutex<Option<(Instant, String)>>,
    /// Why the sender cannot record what it delivered (a full disk), while
    /// it cannot: it sends nothing more until it can.
    unrecorded: Mutex<Option<String>>,
    /// Started by a person; its start-up is queued or under way.
    starting: std::sync::atomic::AtomicBool,
    /// Under `on_error = "block"`: the failed transaction the queue waits
    /// behind, and why it failed.
    blocked: Mutex<Option<(i64, String)>>,
    /// Set for good on the integration a reload replaces: no delivery starts
    /// any more (not a hold: nothing a person or the store sees).
    suspended: std::sync::atomic::AtomicBool,
    /// Whether this node sends it (a cluster's lease).
    owner: Mutex<Owner>,
    /// Counts the changes taken in memory: a state read from the store
    /// replaces the one in memory only if nothing changed it meanwhile.
    changes: std::sync::atomic::AtomicU64,
    /// What happened since the History worker last wrote a minute.
    pub tally: Arc<super::history::Tally>,
}

impl Integration {
    /// Loads the integration's stored state, or records a new one as Active.
    pub async fn open(
        config: IntegrationConfig,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Integration>> {
        let record = match store.integration(&config.name).await? {
            Some(record) => record,
            None => {
                let record = IntegrationRecord::new();
                let change = IntegrationChange {
                    state: Some(record.state),
                    ..IntegrationChange::default()
                };
                match store.change_integration(&config.name, change, None).await {
                    // Active is what a new integration is, stored or not:
                    // the next start finds it new again.
                    Err(e) if e.is_disk_full() => {}
                    other => {
                        other?;
                    }
                }
                record
            }
        };
        let blocked = match config.on_error {
            OnError::Skip => None,
            OnError::Block => match store.first_error(&config.name).await? {
                None => None,
                Some(seq) => {
                    let why = store
                        .transaction(&config.name, seq)
                        .await?
                        .and_then(|t| t.last_error)
                        .unwrap_or_default();
                    Some((seq, why))
                }
            },
        };
        let (may_send_tx, _) = watch::channel(record.may_send());
        Ok(Arc::new(Integration {
            name: config.name.clone(),
            config,
            store,
            record: Mutex::new(record),
            may_send: may_send_tx,
            gate: tokio::sync::Mutex::new(()),
            control: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            progress: Mutex::new(None),
            in_flight: Mutex::new(None),
            rewind: std::sync::atomic::AtomicBool::new(false),
            failing: Mutex::new(None),
            unrecorded: Mutex::new(None),
            starting: std::sync::atomic::AtomicBool::new(false),
            blocked: Mutex::new(blocked),
            suspended: std::sync::atomic::AtomicBool::new(false),
            owner: Mutex::new(Owner::Always),
            changes: std::sync::atomic::AtomicU64::new(0),
            tally: Arc::default(),
        }))
    }

    /// On a node of a cluster: it sends only while it holds the lease
    /// ([`Integration::set_lease`]). Called before anything runs.
    pub fn unowned(&self) {
        *self.owner.lock() = Owner::Not;
        self.update(|_| {});
    }

    /// The lease held until `until` (by this node's clock), or not held
    /// (`None`). Returns whether this node has just become its sender:
    /// then it reads its queue from the start (another node may have
    /// delivered part of it).
    pub fn set_lease(&self, until: Option<Instant>) -> bool {
        let became = {
            let mut owner = self.owner.lock();
            let was = *owner;
            *owner = match until {
                Some(t) => Owner::Until(t),
                None => Owner::Not,
            };
            was == Owner::Not && until.is_some()
        };
        if became {
            self.rewind.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.update(|_| {});
        became
    }

    /// Whether this node sends it now: a single node, or the holder of a
    /// lease that has not run out by this node's clock.
    pub fn owned(&self) -> bool {
        match *self.owner.lock() {
            Owner::Always => true,
            Owner::Until(t) => Instant::now() < t,
            Owner::Not => false,
        }
    }

    /// Whether it is a node of a cluster's integration (leased).
    pub fn leased(&self) -> bool {
        *self.owner.lock() != Owner::Always
    }

    /// Reads its state and holds again from the store (another node
    /// changed them) and takes them into effect; once no delivery will
    /// start any more if they forbid sending.
    pub async fn refresh(&self) -> Result<()> {
        let _control = self.control.lock().await;
        loop {
            let seen = self.changes.load(std::sync::atomic::Ordering::SeqCst);
            let Some(record) = self.store.integration(&self.name).await? else {
                return Ok(());
            };
            let taken = {
                let mut r = self.record.lock();
                let unchanged = self.changes.load(std::sync::atomic::Ordering::SeqCst) == seen;
                if unchanged {
                    *r = record;
                }
                unchanged
            };
            if taken {
                break;
            }
            // Changed here while it was read (a hold placed or lifted):
            // read again, so the newer state is not undone.
        }
        self.update(|_| {});
        if !self.may_send() {
            *self.progress.lock() = None;
            self.wait_in_flight().await;
        }
        Ok(())
    }

    pub fn record(&self) -> IntegrationRecord {
        self.record.lock().clone()
    }

    pub fn state(&self) -> IntegrationState {
        self.record.lock().state
    }

    /// Whether its flows capture records (not Stopped).
    pub fn captures(&self) -> bool {
        self.state().captures()
    }

    /// Applies a person's Pause, Resume, Start or Stop: the change the
    /// model decides, stored with its audit entry, then in effect. Returns
    /// once the change is durable and audited and, for anything but
    /// Resume/Start, once no delivery will start any more. If the store
    /// refuses it, nothing changes. A person's action goes through its
    /// site (`Site::pause_integration` …), which also logs it and queues a
    /// start-up.
    pub async fn apply(
        &self,
        event: IntegrationEvent,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        let _control = self.control.lock().await;
        let change = self.record().apply(event, actor, reason, now_millis())?;
        if event == IntegrationEvent::Resume {
            // Counted before the state changes, so the total covers the
            // whole backlog the resume releases.
            let total = self.store.queued_count(&self.name).await?;
            *self.progress.lock() = (total > 0).then(|| Drain {
                total,
                done: 0,
                started: Instant::now(),
            });
        }
        let audit = AuditEntry {
            id: 0,
            ts: now_millis(),
            actor: actor.to_string(),
            action: format!("integration.{}", event.verb()),
            subject: format!("integration/{}", self.name),
            reason: reason.map(str::to_string),
            outcome: "ok".to_string(),
            node: None,
        };
        // Durable and audited first; then it takes effect (the sender
        // checks before each delivery).
        self.store
            .change_integration(&self.name, change.clone(), Some(audit))
            .await?;
        self.update(|r| r.take(&change));
        if change.state != Some(IntegrationState::Active) {
            *self.progress.lock() = None;
            self.wait_in_flight().await;
        }
        Ok(self.record())
    }

    /// Places a hold the system decided on (site stopped, endpoint
    /// offline…): in effect at once, then stored. A sender that finds its
    /// endpoint already down does not try it again while the hold is being
    /// written; one that cannot be stored holds all the same while the
    /// daemon runs (a restart probes the endpoint again). The operator's
    /// hold is never placed here.
    pub async fn place_hold(&self, hold: Hold) -> Result<()> {
        let Some(change) = Holds::place_by_system(hold) else {
            return Ok(());
        };
        self.update(|r| r.take(&change));
        let stored = self
            .store
            .change_integration(&self.name, change.clone(), None)
            .await;
        // Again: a refresh may have read the store before it held it.
        self.update(|r| r.take(&change));
        stored?;
        Ok(())
    }

    /// Takes a system hold into effect that is already stored (a site's
    /// stop stores its holds together with the stop), or that cannot be
    /// (a full disk: held all the same while the daemon runs).
    pub(crate) fn hold_placed(&self, hold: Hold) {
        if let Some(change) = Holds::place_by_system(hold) {
            self.update(|r| r.take(&change));
        }
    }

    /// Ends a system hold whose removal is already stored (or cannot be).
    pub(crate) fn hold_lifted(&self, kind: HoldKind) {
        if let Some(change) = Holds::lift_by_system(kind) {
            self.update(|r| r.take(&change));
        }
    }

    /// Lifts a hold the system placed; `true` if one was stored. The
    /// operator's hold is never lifted here, whatever the caller asks.
    pub async fn lift_hold(&self, kind: HoldKind) -> Result<bool> {
        let Some(change) = Holds::lift_by_system(kind) else {
            return Ok(false);
        };
        let removed = self
            .store
            .change_integration(&self.name, change.clone(), None)
            .await?;
        self.update(|r| r.take(&change));
        Ok(removed)
    }

    fn update(&self, f: impl FnOnce(&mut IntegrationRecord)) {
        let now = {
            let mut r = self.record.lock();
            f(&mut r);
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.may_send()
                && !self.suspended.load(std::sync::atomic::Ordering::SeqCst)
                && *self.owner.lock() != Owner::Not
        };
        let before = self.may_send.send_replace(now);
        if now && !before {
            // Only a change wakes the sender: a state read again as it
            // was (a cluster's heartbeat) must not cut a retry's wait
            // (a target's Retry-After) short.
            self.wake.notify_one();
        }
    }

    /// Lets the delivery in flight end, and starts no other: for a reload,
    /// which replaces this integration without cutting a delivery off.
    pub async fn suspend(&self) {
        self.suspended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.update(|_| {});
        self.wait_in_flight().await;
    }

    /// Undoes [`Integration::suspend`] (a reload that failed).
    pub fn unsuspend(&self) {
        self.suspended
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.update(|_| {});
    }

    /// Waits until the delivery in flight, if any, has ended.
    pub async fn wait_in_flight(&self) {
        drop(self.gate.lock().await);
    }

    /// Whether a delivery may start now: nothing holds it, and this node
    /// sends it (on a cluster: its lease has not run out).
    pub fn may_send(&self) -> bool {
        *self.may_send.borrow() && self.owned()
    }

    pub fn watch_may_send(&self) -> watch::Receiver<bool> {
        self.may_send.subscribe()
    }

    pub(crate) fn gate(&self) -> &tokio::sync::Mutex<()> {
        &self.gate
    }

    /// Tells an idle sender that transactions were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Says that `n` records were queued: counted in the history, and an
    /// idle sender woken.
    pub fn queued(&self, n: usize) {
        self.tally.queued(n);
        self.wake();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Makes the sender read the queue from its start again, and wakes it.
    pub fn rewind(&self) {
        self.rewind.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn take_rewind(&self) -> bool {
        self.rewind.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The failed transaction the queue waits behind, and why.
    pub fn blocked(&self) -> Option<(i64, String)> {
        self.blocked.lock().clone()
    }

    pub(crate) fn block(&self, seq: i64, why: &str) {
        *self.blocked.lock() = Some((seq, why.to_string()));
    }

    pub(crate) fn unblock(&self) {
        *self.blocked.lock() = None;
    }

    pub fn starting(&self) -> bool {
        self.starting.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set_starting(&self, on: bool) {
        self.starting.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// A delivery failed (kept for stall detection).
    pub(crate) fn note_failure(&self, error: &str) {
        let mut f = self.failing.lock();
        match f.as_mut() {
            Some((_, last)) => *last = error.to_string(),
            None => *f = Some((Instant::now(), error.to_string())),
        }
    }

    /// The error of the last delivery that failed, while deliveries fail.
    pub fn last_failure(&self) -> Option<String> {
        self.failing.lock().as_ref().map(|(_, error)| error.clone())
    }

    /// A delivery went through.
    pub(crate) fn note_progress(&self) {
        *self.failing.lock() = None;
    }

    /// The sender cannot record what it delivered (`Some(why)`), or can
    /// again (`None`).
    pub(crate) fn note_unrecorded(&self, why: Option<String>) {
        *self.unrecorded.lock() = why;
    }

    /// Why the drain is stalled, if it may send yet has delivered nothing
    /// for `after`, or cannot record what it delivered (a held integration
    /// is not stalled: its holds say why).
    pub fn stalled(&self, after: std::time::Duration) -> Option<String> {
        if !self.may_send() {
            return None;
        }
        if let Some(why) = self.unrecorded.lock().as_ref() {
            return Some(format!(
                "what was delivered cannot be recorded ({why}); nothing more is sent until it is"
            ));
        }
        let f = self.failing.lock();
        let (since, error) = f.as_ref()?;
        let secs = since.elapsed().as_secs();
        (since.elapsed() >= after).then(|| format!("nothing delivered for {secs}s: {error}"))
    }

    pub(crate) fn set_in_flight(&self, range: Option<(i64, i64)>) {
        *self.in_flight.lock() = range;
    }

    pub fn in_flight(&self) -> Option<(i64, i64)> {
        *self.in_flight.lock()
    }

    /// Counts delivered transactions toward the resume's progress.
    pub(crate) fn count_sent(&self, n: i64) {
        let mut p = self.progress.lock();
        if let Some(progress) = p.as_mut() {
            progress.done = (progress.done + n).min(progress.total);
            if progress.done >= progress.total {
                *p = None;
            }
        }
    }

    /// The drain a resume started, while it goes on.
    pub fn resume_progress(&self) -> Option<ResumeProgress> {
        let p = self.progress.lock();
        let p = p.as_ref()?;
        let secs = p.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            p.done as f64 / secs
        } else {
            0.0
        };
        Some(ResumeProgress {
            done: p.done,
            total: p.total,
            rate,
            eta_s: (rate > 0.0).then(|| (p.total - p.done) as f64 / rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{NewRecord, SqliteStore};

    /// A new integration `orders` (flow `web`) on a store in a temporary
    /// folder, kept as long as the folder.
    async fn opened() -> (Arc<Integration>, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let config = IntegrationConfig {
            name: "orders".into(),
            on_error: OnError::Block,
            flows: Vec::new(),
        };
        let integration = Integration::open(config, store.clone()).await.unwrap();
        (integration, store, dir)
    }

    fn offline() -> Hold {
        Hold {
            kind: HoldKind::EndpointOffline,
            by: "sluice".into(),
            since: now_millis(),
            reason: "endpoint crm is offline".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_is_stalled_once_nothing_was_delivered_for_stall_after() {
        let (orders, _store, _dir) = opened().await;
        let after = Duration::from_secs(60);
        assert_eq!(orders.stalled(after), None);
        orders.note_failure("503 Service Unavailable");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(orders.stalled(after), None, "not yet");
        // Failing again does not start the count over; the last error is shown.
        orders.note_failure("503 Service Unavailable, again");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            orders.stalled(after).as_deref(),
            Some("nothing delivered for 60s: 503 Service Unavailable, again")
        );
        // Held, it is not stalled: its holds say why it does not send.
        orders.place_hold(offline()).await.unwrap();
        assert_eq!(orders.stalled(after), None);
        assert!(orders.lift_hold(HoldKind::EndpointOffline).await.unwrap());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            orders.stalled(after).as_deref(),
            Some("nothing delivered for 90s: 503 Service Unavailable, again")
        );
        // A delivery ends it, and the next failure counts from then.
        orders.note_progress();
        assert_eq!(orders.stalled(after), None);
        orders.note_failure("connection reset");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(orders.stalled(after), None);
        // What cannot be recorded is a stall at once.
        orders.note_unrecorded(Some("the disk is full".into()));
        assert!(orders
            .stalled(after)
            .is_some_and(|s| s.contains("cannot be recorded (the disk is full)")));
        orders.note_unrecorded(None);
        assert_eq!(orders.stalled(after), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_system_hold_is_in_effect_before_it_is_stored() {
        let (orders, store, dir) = opened().await;
        // Another connection holds the file's write lock: storing waits.
        let lock = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let placing = tokio::spawn({
            let orders = orders.clone();
            async move { orders.place_hold(offline()).await }
        });
        let held = |i: &Integration| i.record().holds.get(HoldKind::EndpointOffline).is_some();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !held(&orders) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(held(&orders), "in effect while the store waits");
        assert!(!placing.is_finished(), "not stored yet");
        lock.execute_batch("ROLLBACK").unwrap();
        placing.await.unwrap().unwrap();
        let stored = store.integration("orders").await.unwrap().unwrap();
        assert!(stored.holds.get(HoldKind::EndpointOffline).is_some());
    }

    /// Whether the sender was woken since the last look (a permit left).
    async fn woken(i: &Integration) -> bool {
        tokio::time::timeout(Duration::from_millis(1), i.woken())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_change_to_sending_wakes_the_sender() {
        let (orders, _store, _dir) = opened().await;
        let _before = woken(&orders).await;
        // Read again as it was (a cluster's heartbeat), renewed: no wake,
        // so a retry's wait (a target's Retry-After) is not cut short.
        orders.refresh().await.unwrap();
        orders.set_lease(Some(Instant::now() + Duration::from_secs(5)));
        assert!(!woken(&orders).await);
        // Held, then free again: woken once.
        orders.place_hold(offline()).await.unwrap();
        assert!(!woken(&orders).await);
        assert!(orders.lift_hold(HoldKind::EndpointOffline).await.unwrap());
        assert!(woken(&orders).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_shows_its_rate_and_the_time_left_on_the_paused_clock() {
        let (orders, store, _dir) = opened().await;
        orders
            .apply(IntegrationEvent::Pause, "tester", None)
            .await
            .unwrap();
        let records = (0..100)
            .map(|n| NewRecord {
                key: None,
                payload: format!("{{\"n\": {n}}}"),
            })
            .collect();
        store
            .enqueue("orders", "web", records, None, None)
            .await
            .unwrap();
        orders
            .apply(IntegrationEvent::Resume, "tester", None)
            .await
            .unwrap();
        let progress = |done, rate, eta_s| {
            Some(ResumeProgress {
                done,
                total: 100,
                rate,
                eta_s,
            })
        };
        // No time gone by: no rate, no estimate.
        assert_eq!(orders.resume_progress(), progress(0, 0.0, None));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(orders.resume_progress(), progress(0, 0.0, None));
        orders.count_sent(25);
        assert_eq!(orders.resume_progress(), progress(25, 2.5, Some(30.0)));
        tokio::time::advance(Duration::from_secs(10)).await;
        orders.count_sent(25);
        assert_eq!(orders.resume_progress(), progress(50, 2.5, Some(20.0)));
        // The whole backlog sent: the drain is over.
        orders.count_sent(60);
        assert_eq!(orders.resume_progress(), None);
    }
}
