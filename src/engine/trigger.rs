//! The Trigger worker (seed 000): takes ad-hoc commands ('Send All',
//! 'Send Changed') and hands them to GetData.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::site::RunRequest;
use super::Site;
use crate::log::level;

pub async fn run(
    site: Arc<Site>,
    mut commands: mpsc::Receiver<RunRequest>,
    get_data: mpsc::Sender<RunRequest>,
    token: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    site.log.write(level::INFO, "Trigger thread started").await;
    let _ready = ready.send(());
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            command = commands.recv() => {
                let Some(command) = command else { break };
                site.log
                    .write(
                        level::TRACE,
                        format!("Trigger command: '{}' of flow {}", command.mode.label(), command.flow),
                    )
                    .await;
                if get_data.send(command).await.is_err() {
                    break;
                }
            }
        }
    }
    site.log.write(level::INFO, "Trigger thread stopped.").await;
}
