//! The `sluice` binary: the command line parses, the server runs the
//! daemon (`serve`, `demo`); everything else is a client of its API.

use sluice::cli::DaemonCommand;

fn main() -> std::process::ExitCode {
    sluice::cli::main(|command| async move {
        match command {
            DaemonCommand::Serve(args) => sluice::server::command(args).await,
            DaemonCommand::Demo(args) => sluice::demo::command(args).await,
        }
    })
}
