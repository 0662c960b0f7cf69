//! The tests of the [`Store`] trait, run against each backend: SQLite
//! always, PostgreSQL when `SLUICE_TEST_PG_URL` names a server (each test
//! in a database of its own, dropped after it). What survives reopening,
//! order, atomic capture, links, runs, log and audit; `model.rs` runs
//! random sequences of operations against a model of the queue. What only
//! one backend has is tested beside it (`sqlite/tests.rs`,
//! `postgres/tests.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::OptionalExtension;

use super::*;
use crate::model::{now_millis, IntegrationState};

mod model;

/// The PostgreSQL server of the tests, when there is one.
pub(crate) fn pg_url() -> Option<String> {
    std::env::var("SLUICE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A PostgreSQL database of one test's own: created on the server of
/// `SLUICE_TEST_PG_URL`, dropped (whoever is still connected) when this
/// is dropped.
pub(crate) struct PgTestDb {
    pub name: String,
    /// The server's URL with this database.
    pub url: String,
    admin: String,
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", crate::redact::url(url)));
    tokio::spawn(async move { conn.await.ok() });
    client
}

impl PgTestDb {
    pub async fn new(admin: &str) -> PgTestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).unwrap();
        let name = format!(
            "sluice_t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            u32::from_le_bytes(random)
        );
        pg_connect(admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        PgTestDb {
            name,
            url: url.to_string(),
            admin: admin.to_string(),
        }
    }

    /// A connection of its own to the database, beside the store's.
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // On a runtime of its own: a drop may run inside the test's.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    pg_connect(&admin)
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                        .ok();
                })
        })
        .join();
        if dropped.is_err() {
            eprintln!("the test database {} was not dropped", self.name);
        }
    }
}

/// Where one test's store lives; opened as often as the test likes (a
/// restart is opening it again).
pub(crate) enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres {
        db: PgTestDb,
        site: String,
    },
}

/// One backend of each kind there is to test against.
pub(crate) async fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::sqlite()];
    if let Some(url) = pg_url() {
        all.push(Backend::postgres(&url).await);
    }
    all
}

impl Backend {
    pub fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("site.db");
        Backend::Sqlite { _dir: dir, path }
    }

    pub async fn postgres(url: &str) -> Backend {
        Backend::Postgres {
            db: PgTestDb::new(url).await,
            site: "LIVE".into(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).unwrap()),
            Backend::Postgres { db, site } => Arc::new(PgStore::open(&db.url, site).await.unwrap()),
        }
    }

    /// SQLite's bookkeeping of a queue as stored: (last_seq, queued,
    /// floor); `None` for a backend that keeps none.
    pub fn bookkeeping(&self, integration: &str) -> Option<Option<(i64, i64, i64)>> {
        let Backend::Sqlite { path, .. } = self else {
            return None;
        };
        let conn = rusqlite::Connection::open(path).unwrap();
        Some(
            conn.query_row(
                "SELECT last_seq, queued, floor FROM queues WHERE integration = ?1",
                [integration],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .unwrap(),
        )
    }

    /// From now on, the insert of a transaction whose payload is `payload`
    /// fails (a trigger of the database's own).
    pub async fn fail_inserts_of(&self, payload: &str) {
        match self {
            Backend::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .execute_batch(&format!(
                        "CREATE TRIGGER boom BEFORE INSERT ON transactions
                         WHEN NEW.payload = '{payload}'
                         BEGIN SELECT RAISE(ABORT, 'boom'); END;"
                    ))
                    .unwrap();
            }
            Backend::Postgres { db, .. } => {
                db.client()
                    .await
                    .batch_execute(&format!(
                        "CREATE FUNCTION boom() RETURNS trigger AS $$
                         BEGIN
                           IF NEW.payload = '{payload}' THEN RAISE EXCEPTION 'boom'; END IF;
                           RETURN NEW;
                         END $$ LANGUAGE plpgsql;
                         CREATE TRIGGER boom BEFORE INSERT ON sluice_transactions
                         FOR EACH ROW EXECUTE FUNCTION boom();"
                    ))
                    .await
                    .unwrap();
            }
        }
    }
}

pub(crate) fn records(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| NewRecord {
            key: Some(format!("k{i}")),
            payload: format!("{{\"n\":{i}}}"),
        })
        .collect()
}

pub(crate) fn hold(kind: HoldKind) -> Hold {
    Hold {
        kind,
        by: "ann".into(),
        since: 7,
        reason: "why".into(),
    }
}

pub(crate) fn put(hold: Hold) -> IntegrationChange {
    IntegrationChange {
        put: Some(hold),
        ..IntegrationChange::default()
    }
}

pub(crate) fn remove(kind: HoldKind) -> IntegrationChange {
    IntegrationChange {
        remove: Some(kind),
        ..IntegrationChange::default()
    }
}

pub(crate) fn to_state(state: IntegrationState) -> IntegrationChange {
    IntegrationChange {
        state: Some(state),
        ..IntegrationChange::default()
    }
}

pub(crate) fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        ts: 1,
        actor: "ann".into(),
        action: action.into(),
        subject: "LIVE".into(),
        reason: None,
        outcome: "ok".into(),
        node: None,
    }
}

pub(crate) fn seqs(batch: &[QueuedTx]) -> Vec<i64> {
    batch.iter().map(|t| t.seq).collect()
}
#[tokio::test]
async fn states_holds_checkpoints_and_sequences_survive_reopening() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open().await;
            assert_eq!(s.site_state().await.unwrap(), None);
            assert_eq!(s.integration("a").await.unwrap(), None);
            // A stop: the state, its holds and its audit entry together.
            s.set_site_stopped(
                hold(HoldKind::SiteStopped),
                vec!["a".into()],
                entry("site.stop"),
            )
            .await
            .unwrap();
            let pause = IntegrationChange {
                state: Some(IntegrationState::Paused),
                remove: None,
                put: Some(hold(HoldKind::Operator)),
            };
            s.change_integration("a", pause, Some(entry("integration.pause")))
                .await
                .unwrap();
            s.change_integration("a", put(hold(HoldKind::SiteStopped)), None)
                .await
                .unwrap();
            s.set_flow_status("f", FlowStatus::Pending(RunMode::Changed))
                .await
                .unwrap();
            s.set_flow_status("g", FlowStatus::Running(RunMode::All))
                .await
                .unwrap();
            assert_eq!(
                s.enqueue("a", "f", records(0, 3), Some("\"x\"".into()), None)
                    .await
                    .unwrap(),
                Some((1, 3))
            );
        }
        let s = b.open().await;
        assert_eq!(s.site_state().await.unwrap(), Some(SiteState::Stopped));
        let actions: Vec<_> = s
            .audit(10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions, ["integration.pause", "site.stop"]);
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.state, IntegrationState::Paused);
        let kinds: Vec<_> = a.holds.iter().map(|h| h.kind).collect();
        assert!(kinds.contains(&HoldKind::Operator) && kinds.contains(&HoldKind::SiteStopped));
        assert_eq!(a.holds[0], hold(HoldKind::Operator));
        let f = s.flow("f").await.unwrap();
        assert_eq!(f.status, FlowStatus::Pending(RunMode::Changed));
        assert_eq!(f.checkpoint.as_deref(), Some("\"x\""));
        assert_eq!(
            s.flow("never").await.unwrap(),
            FlowRecord {
                status: FlowStatus::Blank,
                checkpoint: None
            }
        );
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        assert_eq!(s.queued_count("never").await.unwrap(), 0);
        // The sequence goes on after a restart.
        assert_eq!(
            s.enqueue("a", "f", records(3, 2), None, None)
                .await
                .unwrap(),
            Some((4, 5))
        );
        assert_eq!(s.enqueue("a", "f", vec![], None, None).await.unwrap(), None);
        // A change of the state alone touches no hold: the store keeps no rule
        // of its own (the model's `Holds` has them).
        s.change_integration("a", to_state(IntegrationState::Paused), None)
            .await
            .unwrap();
        assert_eq!(s.integration("a").await.unwrap().unwrap().holds.len(), 2);
        // A resume as the model decides it removes the operator hold, and only
        // the kind it names: the system's stays.
        let resume = IntegrationChange {
            remove: Some(HoldKind::Operator),
            ..to_state(IntegrationState::Active)
        };
        assert!(s.change_integration("a", resume, None).await.unwrap());
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.state, IntegrationState::Active);
        assert_eq!(a.holds.len(), 1);
        assert_eq!(a.holds[0].kind, HoldKind::SiteStopped);
        // A removal says whether there was a hold of that kind.
        assert!(s
            .change_integration("a", remove(HoldKind::SiteStopped), None)
            .await
            .unwrap());
        assert!(!s
            .change_integration("a", remove(HoldKind::SiteStopped), None)
            .await
            .unwrap());
        s.change_integration("a", put(hold(HoldKind::SiteStopped)), None)
            .await
            .unwrap();
        // Every stored flow's status, for a start to decide on.
        assert_eq!(
            s.flow_statuses().await.unwrap(),
            vec![
                ("f".to_string(), FlowStatus::Pending(RunMode::Changed)),
                ("g".to_string(), FlowStatus::Running(RunMode::All)),
            ]
        );
        // A start as decided: Running, the site's holds gone, the statuses it
        // was given, its audit entry.
        let blank = vec![
            ("f".to_string(), FlowStatus::Blank),
            ("g".to_string(), FlowStatus::Blank),
        ];
        s.set_site_running(HoldKind::SiteStopped, blank, entry("site.start"))
            .await
            .unwrap();
        assert_eq!(s.site_state().await.unwrap(), Some(SiteState::Running));
        assert!(s.integration("a").await.unwrap().unwrap().holds.is_empty());
        assert_eq!(s.audit(1).await.unwrap()[0].action, "site.start");
        assert_eq!(s.flow("f").await.unwrap().status, FlowStatus::Blank);
        assert_eq!(s.flow("g").await.unwrap().status, FlowStatus::Blank);
        // The checkpoint is not touched by the reset.
        assert_eq!(
            s.flow("f").await.unwrap().checkpoint.as_deref(),
            Some("\"x\"")
        );
    }
}

/// Every read of a store whose tables hold values it never writes (site
/// `dancing`, integration `a` `active` with a hold of kind `gremlins`, flow
/// `f` `Exploded` with a run `sideways`, a log line of level -1,
/// transaction 1 of `a` in state 9) answers `Corrupt`, not a panic.
pub(crate) async fn assert_reads_corrupt<S: Store + ?Sized>(s: &S) {
    fn corrupt<T: std::fmt::Debug>(r: Result<T>) {
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    }
    corrupt(s.site_state().await);
    corrupt(s.integration("a").await);
    corrupt(s.flow("f").await);
    corrupt(s.flow_statuses().await);
    corrupt(s.runs("f", 10).await);
    corrupt(s.log(0, None, 255, 10).await);
    corrupt(s.transaction("a", 1).await);
    corrupt(s.transactions("a", None, None, 10).await);
}

/// Has `tasks` callers, caller `t` on `stores[t % stores.len()]`, each
/// queue four calls of `size(t, call)` records one after the other, all at
/// once; checks that each caller's calls are queued in its order and that
/// every sequence number is given once, without a gap. Returns each call's
/// range with the number of its first record, in sequence order, and the
/// sequence after the last.
pub(crate) async fn enqueue_at_once(
    stores: &[Arc<dyn Store>],
    tasks: usize,
    size: fn(usize, usize) -> usize,
) -> (Vec<((i64, i64), usize)>, i64) {
    let mut running = Vec::new();
    for t in 0..tasks {
        let s = stores[t % stores.len()].clone();
        running.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for call in 0..4usize {
                let n = size(t, call);
                let first = t * 1000 + call * 100;
                let range = s
                    .enqueue("a", "f", records(first, n), None, None)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(range.1 - range.0 + 1, n as i64);
                got.push((range, first));
            }
            got
        }));
    }
    let mut ranges = Vec::new();
    for t in running {
        let got = t.await.unwrap();
        // One caller's calls are queued in the order it made them.
        assert!(got.windows(2).all(|w| w[0].0 .1 < w[1].0 .0), "{got:?}");
        ranges.extend(got);
    }
    ranges.sort();
    let mut next = 1;
    for ((first, last), _) in &ranges {
        assert_eq!(*first, next, "no gap, no overlap");
        next = last + 1;
    }
    (ranges, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_get_distinct_increasing_contiguous_sequences() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        let (ranges, next) =
            enqueue_at_once(std::slice::from_ref(&s), 32, |t, call| 1 + (t + call) % 70).await;
        // Each call's records are contiguous and in their order.
        let batch = s.next_batch("a", 0, 100_000).await.unwrap();
        assert_eq!(batch.len() as i64, next - 1);
        assert_eq!(s.queued_count("a").await.unwrap(), next - 1);
        for ((first, last), from) in ranges {
            for seq in first..=last {
                let t = &batch[(seq - 1) as usize];
                assert_eq!(t.seq, seq);
                let n = serde_json::from_str::<serde_json::Value>(&t.payload).unwrap()["n"]
                    .as_i64()
                    .unwrap();
                assert_eq!(n, from as i64 + (seq - first));
            }
        }
    }
}

#[tokio::test]
async fn enqueue_moves_the_checkpoint_and_the_run_with_the_records() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        let run = s.start_run("f", RunMode::Changed).await.unwrap();
        s.enqueue("a", "f", records(0, 4), Some("4".into()), Some(run))
            .await
            .unwrap();
        s.enqueue("a", "f", records(4, 2), Some("6".into()), Some(run))
            .await
            .unwrap();
        // A checkpoint alone moves too.
        s.enqueue("a", "f", vec![], Some("7".into()), Some(run))
            .await
            .unwrap();
        assert_eq!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("7"));
        let runs = s.runs("f", 5).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].captured, 6);
        assert_eq!(runs[0].pages, 3, "the page that queued nothing counts");
        assert_eq!(runs[0].seqs, Some((1, 6)));
        assert_eq!(s.errors_between("a", 1, 6).await.unwrap(), 0);
        s.settle("a", 2, TxState::Error, Some("422".into()))
            .await
            .unwrap();
        s.settle("a", 5, TxState::Error, Some("422".into()))
            .await
            .unwrap();
        assert_eq!(s.errors_between("a", 1, 6).await.unwrap(), 2);
        assert_eq!(s.errors_between("a", 3, 6).await.unwrap(), 1);
        assert_eq!(s.runs("f", 1).await.unwrap()[0].captured, 6);
        assert_eq!(runs[0].mode, RunMode::Changed);
        assert_eq!(runs[0].result, None);
        assert_eq!(runs[0].finished_at, None);
        // A run left open by a crash is closed as the engine says: halted.
        let crash = "the daemon stopped during the run";
        assert_eq!(
            s.close_abandoned_runs(RunResult::Halted, crash)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.close_abandoned_runs(RunResult::Halted, crash)
                .await
                .unwrap(),
            0
        );
        let halted = &s.runs("f", 1).await.unwrap()[0];
        assert_eq!(halted.result, Some(RunResult::Halted));
        assert_eq!(
            halted.error.as_deref(),
            Some("the daemon stopped during the run")
        );
        assert!(halted.finished_at.is_some());
        let second = s.start_run("f", RunMode::All).await.unwrap();
        // With the flow's status after it, in the same transaction.
        let after = FlowStatus::Done(RunResult::Failed);
        s.finish_run(
            second,
            RunResult::Failed,
            Some("boom".into()),
            Some(("f", after)),
        )
        .await
        .unwrap();
        assert_eq!(s.flow("f").await.unwrap().status, after);
        let runs = s.runs("f", 10).await.unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [second, run]);
        assert_eq!(runs[0].result, Some(RunResult::Failed));
        assert_eq!(runs[0].error.as_deref(), Some("boom"));
        assert_eq!(s.runs("f", 1).await.unwrap().len(), 1);
        assert!(s.runs("other", 10).await.unwrap().is_empty());
    }
}

/// A write that fails is undone whole (its records, checkpoint and run
/// count together), and alone: the writes committed with it stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_enqueue_is_undone_whole_and_alone() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        s.enqueue("a", "f", records(0, 2), Some("2".into()), None)
            .await
            .unwrap();
        let run = s.start_run("f", RunMode::Changed).await.unwrap();
        b.fail_inserts_of("\"boom\"").await;
        let mut tasks = Vec::new();
        for t in 0..20usize {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut batch = records(100 + t * 10, 70);
                if t == 7 {
                    batch[69].payload = "\"boom\"".into();
                }
                let got = s
                    .enqueue("a", "f", batch, Some(format!("{t}")), Some(run))
                    .await;
                (t, got)
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                (7, got) => assert!(got.is_err(), "{got:?}"),
                (_, got) => {
                    got.unwrap().unwrap();
                    ok += 1;
                }
            }
        }
        assert_eq!(ok, 19);
        assert_eq!(s.queued_count("a").await.unwrap(), 2 + 19 * 70);
        assert_eq!(s.runs("f", 1).await.unwrap()[0].captured, 19 * 70);
        assert_ne!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("7"));
        let all = s.next_batch("a", 0, 10_000).await.unwrap();
        assert_eq!(all.len(), 2 + 19 * 70);
        assert!(all.iter().all(|t| t.payload != "\"boom\""));
        // No number was lost or reused by the failed write.
        assert_eq!(seqs(&all), (1..=(2 + 19 * 70)).collect::<Vec<i64>>());
        assert_eq!(
            s.enqueue("a", "f", records(0, 1), None, None)
                .await
                .unwrap(),
            Some((1333, 1333))
        );
        // A lone failing write changes nothing either.
        let got = s
            .enqueue(
                "a",
                "f",
                vec![NewRecord {
                    key: None,
                    payload: "\"boom\"".into(),
                }],
                Some("lost".into()),
                Some(run),
            )
            .await;
        assert!(got.is_err(), "{got:?}");
        assert_ne!(
            s.flow("f").await.unwrap().checkpoint.as_deref(),
            Some("lost")
        );
        assert_eq!(s.queued_count("a").await.unwrap(), 1333);
        if let Some(stored) = b.bookkeeping("a") {
            assert_eq!(stored, Some((1333, 1333, 0)));
        }
    }
}

#[tokio::test]
async fn ack_settle_prune_and_listing() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        s.enqueue("a", "f", records(0, 5), None, None)
            .await
            .unwrap();
        s.enqueue("b", "g", records(0, 1), None, None)
            .await
            .unwrap();
        s.record_failure("a", 1, 2, "503 busy").await.unwrap();
        s.ack_sent("a", 1, 2, vec![]).await.unwrap();
        // Acking again changes nothing.
        s.ack_sent("a", 1, 2, vec![]).await.unwrap();
        s.settle("a", 3, TxState::Error, Some("422 no".into()))
            .await
            .unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 2);
        assert_eq!(s.queued_count("b").await.unwrap(), 1);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [4, 5]);
        assert_eq!(seqs(&s.next_batch("a", 4, 10).await.unwrap()), [5]);
        assert_eq!(seqs(&s.next_batch("a", 0, 1).await.unwrap()), [4]);
        assert_eq!(s.first_error("a").await.unwrap(), Some(3));
        assert_eq!(s.first_error("b").await.unwrap(), None);
        let errors = s
            .transactions("a", Some(TxState::Error), None, 10)
            .await
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].last_error.as_deref(), Some("422 no"));
        let all = s.transactions("a", None, None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|t| t.seq).collect::<Vec<_>>(),
            [5, 4, 3, 2, 1]
        );
        assert_eq!(all[4].attempts, 1);
        assert_eq!(all[4].last_error.as_deref(), Some("503 busy"));
        assert_eq!(all[4].state, TxState::Sent);
        assert_eq!(all[4].key.as_deref(), Some("k0"));
        assert_eq!(all[4].flow, "f");
        assert!(all[4].updated_at >= all[4].created_at);
        assert_eq!(all[0].record, serde_json::json!({"n": 4}));
        let page = s.transactions("a", None, Some(4), 2).await.unwrap();
        assert_eq!(page.iter().map(|t| t.seq).collect::<Vec<_>>(), [3, 2]);
        let queued = s
            .transactions("a", Some(TxState::Queued), None, 10)
            .await
            .unwrap();
        assert_eq!(queued.iter().map(|t| t.seq).collect::<Vec<_>>(), [5, 4]);
        let sent = s
            .transactions("a", Some(TxState::Sent), None, 10)
            .await
            .unwrap();
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), [2, 1]);
        assert!(s
            .transactions("a", Some(TxState::Sending), None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            s.transaction("a", 3).await.unwrap().unwrap().state,
            TxState::Error
        );
        assert_eq!(s.transaction("a", 99).await.unwrap(), None);
        assert!(matches!(
            s.settle("a", 4, TxState::Sending, None).await,
            Err(StoreError::Corrupt(_))
        ));
        // A payload that is not JSON is shown as a string.
        s.enqueue(
            "c",
            "f",
            vec![NewRecord {
                key: None,
                payload: "not json".into(),
            }],
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            s.transactions("c", None, None, 1).await.unwrap()[0].record,
            serde_json::json!("not json")
        );
        // Back to Queued (a retry) counts again, in its place in the queue.
        s.settle("a", 3, TxState::Queued, None).await.unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [3, 4, 5]);
        assert_eq!(
            s.transaction("a", 3)
                .await
                .unwrap()
                .unwrap()
                .last_error
                .as_deref(),
            Some("422 no")
        );
        // Settling a transaction that does not exist changes nothing.
        s.settle("a", 99, TxState::Ignored, None).await.unwrap();
        // Pruning takes only what was sent or ignored, and seqs go on.
        s.settle("a", 4, TxState::Ignored, None).await.unwrap();
        let ignored = s
            .transactions("a", Some(TxState::Ignored), None, 10)
            .await
            .unwrap();
        assert_eq!(ignored.iter().map(|t| t.seq).collect::<Vec<_>>(), [4]);
        s.settle("a", 5, TxState::Error, None).await.unwrap();
        assert_eq!(s.prune(0).await.unwrap(), 0);
        assert_eq!(s.prune(now_millis() + 1).await.unwrap(), 3);
        let left = s.transactions("a", None, None, 10).await.unwrap();
        assert_eq!(left.iter().map(|t| t.seq).collect::<Vec<_>>(), [5, 3]);
        s.ack_sent("a", 1, 10, vec![]).await.unwrap();
        s.settle("a", 5, TxState::Sent, None).await.unwrap();
        assert_eq!(s.prune(now_millis() + 1).await.unwrap(), 2);
        assert!(s
            .transactions("a", None, None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.queued_count("a").await.unwrap(), 0);
        drop(s);
        let s = b.open().await;
        assert_eq!(
            s.enqueue("a", "f", records(9, 1), None, None)
                .await
                .unwrap(),
            Some((6, 6))
        );
        assert_eq!(s.queued_count("b").await.unwrap(), 1);
    }
}

/// Errors handled in bulk: those in Error listed in sequence order
/// without their records, page by page; many settled at once, each only
/// if it is still in Error, with the queue's bookkeeping kept.
#[tokio::test]
async fn errors_are_listed_without_records_and_settled_in_bulk() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        s.enqueue("a", "f", records(0, 6), None, None)
            .await
            .unwrap();
        s.enqueue("b", "g", records(0, 1), None, None)
            .await
            .unwrap();
        s.ack_sent("a", 1, 1, vec![]).await.unwrap();
        for seq in [2, 3, 5, 6] {
            s.settle("a", seq, TxState::Error, Some(format!("422 no {seq}")))
                .await
                .unwrap();
        }
        s.settle("b", 1, TxState::Error, Some("500".into()))
            .await
            .unwrap();
        let errors = s.errors("a", 0, 10).await.unwrap();
        assert_eq!(
            errors.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3, 5, 6]
        );
        assert_eq!(errors[0].flow, "f");
        assert_eq!(errors[0].last_error.as_deref(), Some("422 no 2"));
        assert!(errors[0].updated_at > 0);
        let page = s.errors("a", 3, 1).await.unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert!(s.errors("a", 6, 10).await.unwrap().is_empty());
        assert!(s.errors("nobody", 0, 10).await.unwrap().is_empty());

        // Retried: those still in Error only (1 is Sent, 4 Queued, 99
        // gone), back in their places in the queue, answers kept.
        let done = s
            .settle_many_by_operator(
                "a",
                vec![1, 2, 3, 4, 6, 99],
                TxState::Error,
                TxState::Queued,
            )
            .await
            .unwrap();
        assert_eq!(done, 3);
        assert_eq!(s.queued_count("a").await.unwrap(), 4);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [2, 3, 4, 6]);
        assert_eq!(
            s.transaction("a", 2)
                .await
                .unwrap()
                .unwrap()
                .last_error
                .as_deref(),
            Some("422 no 2")
        );
        assert_eq!(
            s.transaction("a", 1).await.unwrap().unwrap().state,
            TxState::Sent
        );
        let again = s
            .settle_many_by_operator("a", vec![2, 3, 6], TxState::Error, TxState::Queued)
            .await
            .unwrap();
        assert_eq!(again, 0, "no longer in Error: left as they are");
        // Ignored: 5 (Error); 4 is Queued and stays so.
        let done = s
            .settle_many_by_operator("a", vec![4, 5], TxState::Error, TxState::Ignored)
            .await
            .unwrap();
        assert_eq!(done, 1);
        assert_eq!(
            s.transaction("a", 5).await.unwrap().unwrap().state,
            TxState::Ignored
        );
        assert_eq!(
            s.transaction("a", 4).await.unwrap().unwrap().state,
            TxState::Queued
        );
        assert!(s.errors("a", 0, 10).await.unwrap().is_empty());
        // Another integration's are not touched, even by number.
        assert_eq!(s.errors("b", 0, 10).await.unwrap().len(), 1);
        assert!(matches!(
            s.settle_many_by_operator("a", vec![4], TxState::Queued, TxState::Sending)
                .await,
            Err(StoreError::Corrupt(_))
        ));
        // Sent in order from the first retried one; the count survives
        // reopening.
        s.ack_sent("a", 2, 3, vec![]).await.unwrap();
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [4, 6]);
        drop(s);
        if let Some(kept) = b.bookkeeping("a") {
            // last_seq, queued, floor (just below 4, the first Queued).
            assert_eq!(kept, Some((6, 2, 3)));
        }
        let s = b.open().await;
        assert_eq!(s.queued_count("a").await.unwrap(), 2);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [4, 6]);
    }
}

#[tokio::test]
async fn log_and_audit() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        for i in 0..10u8 {
            s.append_log(i64::from(i) * 1000, i % 8, &format!("line {i}"))
                .await
                .unwrap();
        }
        let all = s.log(0, None, 9, 100).await.unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0].message, "line 0");
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        // More match than the limit: the newest, oldest first.
        let newest = s.log(0, None, 9, 3).await.unwrap();
        let msgs: Vec<_> = newest.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["line 7", "line 8", "line 9"]);
        assert!(s
            .log(0, None, 4, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.level <= 4));
        assert_eq!(s.log(0, None, 4, 100).await.unwrap().len(), 7);
        assert_eq!(s.log(0, Some(5000), 9, 100).await.unwrap().len(), 5);
        assert_eq!(s.log(all[8].id, None, 9, 100).await.unwrap().len(), 1);
        assert!(s.log(0, None, 9, 0).await.unwrap().is_empty());
        assert!(s.audit(10).await.unwrap().is_empty());
        for action in ["site.stop", "site.start"] {
            s.append_audit(AuditEntry {
                id: 0,
                ts: 1,
                actor: "ann".into(),
                action: action.into(),
                subject: "LIVE".into(),
                reason: Some("stocktake".into()),
                outcome: "ok".into(),
                node: None,
            })
            .await
            .unwrap();
        }
        let audit = s.audit(10).await.unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].action, "site.start");
        assert!(audit[0].id > audit[1].id);
        assert_eq!(audit[1].reason.as_deref(), Some("stocktake"));
        assert_eq!(audit[1].actor, "ann");
        assert_eq!(s.audit(1).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn links_are_kept_with_the_ack_and_repaired_by_hand() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        s.enqueue("a", "f", records(0, 2), None, None)
            .await
            .unwrap();
        let link = |key: &str, id: &str| Link {
            flow: "f".into(),
            key: key.into(),
            link: id.into(),
            updated_at: 0,
        };
        s.ack_sent("a", 1, 1, vec![link("k1", "100")])
            .await
            .unwrap();
        assert_eq!(s.link("f", "k1").await.unwrap().as_deref(), Some("100"));
        assert_eq!(s.link("g", "k1").await.unwrap(), None);
        s.set_link("f", "k2", "200").await.unwrap();
        s.set_link("f", "k1", "101").await.unwrap();
        let all = s.links("f", None, None, 10).await.unwrap();
        let pairs: Vec<_> = all
            .iter()
            .map(|l| (l.key.as_str(), l.link.as_str()))
            .collect();
        assert_eq!(pairs, [("k1", "101"), ("k2", "200")]);
        assert_eq!(s.links("f", Some("k2"), None, 10).await.unwrap().len(), 1);
        assert_eq!(s.links("f", None, Some("k1"), 10).await.unwrap().len(), 1);
        assert!(s.delete_link("f", "k1").await.unwrap());
        assert!(!s.delete_link("f", "k1").await.unwrap());
        assert_eq!(s.link("f", "k1").await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_record_queued_recently_is_found_by_flow_key_and_payload() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        assert!(!s
            .queued_recently("a", "f", Some("k1"), "{\"n\":1}", 10)
            .await
            .unwrap());
        s.enqueue("a", "f", records(0, 5), None, None)
            .await
            .unwrap();
        s.enqueue(
            "a",
            "f",
            vec![NewRecord {
                key: None,
                payload: "\"no key\"".into(),
            }],
            None,
            None,
        )
        .await
        .unwrap();
        // Sent ones count too: what was queued, not what waits.
        s.ack_sent("a", 1, 3, Vec::new()).await.unwrap();
        let found =
            |flow: &'static str, key: Option<&'static str>, payload: &'static str, within| {
                let s = s.clone();
                async move {
                    s.queued_recently("a", flow, key, payload, within)
                        .await
                        .unwrap()
                }
            };
        assert!(found("f", Some("k1"), "{\"n\":1}", 10).await);
        assert!(found("f", None, "\"no key\"", 1).await);
        // Another payload, another key, another flow, another integration.
        assert!(!found("f", Some("k1"), "{\"n\":2}", 10).await);
        assert!(!found("f", Some("k2"), "{\"n\":1}", 10).await);
        assert!(!found("g", Some("k1"), "{\"n\":1}", 10).await);
        assert!(!s
            .queued_recently("b", "f", Some("k1"), "{\"n\":1}", 10)
            .await
            .unwrap());
        // Only within the last `within` sequence numbers (k1 is seq 2 of 6).
        assert!(found("f", Some("k1"), "{\"n\":1}", 5).await);
        assert!(!found("f", Some("k1"), "{\"n\":1}", 4).await);
    }
}

#[tokio::test]
async fn history_adds_up_by_minute_and_rolls_into_hours() {
    let activity = |queued, delivered, failed, retried| Activity {
        queued,
        delivered,
        failed,
        retried,
    };
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        let hour = 1_000 * HOUR;
        s.add_history(
            hour,
            vec![
                ("a".into(), activity(5, 3, 1, 2), 2),
                ("b".into(), activity(1, 0, 0, 0), 1),
            ],
        )
        .await
        .unwrap();
        // The same minute again (another node, a flush at a stop): added.
        s.add_history(hour, vec![("a".into(), activity(1, 1, 0, 0), 1)])
            .await
            .unwrap();
        s.add_history(
            hour + 59 * MINUTE,
            vec![("a".into(), activity(0, 1, 0, 0), 0)],
        )
        .await
        .unwrap();
        s.add_history(hour + HOUR, vec![("a".into(), activity(7, 0, 0, 0), 7)])
            .await
            .unwrap();
        s.add_history(hour, Vec::new()).await.unwrap();

        let a = s.history(Some("a"), hour).await.unwrap();
        let seen: Vec<_> = a
            .iter()
            .map(|r| (r.at, r.span, r.counts, r.depth))
            .collect();
        assert_eq!(
            seen,
            [
                (hour, MINUTE, activity(6, 4, 1, 2), 1),
                (hour + 59 * MINUTE, MINUTE, activity(0, 1, 0, 0), 0),
                (hour + HOUR, MINUTE, activity(7, 0, 0, 0), 7),
            ]
        );
        assert_eq!(s.history(None, hour).await.unwrap().len(), 4);
        assert_eq!(s.history(Some("a"), hour + 1).await.unwrap().len(), 2);

        // Rolled: the first hour's minutes into one hour with the depth of
        // its last minute; the next hour's minutes stay minutes.
        s.roll_history(hour + HOUR, 0).await.unwrap();
        let a = s.history(Some("a"), 0).await.unwrap();
        let seen: Vec<_> = a
            .iter()
            .map(|r| (r.at, r.span, r.counts, r.depth))
            .collect();
        assert_eq!(
            seen,
            [
                (hour, HOUR, activity(6, 5, 1, 2), 0),
                (hour + HOUR, MINUTE, activity(7, 0, 0, 0), 7),
            ]
        );
        // A minute of a rolled hour written late is added to it at the next
        // roll.
        s.add_history(
            hour + 5 * MINUTE,
            vec![("a".into(), activity(1, 0, 0, 0), 3)],
        )
        .await
        .unwrap();
        s.roll_history(hour + HOUR, 0).await.unwrap();
        let first = &s.history(Some("a"), 0).await.unwrap()[0];
        assert_eq!((first.span, first.counts.queued), (HOUR, 7));

        // Kept until `drop_before`, then gone; it survives reopening.
        s.roll_history(hour + HOUR, hour + 1).await.unwrap();
        drop(s);
        let s = b.open().await;
        let left: Vec<_> = s
            .history(None, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.integration, r.at))
            .collect();
        assert_eq!(left, [("a".to_string(), hour + HOUR)]);
    }
}

#[tokio::test]
async fn an_alert_is_opened_once_reminded_once_closed_once_and_sent_from_the_outbox() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        assert!(s
            .open_alert("ops", "held|a|crm", "{}", "fire", 100)
            .await
            .unwrap());
        // Another node, or a second look: not again.
        assert!(!s
            .open_alert("ops", "held|a|crm", "{}", "fire", 101)
            .await
            .unwrap());
        // Another channel has its own.
        assert!(s
            .open_alert("mail", "held|a|crm", "{}", "fire", 102)
            .await
            .unwrap());
        let open = s.open_alerts().await.unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!((open[1].channel.as_str(), open[1].last_sent), ("ops", 100));

        // One reminder for a `last_sent` read: the second loses.
        assert!(s
            .remind_alert("ops", "held|a|crm", 100, "again", 200)
            .await
            .unwrap());
        assert!(!s
            .remind_alert("ops", "held|a|crm", 100, "again", 201)
            .await
            .unwrap());

        // Due alerts are claimed: not due again until the hold is over.
        let due = s.due_alerts(300, 1000, 10).await.unwrap();
        let docs: Vec<_> = due
            .iter()
            .map(|a| (a.channel.as_str(), a.document.as_str()))
            .collect();
        assert_eq!(docs, [("ops", "fire"), ("mail", "fire"), ("ops", "again")]);
        assert!(s.due_alerts(301, 1000, 10).await.unwrap().is_empty());
        s.alert_failed(due[0].id, 400, "connection refused")
            .await
            .unwrap();
        let audit = |subject: &str| AuditEntry {
            id: 0,
            ts: 500,
            actor: "sluice".into(),
            action: "alert.sent".into(),
            subject: subject.into(),
            reason: Some("fire".into()),
            outcome: "ok".into(),
            node: None,
        };
        s.alert_sent(due[1].id, audit("alert/mail")).await.unwrap();
        let again = s.due_alerts(400, 1000, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id, again[0].attempts), (due[0].id, 1));
        assert!(s
            .audit(10)
            .await
            .unwrap()
            .iter()
            .any(|a| a.subject == "alert/mail"));

        // Closed once: its "resolved" queued once.
        assert!(s
            .close_alert("ops", "held|a|crm", "over", 600)
            .await
            .unwrap());
        assert!(!s
            .close_alert("ops", "held|a|crm", "over", 601)
            .await
            .unwrap());
        drop(s);
        let s = b.open().await;
        assert_eq!(s.open_alerts().await.unwrap().len(), 1, "mail's is open");
        let due = s.due_alerts(2000, 1000, 10).await.unwrap();
        let docs: Vec<_> = due.iter().map(|a| a.document.as_str()).collect();
        assert_eq!(docs, ["fire", "again", "over"]);
    }
}

#[tokio::test]
async fn a_channels_alerts_are_due_in_the_order_they_were_queued() {
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        s.open_alert("ops", "k1", "{}", "first", 100).await.unwrap();
        let first = s.due_alerts(100, 1000, 10).await.unwrap();
        s.alert_failed(first[0].id, 5000, "down").await.unwrap();
        // Queued later, due now: it waits behind the first, which waits;
        // another channel's does not.
        s.close_alert("ops", "k1", "second", 200).await.unwrap();
        s.open_alert("mail", "k1", "{}", "other", 200)
            .await
            .unwrap();
        let due = s.due_alerts(300, 1000, 10).await.unwrap();
        let docs: Vec<_> = due.iter().map(|a| a.document.as_str()).collect();
        assert_eq!(docs, ["other"]);
        s.postpone_alert(due[0].id, 100_000).await.unwrap();
        let due = s.due_alerts(5000, 1000, 10).await.unwrap();
        let docs: Vec<_> = due.iter().map(|a| a.document.as_str()).collect();
        assert_eq!(docs, ["first", "second"]);
        s.alert_sent(
            due[0].id,
            AuditEntry {
                id: 0,
                ts: 5000,
                actor: "sluice".into(),
                action: "alert.sent".into(),
                subject: "alert/ops".into(),
                reason: None,
                outcome: "ok".into(),
                node: None,
            },
        )
        .await
        .unwrap();
        s.postpone_alert(due[1].id, 9000).await.unwrap();
        assert!(s.due_alerts(8999, 0, 10).await.unwrap().is_empty());
        let later = s.due_alerts(9000, 0, 10).await.unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(
            (later[0].document.as_str(), later[0].attempts),
            ("second", 0)
        );
    }
}

#[tokio::test]
async fn hold_periods_follow_the_holds_placed_replaced_and_lifted() {
    let hold = |kind, by: &str, since| Hold {
        kind,
        by: by.into(),
        since,
        reason: format!("{by} at {since}"),
    };
    let put = |h: Hold| IntegrationChange {
        put: Some(h),
        ..IntegrationChange::default()
    };
    let lift = |kind| IntegrationChange {
        remove: Some(kind),
        ..IntegrationChange::default()
    };
    for b in backends().await {
        eprintln!("backend: {}", b.name());
        let s = b.open().await;
        let before = now_millis();
        s.change_integration(
            "a",
            put(hold(HoldKind::EndpointOffline, "sluice", 1000)),
            None,
        )
        .await
        .unwrap();
        s.change_integration("a", put(hold(HoldKind::Operator, "ann", 1500)), None)
            .await
            .unwrap();
        // Replaced by one of its kind: the first ends as the second starts.
        s.change_integration(
            "a",
            put(hold(HoldKind::EndpointOffline, "sluice", 2000)),
            None,
        )
        .await
        .unwrap();
        s.change_integration("a", lift(HoldKind::EndpointOffline), None)
            .await
            .unwrap();
        s.change_integration("b", put(hold(HoldKind::Operator, "bob", 3000)), None)
            .await
            .unwrap();
        drop(s);
        let s = b.open().await;
        let periods = s.hold_periods(Some("a"), 0).await.unwrap();
        let seen: Vec<_> = periods
            .iter()
            .map(|p| (p.hold.kind, p.hold.since, p.hold.by.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (HoldKind::EndpointOffline, 1000, "sluice"),
                (HoldKind::Operator, 1500, "ann"),
                (HoldKind::EndpointOffline, 2000, "sluice"),
            ]
        );
        assert_eq!(periods[0].until, Some(2000));
        assert_eq!(periods[1].until, None, "the pause lasts");
        let lifted = periods[2].until.expect("lifted");
        assert!(
            lifted >= before && lifted <= now_millis() + 1000,
            "{lifted}"
        );
        assert_eq!(periods[1].hold.reason, "ann at 1500");
        // Those over before `since` are left out; every integration's.
        assert_eq!(s.hold_periods(Some("a"), 2001).await.unwrap().len(), 2);
        assert_eq!(s.hold_periods(None, 0).await.unwrap().len(), 4);
        // Gone with the history once over for longer than it is kept.
        s.roll_history(0, lifted + 1).await.unwrap();
        let left: Vec<_> = s
            .hold_periods(None, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.integration, p.hold.since))
            .collect();
        assert_eq!(left, [("a".to_string(), 1500), ("b".to_string(), 3000)]);
    }
}
