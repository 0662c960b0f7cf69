//! The data directory: one daemon at a time, and files nobody else reads.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{on_postgres, order, webhook_site, Daemon, Target, BIN};
use reqwest::StatusCode;

/// Runs `cmd` until it exits (its status and standard error) or fails the
/// test after `secs`, killing it.
fn run_for(mut cmd: Command, secs: u64) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sluice binary starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{cmd:?} was still running after {secs}s: a second daemon started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_directory_exits_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let mut first = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;

    let mut second = Command::new(BIN);
    second.arg("serve").arg("--config").arg(&first.config);
    let (status, err) = run_for(second, 20);
    assert_eq!(status.code(), Some(1), "{err}");
    let data = dir.path().join("data");
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");

    // The first one goes on as if nothing happened, and the token command
    // still works beside it.
    let token = first.create_token("admin", "ops");
    let sites = |daemon: &Daemon| {
        reqwest::Client::new()
            .get(daemon.url("/api/v1/sites"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(sites(&first).await.unwrap().status(), StatusCode::OK);
    let (status, _) = first.hook("LIVE", "orders", "web", order(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // A SIGKILL leaves no stale lock: the next daemon starts.
    first.restart().await;
    assert_eq!(sites(&first).await.unwrap().status(), StatusCode::OK);
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let options = common::Options {
        umask: Some(0o000),
        ..common::Options::default()
    };
    let daemon = Daemon::start_opts(dir.path(), &webhook_site(&target, 1), options).await;
    daemon.create_token("admin", "ops");
    for n in 0..5 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    common::eventually(10, "the records delivered", || async {
        target.count() == 5
    })
    .await;

    let data = dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // On a PostgreSQL store (SLUICE_TEST_STORE=postgres) the site has no
    // data file and the tokens are in the database: its log and the lock
    // are still here.
    let own_files: &[&str] = match on_postgres() {
        true => &[],
        false => &["LIVE.db", "LIVE.db-wal", "LIVE.db-shm", "tokens.db"],
    };
    for wanted in own_files.iter().chain(&["LIVE.log", "sluice.lock"]) {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    for name in names {
        let path = data.join(&name);
        assert_eq!(mode(&path), 0o600, "{name} is readable by others");
    }
}
