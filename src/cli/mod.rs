//! The `sluice` command line. `serve` and `demo` run the daemon; `store
//! copy` (and `token` with `--config`) work on the data directly; every
//! other subcommand is a client of a running daemon's REST API (`/api/v1`).
//!
//! # Layout
//! - this file: the clap tree, the global options and the dispatch;
//! - [`client`]: the HTTP client (URLs, actor, token, errors from answers);
//! - [`error`]: [`CliError`] and its exit codes;
//! - [`output`]: tables, JSON as text, writes that survive a closed pipe;
//! - [`sse`]: the server-sent events parser behind `log --follow`;
//! - one file per subcommand group: [`serve`] (also `demo`), [`status`],
//!   [`site`], [`integration`] and [`resume`], [`flow`], [`log`], [`tx`],
//!   [`endpoint`], [`token`], [`store`], [`node`].
//!
//! # Exit codes (scripts rely on them)
//! - 0: success;
//! - 1: the daemon refused (`error: <its message> (HTTP 409)`), or the
//!   command failed otherwise (a resume that stopped on a hold);
//! - 2: usage or configuration errors;
//! - 3: the daemon cannot be reached.
//!
//! Every request names its actor, `X-Sluice-Actor: $USER@cli`, for the
//! daemon's audit trail; `--token` is sent as `Authorization: Bearer`.
//! Answers are read as the API's own view types (`crate::api::…View`, the
//! structs the daemon writes them from), never field by field; `--json`
//! prints them as they came. Where a command shows one site, integration,
//! flow, endpoint or transaction it prints what the caller may do to it
//! now (`actions: pause, stop`), as the answer says: the CLI decides none
//! of it.

pub mod alert;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod flow;
pub mod integration;
pub mod link;
pub mod log;
pub mod node;
pub mod output;
pub mod resume;
pub mod serve;
pub mod site;
pub mod sse;
pub mod status;
pub mod store;
pub mod token;
pub mod tx;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Url;

pub use client::Client;
pub use error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "An integration runtime: sites, integrations, flows and a durable ordered queue.",
    after_help = "Exit codes: 0 success, 1 the daemon refused, 2 usage or configuration \
                  error, 3 the daemon cannot be reached."
)]
pub struct Cli {
    /// The daemon's address.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL",
        value_parser = client::parse_server
    )]
    pub server: Url,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(
        long,
        global = true,
        env = "SLUICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the daemon's JSON answers instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM certificates of a private certificate authority to trust (with
    /// the platform's) when the daemon serves HTTPS.
    #[arg(long, global = true, env = "SLUICE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(serve::ServeArgs),
    /// Run the demo: the daemon on the embedded demo configuration, with a
    /// local HTTP target that prints what it receives.
    Demo(serve::DemoArgs),
    /// Every site and integration at a glance.
    Status,
    /// Start, stop, list, show and reload sites; their audit trail.
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Pause, resume, start, stop, list and show integrations.
    #[command(subcommand)]
    Integration(integration::IntegrationCommand),
    /// Run flows ('Send All', 'Send Changed'), list and show them.
    #[command(subcommand)]
    Flow(flow::FlowCommand),
    /// Show a site's log; --follow streams it.
    Log(log::LogArgs),
    /// List, show, retry, replay or ignore an integration's transactions;
    /// its errors grouped by cause, retried or ignored a group at a time.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// List a flow's record links; set or delete one by hand (a repair).
    #[command(subcommand)]
    Link(link::LinkCommand),
    /// List and show endpoints, test them, give them new credentials.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// The nodes of a cluster (store = "postgres") and what each sends.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Create, list and revoke API tokens (with --config: on the data
    /// directory directly, the way to make the first admin token).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Move a stopped site's data between stores (no daemon involved).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Send a test alert to an alert channel.
    #[command(subcommand)]
    Alert(alert::AlertCommand),
}

/// The subcommands that are the daemon itself: the command line parses
/// them and hands them to whoever runs the daemon (`main`, with the
/// server), since the CLI sits below the server and does not import it.
#[derive(Debug)]
pub enum DaemonCommand {
    Serve(serve::ServeArgs),
    Demo(serve::DemoArgs),
}

/// Parses the command line (a usage error exits with 2) and runs it: a
/// client subcommand here, `serve` and `demo` by `daemon`.
pub fn main<F, Fut>(daemon: F) -> ExitCode
where
    F: FnOnce(DaemonCommand) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => daemon(DaemonCommand::Serve(args)).await,
            Command::Demo(args) => daemon(DaemonCommand::Demo(args)).await,
            _ => run(cli).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a client subcommand against the daemon's API.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let client = || {
        Client::new(
            cli.server.clone(),
            cli.token.clone(),
            cli.json,
            cli.ca_file.as_deref(),
        )
    };
    match cli.command {
        Command::Serve(_) | Command::Demo(_) => Err(CliError::Failed(
            "serve and demo run the daemon; they are not a client's commands".into(),
        )),
        Command::Status => status::run(&client()?).await,
        Command::Site(c) => site::run(&client()?, c).await,
        Command::Integration(c) => integration::run(&client()?, c).await,
        Command::Flow(c) => flow::run(&client()?, c).await,
        Command::Log(args) => log::run(&client()?, args).await,
        Command::Tx(c) => tx::run(&client()?, c).await,
        Command::Endpoint(c) => endpoint::run(&client()?, c).await,
        Command::Link(c) => link::run(&client()?, c).await,
        Command::Token(c) => token::run(&client()?, c).await,
        Command::Store(c) => store::run(c, cli.json).await,
        Command::Node(c) => node::run(&client()?, c).await,
        Command::Alert(c) => alert::run(&client()?, c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    fn parsed(args: &[&str]) -> Command {
        match parse(args) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn refused(args: &[&str]) -> ErrorKind {
        let e = parse(args).expect_err("a usage error");
        assert_eq!(e.exit_code(), 2, "usage errors exit with 2");
        e.kind()
    }

    #[test]
    fn the_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options() {
        let cli = parse(&["status"]).unwrap();
        assert!(!cli.json);
        assert!(matches!(cli.command, Command::Status));
        let cli = parse(&["status", "--json", "--server", "http://h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.server.as_str(), "http://h:1/");
        let cli = parse(&["--token", "t0k", "site", "list"]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("t0k"));
        assert_eq!(
            refused(&["--server", "127.0.0.1:7070", "status"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            refused(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(refused(&["nonsense"]), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn the_token_is_not_shown_in_help() {
        std::env::set_var("SLUICE_TOKEN", "s3cret-value");
        let help = Cli::command().render_help().to_string();
        std::env::remove_var("SLUICE_TOKEN");
        assert!(help.contains("SLUICE_TOKEN"), "{help}");
        assert!(!help.contains("s3cret-value"), "{help}");
    }

    #[test]
    fn serve_and_demo() {
        match parsed(&[
            "serve",
            "--config",
            "x.toml",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "d",
        ]) {
            Command::Serve(a) => {
                assert_eq!(a.config.to_str(), Some("x.toml"));
                assert_eq!(a.listen, Some("127.0.0.1:0".parse().unwrap()));
                assert_eq!(a.data_dir.as_deref().and_then(|d| d.to_str()), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            refused(&["serve", "--config", "x", "--listen", "nowhere"]),
            ErrorKind::ValueValidation
        );
        // --config may come from SLUICE_CONFIG (one test touches it).
        std::env::remove_var("SLUICE_CONFIG");
        assert_eq!(refused(&["serve"]), ErrorKind::MissingRequiredArgument);
        std::env::set_var("SLUICE_CONFIG", "from-env.toml");
        let from_env = parse(&["serve"]);
        std::env::remove_var("SLUICE_CONFIG");
        match from_env.map(|c| c.command) {
            Ok(Command::Serve(a)) => assert_eq!(a.config.to_str(), Some("from-env.toml")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parsed(&["demo"]), Command::Demo(_)));
        assert!(matches!(
            parsed(&["demo", "--listen", "127.0.0.1:7171", "--data-dir", "/tmp/x"]),
            Command::Demo(serve::DemoArgs {
                listen: Some(_),
                data_dir: Some(_)
            })
        ));
    }

    #[test]
    fn site_commands() {
        use site::SiteCommand as S;
        assert!(
            matches!(parsed(&["site", "start", "LIVE"]), Command::Site(S::Start { site }) if site == "LIVE")
        );
        match parsed(&[
            "site",
            "stop",
            "LIVE",
            "--reason",
            "Stopping integration due to stocktake",
        ]) {
            Command::Site(S::Stop { site, reason }) => {
                assert_eq!(site, "LIVE");
                assert_eq!(reason, "Stopping integration due to stocktake");
            }
            other => panic!("{other:?}"),
        }
        // The reason is required by the command line; an empty one is the
        // daemon's to refuse.
        assert_eq!(
            refused(&["site", "stop", "LIVE"]),
            ErrorKind::MissingRequiredArgument
        );
        assert!(parse(&["site", "stop", "LIVE", "--reason", ""]).is_ok());
        assert!(matches!(parsed(&["site", "list"]), Command::Site(S::List)));
        assert!(matches!(
            parsed(&["site", "show", "DEV"]),
            Command::Site(S::Show { .. })
        ));
        assert!(matches!(
            parsed(&["site", "reload", "DEV"]),
            Command::Site(S::Reload { .. })
        ));
        assert!(matches!(
            parsed(&["site", "audit", "DEV", "--limit", "5"]),
            Command::Site(S::Audit { limit: Some(5), .. })
        ));
        assert_eq!(
            refused(&["site", "start"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn integration_commands() {
        use integration::IntegrationCommand as I;
        match parsed(&[
            "integration",
            "pause",
            "LIVE",
            "orders",
            "--reason",
            "stocktake",
        ]) {
            Command::Integration(I::Pause { site, name, reason }) => {
                assert_eq!((site.as_str(), name.as_str()), ("LIVE", "orders"));
                assert_eq!(reason.as_deref(), Some("stocktake"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parsed(&["integration", "pause", "LIVE", "orders"]),
            Command::Integration(I::Pause { reason: None, .. })
        ));
        assert!(matches!(
            parsed(&["integration", "start", "LIVE", "orders"]),
            Command::Integration(I::Start { .. })
        ));
        assert!(matches!(
            parsed(&["integration", "stop", "LIVE", "orders", "--reason", "r"]),
            Command::Integration(I::Stop {
                reason: Some(_),
                ..
            })
        ));
        assert!(matches!(
            parsed(&["integration", "resume", "LIVE", "orders"]),
            Command::Integration(I::Resume { detach: false, .. })
        ));
        assert!(matches!(
            parsed(&["integration", "resume", "LIVE", "orders", "--detach"]),
            Command::Integration(I::Resume { detach: true, .. })
        ));
        assert!(matches!(
            parsed(&["integration", "list", "LIVE"]),
            Command::Integration(I::List { .. })
        ));
        assert!(matches!(
            parsed(&["integration", "show", "LIVE", "orders"]),
            Command::Integration(I::Show { .. })
        ));
        assert_eq!(
            refused(&["integration", "pause", "LIVE"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused(&["integration", "show", "LIVE", "orders", "--detach"]),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn flow_run_needs_exactly_one_mode() {
        use flow::FlowCommand as F;
        assert!(matches!(
            parsed(&["flow", "run", "LIVE", "customers", "--all"]),
            Command::Flow(F::Run {
                all: true,
                changed: false,
                ..
            })
        ));
        assert!(matches!(
            parsed(&["flow", "run", "LIVE", "customers", "--changed"]),
            Command::Flow(F::Run {
                all: false,
                changed: true,
                ..
            })
        ));
        assert_eq!(
            refused(&["flow", "run", "LIVE", "customers"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused(&["flow", "run", "LIVE", "customers", "--all", "--changed"]),
            ErrorKind::ArgumentConflict
        );
        assert!(matches!(
            parsed(&["flow", "list", "LIVE"]),
            Command::Flow(F::List { .. })
        ));
        assert!(matches!(
            parsed(&["flow", "show", "LIVE", "customers"]),
            Command::Flow(F::Show { site, flow }) if site == "LIVE" && flow == "customers"
        ));
    }

    #[test]
    fn log_options() {
        match parsed(&[
            "log",
            "LIVE",
            "--level",
            "4",
            "--since",
            "2026-11-24T10:00:00Z",
            "--limit",
            "50",
        ]) {
            Command::Log(a) => {
                assert_eq!(a.site, "LIVE");
                assert_eq!((a.level, a.limit, a.follow), (Some(4), Some(50), false));
                assert_eq!(a.since.as_deref(), Some("2026-11-24T10:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parsed(&["log", "LIVE", "--follow"]),
            Command::Log(log::LogArgs { follow: true, .. })
        ));
        assert!(matches!(
            parsed(&["log", "LIVE", "-f", "--limit", "5"]),
            Command::Log(_)
        ));
        assert_eq!(
            refused(&["log", "LIVE", "--follow", "--since", "1"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            refused(&["log", "LIVE", "--level", "high"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(refused(&["log"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn tx_commands() {
        use tx::{TxCommand as T, TxStateArg};
        match parsed(&[
            "tx", "list", "LIVE", "orders", "--state", "error", "--limit", "10", "--before", "99",
        ]) {
            Command::Tx(T::List {
                site,
                integration,
                state,
                limit,
                before,
            }) => {
                assert_eq!((site.as_str(), integration.as_str()), ("LIVE", "orders"));
                assert_eq!(
                    (state, limit, before),
                    (Some(TxStateArg::Error), Some(10), Some(99))
                );
            }
            other => panic!("{other:?}"),
        }
        for state in ["queued", "sending", "sent", "error", "ignored"] {
            assert!(
                parse(&["tx", "list", "LIVE", "orders", "--state", state]).is_ok(),
                "{state}"
            );
        }
        assert_eq!(
            refused(&["tx", "list", "LIVE", "orders", "--state", "lost"]),
            ErrorKind::InvalidValue
        );
        assert!(matches!(
            parsed(&["tx", "show", "LIVE", "orders", "3"]),
            Command::Tx(T::Show { seq: 3, .. })
        ));
        assert!(matches!(
            parsed(&["tx", "retry", "LIVE", "orders", "12"]),
            Command::Tx(T::Retry {
                seq: Some(12),
                group: None,
                ..
            })
        ));
        // A group of errors instead of one transaction: one or the other.
        match parsed(&["tx", "retry", "--group", "3fa2c91b07de", "LIVE", "orders"]) {
            Command::Tx(T::Retry {
                site,
                integration,
                seq: None,
                group: Some(group),
            }) => assert_eq!(
                (&*site, &*integration, &*group),
                ("LIVE", "orders", "3fa2c91b07de")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parsed(&["tx", "ignore", "LIVE", "orders", "--group", "3fa2c91b07de"]),
            Command::Tx(T::Ignore {
                seq: None,
                group: Some(_),
                ..
            })
        ));
        assert_eq!(
            refused(&[
                "tx",
                "retry",
                "LIVE",
                "orders",
                "12",
                "--group",
                "3fa2c91b07de"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            refused(&["tx", "ignore", "LIVE", "orders"]),
            ErrorKind::MissingRequiredArgument
        );
        assert!(matches!(
            parsed(&["tx", "errors", "LIVE", "orders", "--limit", "5"]),
            Command::Tx(T::Errors { limit: Some(5), .. })
        ));
        assert!(matches!(
            parsed(&["tx", "replay", "LIVE", "orders", "1"]),
            Command::Tx(T::Replay { .. })
        ));
        assert!(matches!(
            parsed(&["tx", "ignore", "LIVE", "orders", "5"]),
            Command::Tx(T::Ignore { .. })
        ));
        assert_eq!(
            refused(&["tx", "ignore", "LIVE", "orders", "x"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn store_copy() {
        use store::{CopyArgs, StoreCommand as S, Target};
        match parsed(&[
            "store",
            "copy",
            "--config",
            "x.toml",
            "--site",
            "LIVE",
            "--to",
            "postgres",
            "--data-dir",
            "d",
        ]) {
            Command::Store(S::Copy(CopyArgs {
                config,
                site,
                to,
                data_dir,
            })) => {
                assert_eq!(config.to_str(), Some("x.toml"));
                assert_eq!((site.as_str(), to), ("LIVE", Target::Postgres));
                assert_eq!(data_dir.as_deref().and_then(|d| d.to_str()), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        let base = ["store", "copy", "--config", "x.toml"];
        assert_eq!(
            refused(&[&base[..], &["--to", "postgres"]].concat()),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused(&[&base[..], &["--site", "LIVE"]].concat()),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused(&[&base[..], &["--site", "LIVE", "--to", "mysql"]].concat()),
            ErrorKind::InvalidValue
        );
        // Help, or its absence said: which one depends on whether another
        // test has SLUICE_CONFIG set at that moment (clap counts it).
        assert!(matches!(
            refused(&["store"]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
        ));
    }

    #[test]
    fn endpoint_commands() {
        use endpoint::EndpointCommand as E;
        assert!(matches!(
            parsed(&["endpoint", "list", "LIVE"]),
            Command::Endpoint(E::List { .. })
        ));
        assert!(matches!(
            parsed(&["endpoint", "test", "LIVE", "crm"]),
            Command::Endpoint(E::Test { .. })
        ));
        assert!(matches!(
            parsed(&["endpoint", "show", "LIVE", "crm"]),
            Command::Endpoint(E::Show { site, name }) if site == "LIVE" && name == "crm"
        ));
        assert!(matches!(
            parsed(&[
                "endpoint",
                "reauthorize",
                "LIVE",
                "crm",
                "--secret-env",
                "CRM_TOKEN"
            ]),
            Command::Endpoint(E::Reauthorize { .. })
        ));
        assert_eq!(
            refused(&[
                "endpoint",
                "reauthorize",
                "LIVE",
                "crm",
                "--secret-env",
                "X",
                "--stdin"
            ]),
            ErrorKind::ArgumentConflict
        );
    }
}
