//! A full disk is an answer, not a mess: the daemon's data directory sits on
//! a small tmpfs that the test fills up for real (until `ENOSPC`), while
//! records flow to a target.
//!
//! Needs root (or CAP_SYS_ADMIN) to mount the tmpfs, as CI and the project's
//! machines run tests. Elsewhere set `SLUICE_TEST_SKIP_TMPFS=1` to skip.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// A tmpfs of a few megabytes mounted on a fresh folder: a disk that really
/// fills up. Unmounted when dropped (lazily if something still holds it).
struct Tmpfs {
    path: PathBuf,
    /// Files that take up the space, until `free`.
    fillers: Vec<PathBuf>,
}

impl Tmpfs {
    /// `None` (having said so) when `SLUICE_TEST_SKIP_TMPFS=1` and it
    /// cannot be mounted.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
                fillers: Vec::new(),
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("SLUICE_TEST_SKIP_TMPFS").as_deref() == Ok("1") {
                    eprintln!("skipped: cannot mount a tmpfs ({why}); SLUICE_TEST_SKIP_TMPFS=1");
                    return None;
                }
                panic!(
                    "this test mounts a small tmpfs to fill a disk for real, which needs root \
                     or CAP_SYS_ADMIN: mount said: {why}. Run it as root, or set \
                     SLUICE_TEST_SKIP_TMPFS=1 to skip it"
                );
            }
        }
    }

    /// Takes every byte left: writes a new filler file until `ENOSPC`, in
    /// smaller and smaller pieces. Returns how many bytes it took.
    fn fill(&mut self) -> usize {
        let path = self.path.join(format!("filler-{}", self.fillers.len()));
        let mut file = std::fs::File::create(&path).unwrap();
        self.fillers.push(path);
        let mut taken = 0;
        for piece in [1 << 16, 1 << 12, 1 << 8, 1] {
            let bytes = vec![b'x'; piece];
            while file.write_all(&bytes).is_ok() {
                taken += piece;
            }
        }
        taken
    }

    /// Frees what `fill` took.
    fn free(&mut self) {
        for path in self.fillers.drain(..) {
            std::fs::remove_file(path).unwrap();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _lazily = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The stderr lines that say the disk of `file` is full.
fn said_full(lines: &[String], file: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("The disk is full") && l.contains(file))
        .count()
}

fn said_writable(lines: &[String], file: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("The disk is writable again") && l.contains(file))
        .count()
}

async fn site_state(daemon: &Daemon) -> String {
    let (status, site) = daemon.get("/api/v1/sites/LIVE").await;
    assert_eq!(status, StatusCode::OK, "{site}");
    site["state"].as_str().unwrap().to_string()
}

async fn integration_state(daemon: &Daemon) -> String {
    daemon.integration("LIVE", "orders").await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn audited(daemon: &Daemon, action: &str) -> bool {
    let (status, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    audit
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == action && a["outcome"] == "ok")
}

/// What a refusal for a full disk looks like: 507, `Retry-After`, and a
/// message that says so and that nothing was taken.
fn assert_disk_full(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("disk is full") && message.contains("Nothing was taken"),
        "{what}: {body}"
    );
}

async fn queued(daemon: &Daemon) -> usize {
    daemon.integration("LIVE", "orders").await["queued"]
        .as_u64()
        .unwrap() as usize
}

/// Whether the integration shows that what it delivered cannot be
/// recorded (and so it sends nothing more).
async fn unrecorded(daemon: &Daemon) -> bool {
    daemon.integration("LIVE", "orders").await["stalled"]
        .as_str()
        .is_some_and(|s| s.contains("cannot be recorded") && s.contains("is full"))
}

fn requests(target: &Target) -> usize {
    target.requests.load(std::sync::atomic::Ordering::SeqCst)
}

/// The webhooks, numbered; which were accepted (202) and which refused.
struct Orders {
    next: usize,
    accepted: Vec<usize>,
    refused: Vec<usize>,
}

impl Orders {
    /// Posts the next order; returns the status and the answer.
    async fn post(&mut self, daemon: &Daemon) -> (StatusCode, Value) {
        let n = self.next;
        self.next += 1;
        let (status, body) = daemon.post("/hooks/LIVE/orders/web", order(n)).await;
        if status == StatusCode::ACCEPTED {
            self.accepted.push(n);
        } else {
            self.refused.push(n);
        }
        (status, body)
    }

    /// Fills the disk and posts until a webhook is refused for it (SQLite
    /// may take a write or two while its WAL has room it can reuse).
    async fn until_refused(&mut self, daemon: &Daemon, disk: &mut Tmpfs) {
        // Up to a few hundred: once SQLite has checkpointed, its WAL has
        // megabytes of room it reuses before it must grow.
        for _ in 0..5000 {
            disk.fill();
            let (status, body) = self.post(daemon).await;
            if status != StatusCode::ACCEPTED {
                // (a) 507 with a JSON message, not a 500; nothing of it is
                // queued (checked at the end: it never arrives).
                assert_disk_full(status, &body, "a webhook on a full disk");
                return;
            }
        }
        panic!("no webhook was refused on the full disk");
    }

    /// Posts until the daemon takes webhooks again (space was freed).
    async fn until_accepted(&mut self, daemon: &Daemon) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.post(daemon).await.0 != StatusCode::ACCEPTED {
            assert!(
                std::time::Instant::now() < deadline,
                "webhooks are taken again once space is freed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// (b) and (c): a site stop and an integration pause on the full disk.
/// Each either happens (durably, audited) or is refused with the disk-full
/// answer, and then nothing changed. Returns which happened.
async fn stop_and_pause(daemon: &Daemon) -> (bool, bool) {
    let (status, body) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "disk test"}))
        .await;
    let stopped = status == StatusCode::OK;
    if stopped {
        assert_eq!(site_state(daemon).await, "stopped");
        assert!(audited(daemon, "site.stop").await, "the stop is audited");
    } else {
        assert_disk_full(status, &body, "a site stop on a full disk");
        assert_eq!(site_state(daemon).await, "running");
    }
    let (status, body) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "disk test"}),
        )
        .await;
    let paused = status == StatusCode::OK;
    if paused {
        assert_eq!(integration_state(daemon).await, "paused");
        assert!(audited(daemon, "integration.pause").await);
    } else {
        assert_disk_full(status, &body, "a pause on a full disk");
        assert_eq!(integration_state(daemon).await, "active");
    }
    (stopped, paused)
}

/// Undoes what `stop_and_pause` did, once the disk has space.
async fn start_and_resume(daemon: &Daemon, (stopped, paused): (bool, bool)) {
    if stopped {
        let (status, body) = daemon.post("/api/v1/sites/LIVE/start", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    if paused {
        let (status, body) = daemon
            .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Every accepted record arrives, in order; no refused one ever does.
async fn all_delivered(target: &Target, orders: &Orders) {
    eventually(30, "every accepted record delivered", || async {
        target.deduplicated().len() >= orders.accepted.len()
    })
    .await;
    let delivered: Vec<Value> = target
        .deduplicated()
        .into_iter()
        .map(|r| r.record["n"].clone())
        .collect();
    let want: Vec<Value> = orders.accepted.iter().map(|n| json!(n)).collect();
    assert_eq!(delivered, want, "every accepted record, once, in order");
    for n in &orders.refused {
        assert!(
            !delivered.contains(&json!(n)),
            "refused record {n} was queued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_whole_and_repeats_no_delivery() {
    if on_postgres() {
        // The queue is in PostgreSQL, not on the data directory's disk.
        eprintln!("skipped: SLUICE_TEST_STORE=postgres keeps no site file to fill");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mut disk) = Tmpfs::mount(&dir.path().join("data"), "8m") else {
        return;
    };
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(20));
    let mut daemon = Daemon::start(dir.path(), &webhook_site(&target, 5)).await;
    let mut orders = Orders {
        next: 0,
        accepted: Vec::new(),
        refused: Vec::new(),
    };

    // Records flow; the disk fills up under them.
    while orders.accepted.len() < 300 {
        let (status, body) = orders.post(&daemon).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    eventually(10, "some delivered", || async { target.count() > 10 }).await;
    orders.until_refused(&daemon, &mut disk).await;
    let http = reqwest::Client::new();
    let r = http
        .post(daemon.url("/hooks/LIVE/orders/web"))
        .json(&order(orders.next))
        .send()
        .await
        .unwrap();
    orders.refused.push(orders.next);
    orders.next += 1;
    assert_eq!(r.status().as_u16(), 507);
    assert!(
        r.headers().get("retry-after").is_some(),
        "507 has Retry-After"
    );

    // The sender cannot record what it delivered: it says so (in the
    // integration's `stalled`) and sends nothing more.
    eventually(10, "deliveries wait to be recorded", || async {
        unrecorded(&daemon).await
    })
    .await;
    let requests_when_stalled = requests(&target);
    let changes = stop_and_pause(&daemon).await;

    // (d) The daemon says once that the disk is full, however many writes
    // it refuses (webhooks, acks tried again, log lines, audit entries).
    eventually(10, "the daemon says the disk is full", || async {
        said_full(&daemon.stderr(), "LIVE.db") > 0
    })
    .await;
    for _ in 0..3 {
        disk.fill();
        let (status, body) = orders.post(&daemon).await;
        assert_disk_full(status, &body, "a webhook while the disk stays full");
    }
    assert_eq!(said_full(&daemon.stderr(), "LIVE.db"), 1, "said once");
    if !changes.0 && !changes.1 {
        assert!(unrecorded(&daemon).await);
    }
    assert_eq!(
        requests(&target),
        requests_when_stalled,
        "nothing is sent while what was delivered cannot be recorded"
    );

    // Space is freed: the daemon says so, once, and takes writes again.
    disk.free();
    start_and_resume(&daemon, changes).await;
    orders.until_accepted(&daemon).await;
    for _ in 0..20 {
        let (status, body) = orders.post(&daemon).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    eventually(30, "the daemon says the disk is writable again", || async {
        said_writable(&daemon.stderr(), "LIVE.db") > 0
    })
    .await;
    let stderr = daemon.stderr();
    assert_eq!(said_full(&stderr, "LIVE.db"), 1, "{stderr:#?}");
    assert_eq!(said_writable(&stderr, "LIVE.db"), 1, "{stderr:#?}");
    // The site log keeps both lines, once each.
    let log = daemon.log("LIVE").await;
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("(2) : The disk is full"), 1, "{log}");
    assert_eq!(lines("(4) : The disk is writable again"), 1, "{log}");

    target.set_delay(Duration::ZERO);
    all_delivered(&target, &orders).await;
    // What was delivered while the disk was full is recorded once space
    // is back, and was sent once: nothing is left to send again.
    eventually(10, "every delivery recorded", || async {
        queued(&daemon).await == 0
    })
    .await;
    assert_eq!(target.count(), target.deduplicated().len(), "no repeats");
    let before = target.count();
    daemon.restart().await;
    orders.post(&daemon).await;
    eventually(30, "the record after the restart delivered", || async {
        target.count() > before
    })
    .await;
    assert_eq!(
        target.count(),
        before + 1,
        "a restart sends nothing again: every delivery was recorded"
    );

    // Full again, and the daemon killed while it is: it comes back up on
    // the full disk, with the stop and the pause as they were answered,
    // and sends again only what it had delivered without recording it.
    target.set_delay(Duration::from_millis(20));
    let from = orders.accepted.len();
    while orders.accepted.len() < from + 200 {
        let (status, body) = orders.post(&daemon).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    orders.until_refused(&daemon, &mut disk).await;
    let changes = stop_and_pause(&daemon).await;
    let recorded = orders.accepted.len() - queued(&daemon).await;
    daemon.kill();
    let resendable = target.deduplicated().len() - recorded;
    daemon.restart().await;
    let site = if changes.0 { "stopped" } else { "running" };
    let integration = if changes.1 { "paused" } else { "active" };
    assert_eq!(site_state(&daemon).await, site);
    assert_eq!(integration_state(&daemon).await, integration);
    eventually(10, "the new daemon says the disk is full", || async {
        said_full(&daemon.stderr(), "LIVE.db") > 0
    })
    .await;
    let repeats_before = target.count() - target.deduplicated().len();
    disk.free();
    start_and_resume(&daemon, changes).await;
    orders.until_accepted(&daemon).await;
    target.set_delay(Duration::ZERO);
    all_delivered(&target, &orders).await;
    let repeats = target.count() - target.deduplicated().len() - repeats_before;
    assert!(
        repeats <= resendable,
        "{repeats} repeats; {resendable} were delivered but not recorded at the kill"
    );
    eprintln!(
        "disk_full: stop {:?}, pause {:?}, {} refused, {repeats} repeats of {resendable} \
         delivered but unrecorded at the kill",
        changes.0,
        changes.1,
        orders.refused.len()
    );
    drop(daemon);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_changes_on_a_full_disk_are_refused_whole() {
    if on_postgres() {
        // The tokens are in the database: the data directory's disk does
        // not hold them.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mut disk) = Tmpfs::mount(&dir.path().join("data"), "4m") else {
        return;
    };
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 5)).await;
    disk.fill();
    for i in 0..3 {
        let (status, body) = daemon
            .post(
                "/api/v1/tokens",
                json!({"name": format!("t{i}"), "role": "admin"}),
            )
            .await;
        assert_disk_full(status, &body, "a token created on a full disk");
    }
    // Nothing was created: the API is still open (no token exists).
    let (status, tokens) = daemon.get("/api/v1/tokens").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens, json!([]));
    // The daemon's stderr is read beside its answers: wait for the line.
    eventually(10, "the full disk said", || async {
        said_full(&daemon.stderr(), "tokens.db") >= 1
    })
    .await;

    disk.free();
    let (status, body) = daemon
        .post("/api/v1/tokens", json!({"name": "t9", "role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually(10, "the writable disk said", || async {
        said_writable(&daemon.stderr(), "tokens.db") >= 1
    })
    .await;
    let stderr = daemon.stderr();
    assert_eq!(said_full(&stderr, "tokens.db"), 1, "{stderr:#?}");
    assert_eq!(said_writable(&stderr, "tokens.db"), 1, "{stderr:#?}");
    drop(daemon);
    drop(disk);
}
