//! sluice: an integration runtime that moves records between business
//! systems under exact operator control.
//!
//! # Layout
//! - [`model`]: ids, states and their transitions: `Site`, `Integration`
//!   (lifecycle state and `Holds`, with their rules), `Flow` status,
//!   `Transaction` state (and when it shows as Sending), `Endpoint` state
//!   (which observation makes which), and the seven derived statuses; the
//!   roles and the actions each role may take now (`model/actions.rs`: what
//!   answers offer and what each route asks for). Pure, no I/O. The only
//!   home of state rules: the store stores what the model decided, the
//!   engine acts on it.
//! - [`config`]: `sluice.toml` → a typed, validated [`config::Config`]; every
//!   error names the file, line and key. The types and the entry in
//!   `mod.rs`, the TOML walk in `reader.rs`, `schedule.rs`, `error.rs`.
//! - [`duration`]: durations as the configuration writes them (`30s`,
//!   `7d`), for `config` and for the endpoint kinds' settings alike.
//! - [`store`]: the [`store::Store`] trait (the durable queue, checkpoints,
//!   states, runs, log, audit) and its backends: SQLite (`store/sqlite/`:
//!   the store, its writer, migrations, tests), PostgreSQL
//!   (`store/postgres/`: many sites in one database, `store = "postgres"`,
//!   and what the nodes of a cluster share: registry, leases, fencing,
//!   notifications, `postgres/cluster.rs`); the trait's tests on both
//!   (`store/tests/`); the token store's SQL (`store/tokens.rs`, and
//!   `postgres/tokens.rs` for a cluster); `sluice
//!   store copy` (`store/copy.rs`).
//! - [`connectors`]: the `Source` and `Target` traits and one file per
//!   endpoint kind (webhook, file, http, generator); beside them the email
//!   alert channel (`connectors/email.rs`: its settings and SMTP sender).
//! - [`engine`]: the daemon's moving parts: per site a supervisor with the
//!   workers of seed 000 (GetData, Trigger, Monitor, AllOthers), the
//!   scheduler, the per-integration sender, endpoint health (the holds it
//!   places and the probes that lift them), reload; a node of a cluster
//!   (`engine/cluster.rs`: heartbeat, leases, notifications); the counters
//!   it keeps as things happen and a snapshot of every site's state. It knows
//!   nothing of HTTP, tokens or the metrics exporter. A site's supervisor
//!   is `engine/site/`: lifecycle, flow requests, operator actions (one
//!   method each: decision, durable change with its audit entry, log line),
//!   webhook intake, and the reads of its store (the store is the engine's
//!   alone). What an error's cause is (the rule that groups an
//!   integration's transactions in Error) is `engine/errors.rs`.
//! - [`api`]: the REST API (axum) over its own state (`ApiState`: the
//!   engine, the tokens, the loopback rule, the body budget): one route
//!   table (each route with its handler, role and audit name) from which
//!   the router, the OpenAPI document and the role checks derive, the auth
//!   layer (tokens, cookie session, CSRF, the route's role), `/metrics`,
//!   the dashboard's page and its ES modules (`assets/dashboard/`) and the
//!   webhook receiver. Its views (`SiteView`, …) are also what the CLI
//!   reads answers as.
//! - [`auth`]: API tokens (hashes only) and sessions: the token format,
//!   hashing and their rules over the token store; the roles are the
//!   model's (re-exported).
//! - [`metrics`]: the Prometheus exposition for `/metrics`: installs the
//!   recorder the engine's counters go to, sets the state gauges from the
//!   engine's snapshot, renders.
//! - [`data_dir`]: the data directory's lock (one daemon per directory) and
//!   its private files (`0700` folder, `0600` files).
//! - [`log`]: the site log in seed 000's format: stored, filtered, streamed.
//! - [`server`]: the daemon on the network: the engine and the API listener
//!   (plain HTTP or HTTPS), shutdown as a parameter.
//! - [`tls`]: rustls with the `ring` provider, both ways: trust roots,
//!   `ca_file`, client certificates, the daemon's certificate, and telling
//!   an untrusted certificate from other failures.
//! - [`redact`]: URLs as sluice shows them, without their user-info.
//! - [`mapping`]: a flow's `map` (a table of target field ← source path,
//!   constant or default) and `transform` (a jq program, run by jaq):
//!   checked when the configuration loads, applied to a record when its
//!   transaction is sent.
//! - [`cli`]: the `sluice` command line; subcommands talk to the daemon over
//!   its REST API.
//! - [`demo`]: the embedded demo (two sites and a local HTTP target).
//!
//! # Which way imports run
//! Down only, never back (`tests/architecture.rs` reads the source and
//! holds it so):
//!
//! ```text
//! server, demo         the engine and the API on a listener; run what
//!   ↓                  `main` hands over (`serve`, `demo`)
//! cli                  the command line: parses everything, and is a
//!   ↓                  client of the API for the rest (its typed answers)
//! api, metrics         ask the engine; the engine never names them
//!   ↓
//! engine               acts
//!   ↓
//! store, connectors, config, log, auth
//!   ↓
//! model                decides; imports nothing
//! ```
//!
//! `data_dir`, `duration`, `mapping`, `redact` and `tls` are leaves anyone may
//! import; they import nothing of sluice.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod data_dir;
pub mod demo;
pub mod duration;
pub mod engine;
pub mod log;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod server;
pub mod store;
pub mod tls;
