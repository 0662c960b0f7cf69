//! One run (iteration) of a flow: read the source, queue what it gives page
//! by page, each page with the checkpoint it reaches, in one store
//! transaction.
//!
//! A stop of the site (or of the integration) halts the run at the next page
//! boundary. Because a page and its checkpoint are committed together, a
//! halted 'Send Changed' run neither loses nor repeats a record: the next
//! run starts past the last page queued. Pages never split records with the
//! same cursor value, so a checkpoint never falls between two of them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Site;
use crate::connectors::{Cursor, ReadRequest};
use crate::log::level;
use crate::model::{RunMode, RunResult};
use crate::store::NewRecord;

pub async fn run(site: Arc<Site>, flow: String, mode: RunMode, token: CancellationToken) {
    let (run, outcome) = capture(&site, &flow, mode, &token).await;
    let (result, captured, error) = match outcome {
        Ok((result, captured)) => (result, captured, None),
        Err((captured, e)) => (RunResult::Failed, captured, Some(e)),
    };
    let message = match result {
        RunResult::Success => format!(
            "Flow {flow}: '{}' done, {captured} record(s) queued",
            mode.label()
        ),
        RunResult::Halted => format!(
            "Flow {flow}: '{}' halted after {captured} record(s) queued",
            mode.label()
        ),
        RunResult::Failed => format!(
            "Flow {flow}: '{}' failed after {captured} record(s) queued: {}",
            mode.label(),
            error.as_deref().unwrap_or("")
        ),
    };
    site.log
        .write(
            if result == RunResult::Failed {
                level::ERROR
            } else {
                level::INFO
            },
            message,
        )
        .await;
    site.note_run(&flow, None);
    match site.end_run(&flow, result, run.map(|id| (id, error))).await {
        Ok(()) => {}
        Err(e) if e.is_disk_full() => {}
        Err(e) => tracing::error!(site = %site.name, flow, "cannot record the end of a run: {e}"),
    }
}

/// The run recorded, if it got that far, and how it ended with how many
/// records it queued, or (on failure) how many it had queued and why it
/// failed.
type Captured = (Option<i64>, Result<(RunResult, i64), (i64, String)>);

async fn capture(
    site: &Arc<Site>,
    flow: &str,
    mode: RunMode,
    token: &CancellationToken,
) -> Captured {
    let started = async {
        let (ic, fc) = site.flow(flow).map_err(|e| e.to_string())?;
        let integration = site
            .integration(&ic.name)
            .map_err(|e| e.to_string())?
            .clone();
        let endpoint = site.endpoint(&fc.source).map_err(|e| e.to_string())?;
        let source = endpoint
            .source
            .clone()
            .ok_or_else(|| format!("endpoint {} is not a source", endpoint.name))?;
        let run = site
            .store
            .start_run(flow, mode)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((integration, fc, source, run))
    };
    match started.await {
        Ok((integration, fc, source, run)) => {
            let outcome = pages(site, &integration, fc, mode, run, source.as_ref(), token).await;
            (Some(run), outcome)
        }
        Err(e) => (None, Err((0, e))),
    }
}

async fn pages(
    site: &Arc<Site>,
    integration: &Arc<super::Integration>,
    fc: &crate::config::FlowConfig,
    mode: RunMode,
    run: i64,
    source: &dyn crate::connectors::Source,
    token: &CancellationToken,
) -> Result<(RunResult, i64), (i64, String)> {
    let flow = fc.name.as_str();
    site.log
        .write(
            level::WORK,
            format!("Getting data for flow {flow} ('{}')...", mode.label()),
        )
        .await;
    let stored = site
        .store
        .flow(flow)
        .await
        .map_err(|e| (0, e.to_string()))?;
    let mut checkpoint = stored.checkpoint.as_deref().and_then(Cursor::decode);
    let mut pages = tokio::select! {
        _ = token.cancelled() => return Ok((RunResult::Halted, 0)),
        open = source.open(ReadRequest {
            mode,
            checkpoint: checkpoint.clone(),
            key_field: fc.key.clone(),
            cursor_field: fc.cursor.clone(),
        }) => open.map_err(|e| (0, e.message))?,
    };
    let mut captured = 0i64;
    let pace = source.pace();
    let mut first = true;
    loop {
        if token.is_cancelled() || !integration.captures() {
            return Ok((RunResult::Halted, captured));
        }
        if !first && !pace.is_zero() {
            tokio::select! {
                _ = token.cancelled() => return Ok((RunResult::Halted, captured)),
                _ = tokio::time::sleep(pace) => {}
            }
        }
        first = false;
        let page = tokio::select! {
            _ = token.cancelled() => return Ok((RunResult::Halted, captured)),
            page = pages.next() => page.map_err(|e| (captured, e.message))?,
        };
        let Some(page) = page else { break };
        if page.is_empty() {
            continue;
        }
        if token.is_cancelled() || !integration.captures() {
            return Ok((RunResult::Halted, captured));
        }
        let reached = page.iter().rev().find_map(|r| r.cursor.clone());
        let moved = match (&checkpoint, reached) {
            (Some(old), Some(new)) if new > *old => Some(new),
            (None, Some(new)) => Some(new),
            _ => None,
        };
        let len = page.len() as i64;
        let page_len = page.len();
        let records = page
            .into_iter()
            .map(|r| NewRecord {
                key: r.key,
                payload: r.payload,
            })
            .collect();
        site.store
            .enqueue(
                &integration.name,
                flow,
                records,
                moved.as_ref().map(Cursor::encode),
                Some(run),
            )
            .await
            .map_err(|e| (captured, e.to_string()))?;
        integration.queued(page_len);
        captured += len;
        site.note_run(flow, Some(format!("queueing ({captured} so far)")));
        if let Some(new) = moved {
            checkpoint = Some(new);
        }
    }
    Ok((RunResult::Success, captured))
}
