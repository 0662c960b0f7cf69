//! The sender: delivers one integration's queue, in sequence order.
//!
//! # Design constraints
//! - **Order.** Transactions are read in sequence order and delivered in
//!   that order; a failed delivery is retried before anything behind it
//!   (unless `on_error = "skip"` settles a rejected record as Error).
//! - **One in-flight batch per integration.** One sender task per
//!   integration, one delivery at a time, under the integration's gate.
//! - **What may repeat.** A delivery is acknowledged in the store after the
//!   target took it. A crash or a stop between the two sends it again, with
//!   the same idempotency key `{site}:{integration}:{seq}`.
//! - **How much may repeat.** Each delivered chunk is acknowledged at once,
//!   beside the delivery of the next chunk, and that ack is committed before
//!   the chunk after the next is sent: at most one ack is being written at
//!   a time. An ack commits without fsync, which survives a crash of the
//!   process (not a power cut), so a SIGKILL sends again at most two chunks:
//!   the one whose ack was being written and the one in flight.
//! - **An outcome that cannot be recorded is not moved past.** When an ack
//!   (`ack_sent`), a failed attempt (`record_failure`) or a settlement
//!   (`settle`) cannot be written — a full disk — the sender keeps what
//!   was delivered pending, sends nothing more, and writes it again with
//!   back-off until it is stored; then it goes on. So a full disk costs no
//!   repeated sends; only a crash (or a stop) while it is full sends again
//!   what was delivered but not recorded.
//! - **Retries.** A failed delivery is tried again after a back-off
//!   (`engine::backoff`): [`RETRY_FIRST`] doubling to [`RETRY_MAX`], moved
//!   by up to ±20 % at random, or the target's `Retry-After` when longer.
//!   An operator's retry, ignore or resume cuts the wait short.
//! - **Pause.** Before each delivery the sender checks, under the gate, that
//!   the integration may send; see `engine::integration`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::endpoint::Endpoint;
use super::health::Health;
use super::Integration;
use crate::config::OnError;
use crate::connectors::{Delivery, FailureClass};
use crate::log::{level, SiteLog};
use crate::model::{idempotency_key, TxState};
use crate::store::{Link, QueuedTx, Store};

/// Transactions read from the store at a time, at least: more when a
/// target takes bigger batches (up to [`READ_MAX`]), so that a batch is
/// never cut short by the read.
pub const READ_BATCH: usize = 1000;
pub const READ_MAX: usize = 10_000;

/// The first wait before a failed delivery is tried again; it doubles with
/// each failure in a row, up to [`RETRY_MAX`] (a `Retry-After` the target
/// sends is honoured when it asks for longer).
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Each wait is moved by up to this fraction either way, at random, so that
/// senders that failed together do not retry in step.
pub const RETRY_JITTER: f64 = 0.2;

/// The back-off of failed deliveries and of outcomes the store refused.
fn retries() -> Backoff {
    Backoff::new(RETRY_FIRST, RETRY_MAX).with_jitter(RETRY_JITTER)
}

/// The longest wait between two tries of an outcome the store refused: a
/// try is cheap, and the sender goes on within seconds of space being freed.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Where the sender stands in its queue.
#[derive(Default)]
struct Position {
    /// Everything up to here is delivered or settled (and recorded, or
    /// being recorded).
    after: i64,
    /// Delivered or settled but not yet recorded: first, last seq, count.
    pending: Option<(i64, i64, i64)>,
    /// The links the pending deliveries made (record links): stored with
    /// their ack.
    pending_links: Vec<Link>,
    /// The ack being written, and what it records. At most one: the next
    /// starts only once this one is committed.
    acking: Option<(
        tokio::task::JoinHandle<crate::store::Result<()>>,
        Acked,
        Vec<Link>,
    )>,
    /// Set while an ack could not be written: `pending` holds what it was
    /// to record, nothing more is sent, and it is tried again after the
    /// back-off.
    unrecorded: Option<Unrecorded>,
}

impl Position {
    /// A link made by a delivery whose ack is not yet committed (pending,
    /// or being written), newest first: a later record of the same key,
    /// sent before the ack is in the store, finds its link here.
    fn unstored_link(&self, flow: &str, key: &str) -> Option<&str> {
        let acking = self.acking.iter().flat_map(|(_, _, links)| links.iter());
        self.pending_links
            .iter()
            .rev()
            .chain(acking.rev())
            .find(|l| l.flow == flow && l.key == key)
            .map(|l| l.link.as_str())
    }
}

/// A read of the queue made ahead.
type ReadAhead = tokio::task::JoinHandle<crate::store::Result<Vec<QueuedTx>>>;

/// What an ack records: first, last seq, count.
type Acked = (i64, i64, i64);

/// An ack the store refused, being tried again.
struct Unrecorded {
    backoff: Backoff,
    /// Whether the failure was logged (a full disk is said by the site log,
    /// once, instead).
    said: bool,
}

pub struct Sender {
    pub site: String,
    pub integration: Arc<Integration>,
    pub store: Arc<dyn Store>,
    /// Flow name → the endpoint its transactions go to.
    pub routes: HashMap<String, Arc<Endpoint>>,
    pub log: Arc<SiteLog>,
    /// Told of every delivery's outcome: it places and lifts the holds.
    pub health: Arc<Health>,
    /// Sent, failed, retried and the send latency, for `/metrics`.
    pub metrics: super::counters::SenderMetrics,
}

/// How one pass over a batch ended.
enum Pass {
    /// Everything read was delivered or settled.
    Done,
    /// Stopped early: the integration may not send, or the site stops.
    Interrupted,
    /// A delivery failed and is to be tried again after the pause.
    Retry(Duration),
}

impl Sender {
    pub async fn run(self, token: CancellationToken) {
        let name = self.integration.name.clone();
        let mut may_send = self.integration.watch_may_send();
        let mut progress = Position::default();
        let mut backoff = retries();
        // A sender before it (a site stopped) may have left off unrecorded.
        self.integration.note_unrecorded(None);
        // Deliver one record at a time up to this seq (set after a batch was
        // rejected, to find the record the target refuses).
        let mut single_until = 0i64;
        let read_size = self
            .routes
            .values()
            .filter_map(|e| e.target.as_ref())
            .map(|t| t.batch_size())
            .max()
            .unwrap_or(0)
            .clamp(READ_BATCH, READ_MAX);
        // The queue's next transactions, read while the batch before them
        // was being delivered: (read after seq, the read).
        let mut read_ahead: Option<(i64, ReadAhead)> = None;
        loop {
            if let Some(unrecorded) = progress.unrecorded.as_mut() {
                // Nothing more is sent until what was delivered is recorded.
                let wait = unrecorded.backoff.next_wait().min(RECORD_RETRY_MAX);
                if sleep_or_cancel(&token, wait).await {
                    return;
                }
                self.flush(&mut progress).await;
                self.finish_ack(&mut progress).await;
                continue;
            }
            while !*may_send.borrow_and_update() {
                tokio::select! {
                    _ = token.cancelled() => return,
                    changed = may_send.changed() => if changed.is_err() { return },
                }
            }
            let gate = tokio::select! {
                _ = token.cancelled() => return,
                gate = self.integration.gate().lock() => gate,
            };
            if !self.integration.may_send() {
                drop(gate);
                // Not sent although nothing holds it: a cluster's lease run
                // out by this node's clock, until the heartbeat renews it
                // or lets it go.
                if sleep_or_cancel(&token, Duration::from_millis(50)).await {
                    return;
                }
                continue;
            }
            if let Some((seq, _)) = self.integration.blocked() {
                // Under on_error = "block": wait behind the failed
                // transaction until a person retries or ignores it.
                match self.store.transaction(&name, seq).await {
                    Ok(Some(t)) if t.state == TxState::Error => {
                        drop(gate);
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = self.integration.woken() => {}
                            _ = may_send.changed() => {}
                        }
                        continue;
                    }
                    _ => {
                        self.integration.unblock();
                        self.integration.rewind();
                    }
                }
            }
            if self.integration.take_rewind() {
                self.finish_ack(&mut progress).await;
                if progress.unrecorded.is_some() {
                    // From the start again once the ack is written.
                    self.integration.rewind();
                    continue;
                }
                progress.after = 0;
            }
            // A read made ahead is used only if the sender goes on from
            // where it was made (a rewind starts over) and it found
            // something (an empty one may predate what was queued since).
            let ahead = match read_ahead.take() {
                Some((after, read)) if after == progress.after => read
                    .await
                    .ok()
                    .filter(|b| b.as_ref().is_ok_and(|b| !b.is_empty())),
                Some((_, read)) => {
                    read.abort();
                    None
                }
                None => None,
            };
            let read = match ahead {
                Some(read) => read,
                None => {
                    self.store
                        .next_batch(&name, progress.after, read_size)
                        .await
                }
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(e) => {
                    drop(gate);
                    self.log
                        .write(
                            level::ERROR,
                            format!("Cannot read the queue of {name}: {e}"),
                        )
                        .await;
                    if sleep_or_cancel(&token, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                self.finish_ack(&mut progress).await;
                drop(gate);
                if progress.unrecorded.is_some() {
                    continue;
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = self.integration.woken() => {}
                    _ = may_send.changed() => {}
                }
                continue;
            }
            // The next read goes on beside this batch's delivery.
            if let Some(last) = batch.last() {
                let (store, name, after) = (self.store.clone(), name.clone(), last.seq);
                read_ahead = Some((
                    after,
                    tokio::spawn(async move { store.next_batch(&name, after, read_size).await }),
                ));
            }
            let pass = self
                .deliver_batch(
                    &batch,
                    &token,
                    &mut single_until,
                    &mut backoff,
                    &mut progress,
                )
                .await;
            self.integration.set_in_flight(None);
            // The ack runs beside what comes next: the next read, or, once
            // the gate is open, whatever stopped this pass (a pause waits
            // for the gate, not for the disk).
            self.flush(&mut progress).await;
            drop(gate);
            if !matches!(pass, Pass::Done) {
                self.finish_ack(&mut progress).await;
            }
            if let Pass::Retry(wait) = pass {
                // An operator's retry, ignore or resume cuts the wait short.
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.integration.woken() => {}
                }
            }
        }
    }

    /// Records in the store what was delivered since the last flush. The
    /// ack runs beside what the sender does next; the previous ack, if still
    /// running, is waited for first (one at a time, so acks and progress
    /// keep their order, and an ack is committed before the chunk after the
    /// next one is sent). With nothing new to record, the ack in flight is
    /// left running.
    async fn flush(&self, progress: &mut Position) {
        if progress.pending.is_none() {
            return;
        }
        self.finish_ack(progress).await;
        if let Some((first, last, count)) = progress.pending.take() {
            // Read past them: should the ack fail, `finish_ack` makes them
            // pending again and nothing more is sent until it is written.
            progress.after = last;
            let store = self.store.clone();
            let name = self.integration.name.clone();
            let links = std::mem::take(&mut progress.pending_links);
            let stored = links.clone();
            let ack = tokio::spawn(async move { store.ack_sent(&name, first, last, stored).await });
            progress.acking = Some((ack, (first, last, count), links));
            // Let the ack reach the writer before the sender goes on: the
            // sooner it is committed, the less the next flush waits for it.
            tokio::task::yield_now().await;
        }
    }

    /// Waits for the ack in flight, if any, and counts it toward progress.
    /// An ack that fails is not moved past: its range is pending again
    /// (ahead of what was delivered since) and `unrecorded` is set, so the
    /// sender sends nothing more and tries it again with back-off.
    async fn finish_ack(&self, progress: &mut Position) {
        let Some((ack, (first, last, count), links)) = progress.acking.take() else {
            return;
        };
        let failure = match ack.await {
            Ok(Ok(())) => {
                // Stored: the store answers for its links from now on.
                self.integration.count_sent(count);
                let Some(unrecorded) = progress.unrecorded.take() else {
                    return;
                };
                self.integration.note_unrecorded(None);
                if unrecorded.said {
                    self.log
                        .write(
                            level::INFO,
                            format!("Deliveries of {} are recorded again", self.integration.name),
                        )
                        .await;
                }
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => crate::store::StoreError::Io(std::io::Error::other(e.to_string())),
        };
        if failure.is_fenced() {
            // Another node sends it now, from what is recorded: this node
            // records nothing more of it.
            progress.pending = None;
            progress.pending_links.clear();
            self.lost_lease(&failure).await;
            return;
        }
        progress.pending = Some(match progress.pending {
            Some((_, later, n)) => (first, later, count + n),
            None => (first, last, count),
        });
        let later = std::mem::replace(&mut progress.pending_links, links);
        progress.pending_links.extend(later);
        if progress.unrecorded.is_none() {
            self.integration.note_unrecorded(Some(failure.to_string()));
            let said = !failure.is_disk_full();
            if said {
                self.log
                    .write(
                        level::ERROR,
                        format!(
                            "Cannot record {count} deliveries of {}: {failure}; nothing more is \
                             sent until they are recorded (tried again)",
                            self.integration.name
                        ),
                    )
                    .await;
            }
            progress.unrecorded = Some(Unrecorded {
                backoff: retries(),
                said,
            });
        }
    }

    /// The store refused a write because this node no longer holds the
    /// integration's lease (another node took it over after it ran out):
    /// it stops sending it, and says why.
    async fn lost_lease(&self, why: &crate::store::StoreError) {
        self.integration.set_lease(None);
        self.log
            .write(
                level::ERROR,
                format!(
                    "Integration {} is no longer sent by this node: {why}; what it delivered \
                     but could not record is sent again by the node that holds it now",
                    self.integration.name
                ),
            )
            .await;
    }

    /// Writes an outcome the store refused (`write`: a `settle` or a
    /// `record_failure`) again, with back-off, until it is stored; nothing
    /// is sent meanwhile. `false` if the sender is to stop sending first (a
    /// stop or a pause): the transaction then stays as it is stored and is
    /// delivered again later, with the same key.
    async fn record<F, Fut>(
        &self,
        token: &CancellationToken,
        failure: crate::store::StoreError,
        mut write: F,
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::store::Result<()>>,
    {
        if failure.is_fenced() {
            self.lost_lease(&failure).await;
            return false;
        }
        // A full disk is said by the site log, once.
        if !failure.is_disk_full() {
            self.log
                .write(
                    level::ERROR,
                    format!(
                        "Cannot record the outcome of a delivery of {}: {failure}; nothing more \
                         is sent until it is recorded (tried again)",
                        self.integration.name
                    ),
                )
                .await;
        }
        self.integration.note_unrecorded(Some(failure.to_string()));
        let mut may_send = self.integration.watch_may_send();
        let mut backoff = retries();
        let recorded = loop {
            let wait = backoff.next_wait().min(RECORD_RETRY_MAX);
            tokio::select! {
                _ = token.cancelled() => break false,
                _ = may_send.wait_for(|may| !may) => break false,
                _ = tokio::time::sleep(wait) => {}
            }
            if write().await.is_ok() {
                break true;
            }
        };
        self.integration.note_unrecorded(None);
        recorded
    }

    /// Delivers `batch` chunk by chunk, noting in `progress` what was
    /// delivered or settled and flushing it after each delivered chunk (so
    /// a crash sends again at most two chunks). Returns how the pass ended.
    async fn deliver_batch(
        &self,
        batch: &[QueuedTx],
        token: &CancellationToken,
        single_until: &mut i64,
        backoff: &mut Backoff,
        processed: &mut Position,
    ) -> Pass {
        let name = &self.integration.name;
        fn done(p: &mut Position, first: i64, last: i64, n: i64) {
            p.pending = Some(match p.pending {
                Some((from, _, count)) => (from, last, count + n),
                None => (first, last, n),
            });
        }
        let mut i = 0;
        while i < batch.len() {
            if token.is_cancelled() || !self.integration.may_send() {
                return Pass::Interrupted;
            }
            let Some(endpoint) = self.routes.get(&batch[i].flow) else {
                let msg = format!("flow '{}' is no longer configured", batch[i].flow);
                let seq = batch[i].seq;
                let settle = || {
                    self.store
                        .settle(name, seq, TxState::Error, Some(msg.clone()))
                };
                if let Err(e) = settle().await {
                    if !self.record(token, e, settle).await {
                        return Pass::Interrupted;
                    }
                }
                done(processed, batch[i].seq, batch[i].seq, 1);
                i += 1;
                continue;
            };
            let Some(target) = endpoint.target.as_ref() else {
                return Pass::Retry(Duration::from_secs(1));
            };
            let limit = if batch[i].seq <= *single_until {
                1
            } else {
                target.batch_size().max(1)
            };
            let mut end = i + 1;
            while end < batch.len()
                && end - i < limit
                && self
                    .routes
                    .get(&batch[end].flow)
                    .is_some_and(|e| Arc::ptr_eq(e, endpoint))
            {
                end += 1;
            }
            // The flow's mapping is applied now (the queue keeps each record
            // as it came, so a mapping fixed by a reload applies to a retry).
            // A record it makes several of is delivered as `key`, `key#2`, …
            // in the same call (even past the target's batch size, when it
            // alone makes more) and acked as one transaction. The chunk stops
            // before a record it filters out or fails on: at the head of a
            // chunk, the one is settled Ignored, the other fails for good as
            // a rejected delivery does, without calling the target.
            // (idempotency key, payload, index in the chunk of its transaction)
            let mut mapped: Vec<(String, std::borrow::Cow<'_, str>, usize)> = Vec::new();
            let mut mapping_failure = None;
            for (n, t) in batch[i..end].iter().enumerate() {
                let key = idempotency_key(&self.site, name, t.seq);
                let flow = self
                    .integration
                    .config
                    .flows
                    .iter()
                    .find(|f| f.name == t.flow);
                let Some(mapping) = flow.map(|f| &f.mapping).filter(|m| !m.is_identity()) else {
                    mapped.push((key, std::borrow::Cow::Borrowed(&t.payload), n));
                    continue;
                };
                let outputs = match mapping.apply_text(&t.payload) {
                    Ok(outputs) if !outputs.is_empty() => outputs,
                    Ok(_) if n == 0 => {
                        let reason = format!("flow {}: the transform yielded nothing", t.flow);
                        let settle = || {
                            self.store
                                .settle(name, t.seq, TxState::Ignored, Some(reason.clone()))
                        };
                        if let Err(e) = settle().await {
                            if !self.record(token, e, settle).await {
                                return Pass::Interrupted;
                            }
                        }
                        self.log
                            .write(
                                level::DETAIL,
                                format!("Transaction {} of {name} ignored: {reason}", t.seq),
                            )
                            .await;
                        break;
                    }
                    Err(e) if n == 0 => {
                        mapping_failure = Some(crate::connectors::DeliveryError {
                            class: FailureClass::Rejected,
                            message: format!("flow {}: {e}", t.flow),
                            retry_after: None,
                        });
                        end = i + 1;
                        break;
                    }
                    _ => {
                        end = i + n;
                        break;
                    }
                };
                if n > 0 && mapped.len() + outputs.len() > limit {
                    // The target's batch holds no more; a record that alone
                    // makes more than a batch still goes in one call.
                    end = i + n;
                    break;
                }
                for (k, output) in outputs.into_iter().enumerate() {
                    let key = if k == 0 {
                        key.clone()
                    } else {
                        format!("{key}#{}", k + 1)
                    };
                    mapped.push((key, std::borrow::Cow::Owned(output), n));
                }
            }
            if mapped.is_empty() && mapping_failure.is_none() {
                // The head was settled Ignored.
                done(processed, batch[i].seq, batch[i].seq, 1);
                i += 1;
                continue;
            }
            let chunk = &batch[i..end];
            let (first, last) = (chunk[0].seq, chunk[chunk.len() - 1].seq);
            // Record links: the id the target gave each record's key, if
            // it gave one (then the delivery is an update of it).
            let mut links: Vec<Option<String>> = vec![None; chunk.len()];
            if target.links() {
                for (t, link) in chunk.iter().zip(links.iter_mut()) {
                    let Some(key) = &t.key else { continue };
                    *link = match processed.unstored_link(&t.flow, key) {
                        Some(made) => Some(made.to_string()),
                        None => match self.store.link(&t.flow, key).await {
                            Ok(found) => found,
                            Err(e) => {
                                // Not knowing the link could create the
                                // record twice: wait and read again.
                                self.log
                                    .write(
                                        level::ERROR,
                                        format!("Cannot read the links of flow {}: {e}", t.flow),
                                    )
                                    .await;
                                return Pass::Retry(Duration::from_secs(1));
                            }
                        },
                    };
                }
            }
            let deliveries: Vec<Delivery<'_>> = mapped
                .iter()
                .map(|(key, payload, owner)| Delivery {
                    link: links[*owner].as_deref(),
                    ..Delivery::new(key, payload)
                })
                .collect();
            let seen = endpoint.credentials_seen();
            let result = match mapping_failure {
                Some(failure) => Err(failure),
                None => {
                    self.integration.set_in_flight(Some((first, last)));
                    let started = Instant::now();
                    let result = tokio::select! {
                        _ = token.cancelled() => return Pass::Interrupted,
                        r = target.deliver(&deliveries) => r,
                    };
                    self.metrics.latency.record(started.elapsed().as_secs_f64());
                    result
                }
            };
            match result {
                Ok(delivered) => {
                    for ((_, _, owner), link) in mapped.iter().zip(delivered.links) {
                        let t = &chunk[*owner];
                        let (Some(key), Some(link)) = (&t.key, link) else {
                            continue;
                        };
                        processed.pending_links.push(Link {
                            flow: t.flow.clone(),
                            key: key.clone(),
                            link,
                            updated_at: 0,
                        });
                    }
                    self.metrics.sent(chunk.len());
                    self.health.delivered(endpoint).await;
                    self.integration.note_progress();
                    backoff.reset();
                    done(processed, first, last, chunk.len() as i64);
                    i = end;
                    self.flush(processed).await;
                    if processed.unrecorded.is_some() {
                        return Pass::Interrupted;
                    }
                }
                Err(e) if endpoint.refused_replaced(seen, &e) => {
                    // Not the endpoint's state, nor the records' failure:
                    // sent again at once with the new credentials.
                    self.log
                        .write(
                            level::INFO,
                            format!(
                                "Endpoint {} refused the credentials replaced while transactions \
                                 {first}-{last} of {name} were on their way; sent again with \
                                 the new ones",
                                endpoint.name
                            ),
                        )
                        .await;
                    return Pass::Retry(Duration::ZERO);
                }
                Err(e) => {
                    if !deliveries.is_empty() {
                        // Not the mapping's failure: the endpoint's.
                        self.health.failed(endpoint, &e).await;
                    }
                    self.integration.note_failure(&e.message);
                    let record_failure =
                        || self.store.record_failure(name, first, last, &e.message);
                    if let Err(se) = record_failure().await {
                        if !self.record(token, se, record_failure).await {
                            return Pass::Interrupted;
                        }
                    }
                    // A failure for good: rejected, or intermittent with
                    // auto-resolve off or its retry limit reached.
                    let flow = self
                        .integration
                        .config
                        .flows
                        .iter()
                        .find(|f| f.name == chunk[0].flow);
                    let for_good = match e.class {
                        FailureClass::Rejected => true,
                        // Held until the endpoint is fixed: nothing is lost.
                        FailureClass::Unauthorized | FailureClass::Untrusted => false,
                        _ => flow.is_some_and(|f| {
                            !f.auto_resolve
                                || (f.retry_limit > 0
                                    && chunk[0].attempts + 1 >= i64::from(f.retry_limit))
                        }),
                    };
                    if for_good {
                        if chunk.len() > 1 {
                            // Find the record it refuses: one at a time.
                            *single_until = last;
                            return Pass::Retry(Duration::ZERO);
                        }
                        let settle = || {
                            self.store
                                .settle(name, first, TxState::Error, Some(e.message.clone()))
                        };
                        if let Err(se) = settle().await {
                            if !self.record(token, se, settle).await {
                                return Pass::Interrupted;
                            }
                        }
                        done(processed, first, first, 1);
                        self.metrics.failed();
                        if self.integration.config.on_error == OnError::Skip {
                            self.log
                                .write(
                                    level::ERROR,
                                    format!(
                                        "Transaction {first} of {name} failed, skipped: {}",
                                        e.message
                                    ),
                                )
                                .await;
                            i = end;
                            continue;
                        }
                        self.log
                            .write(
                                level::ERROR,
                                format!(
                                    "Transaction {first} of {name} failed; the queue waits behind it \
                                     until it is retried or ignored: {}",
                                    e.message
                                ),
                            )
                            .await;
                        self.integration.block(first, &e.message);
                        return Pass::Interrupted;
                    }
                    self.metrics.retried(chunk.len());
                    let wait = backoff.next_wait_honouring(e.retry_after);
                    return Pass::Retry(wait);
                }
            }
        }
        Pass::Done
    }
}

/// Returns true if cancelled before the time was up.
async fn sleep_or_cancel(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
