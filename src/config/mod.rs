//! `sluice.toml` → a typed, validated [`Config`].
//!
//! # How a file is read
//! [`Config::parse`] is one pure step from text to a validated value. The
//! text is parsed once into a syntax tree that keeps where every key stands
//! (`toml_edit`), and that tree is walked table by table: every value is
//! checked where it stands, unknown keys are reported (with the closest known
//! key when one is close), an endpoint's settings are handed to its kind
//! ([`EndpointKind::from_table`], then [`EndpointKind::validate`]), and the
//! references between flows and endpoints are checked.
//!
//! # Invariants
//! - Every problem becomes a [`ConfigError`] naming the file, the 1-based
//!   line (of the key; of its table's header when the key is missing) and
//!   the dotted key path, e.g. `sites.LIVE.integrations.orders.flows[1].source`.
//!   All of them come back at once, in line order.
//! - A [`Config`] exists only for a file without a single problem: names are
//!   valid URL segments, flow names are unique within a site, every flow's
//!   source and target name endpoints of the site that can play that part.
//! - Relative paths in the file resolve against the file's folder
//!   ([`Config::base_dir`]); a data directory given on the command line is
//!   taken as given.
//! - The PEM files the file names are read while it is checked: a
//!   [`Config`] names only certificates and keys that could be used then.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use crate::connectors::{parse_duration, EndpointKind};

/// Where the REST API and the webhooks listen unless the file or `--listen`
/// says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Where each site's data file and log file live, relative to the file.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// What the request bodies being read may hold in memory at once, over
/// every webhook and API request, unless the file says otherwise.
pub const DEFAULT_BODY_MEMORY: usize = 16 * 1024 * 1024;

/// Seed 000's verbosity a site keeps unless it says otherwise.
pub const DEFAULT_LOG_LEVEL: u8 = 4;

/// Sent transactions are kept a week unless the site says otherwise.
pub const DEFAULT_KEEP_SENT: Duration = Duration::from_secs(7 * 86_400);

/// A run or a drain without progress this long is flagged as stalled.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// That file's folder: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    pub listen: SocketAddr,
    /// `tls_cert` and `tls_key`: the daemon serves HTTPS with them.
    pub tls: Option<ServerTls>,
    /// `behind_proxy = true`: a TLS proxy is in front of the daemon, so
    /// plain HTTP on a non-loopback address is not worth a warning.
    pub behind_proxy: bool,
    /// The file's `data_dir` resolved against `base_dir`, or the command
    /// line's as given.
    pub data_dir: PathBuf,
    /// In file order; names are unique (they are keys of one table).
    pub sites: Vec<SiteConfig>,
    /// The bytes of request bodies held in memory at once, over every
    /// webhook and API request (see `api::body`); no webhook's `max_body`
    /// is larger.
    pub max_body_memory: usize,
}

/// The daemon's own certificate: both PEM files were readable and usable
/// when the file was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `tls_cert`, resolved against the file's folder: the certificate
    /// chain, the daemon's own first.
    pub cert: PathBuf,
    /// `tls_key`, resolved against the file's folder: its private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    pub name: String,
    /// Seed 000's verbosity, 0..=9: lines with a higher number are not kept.
    pub log_level: u8,
    /// The site's SQLite file; no other site's data or log file.
    pub data_file: PathBuf,
    /// The site's plain-text log; no other site's data or log file.
    pub log_file: PathBuf,
    /// How long sent and ignored transactions are kept (for listing and
    /// replay) before they are deleted.
    pub keep_sent: Duration,
    /// A run or a drain that makes no progress this long is flagged as
    /// stalled, with the reason, in its status.
    pub stall_after: Duration,
    /// In file order.
    pub endpoints: Vec<EndpointConfig>,
    /// In file order.
    pub integrations: Vec<IntegrationConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    /// Its settings, already validated by the kind.
    pub kind: EndpointKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationConfig {
    pub name: String,
    pub on_error: OnError,
    /// In file order; may be empty (the integration is then Idle).
    pub flows: Vec<FlowConfig>,
}

/// What a record the target rejects does to the queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum OnError {
    /// The queue waits behind it (strict order).
    Block,
    /// It is marked Error and the rest goes on.
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    /// Unique within the site, across its integrations: the API addresses a
    /// flow as `/sites/{site}/flows/{flow}`.
    pub name: String,
    /// An endpoint of the same site that is a pull or a push source.
    pub source: String,
    /// An endpoint of the same site that is a target.
    pub target: String,
    /// None for a flow from a webhook (its records arrive by POST).
    pub schedule: Option<Schedule>,
    pub key: Option<String>,
    /// Always set for a flow from a `file` endpoint.
    pub cursor: Option<String>,
    pub enabled: bool,
    /// Whether intermittent failures (busy, no answer) are retried by
    /// themselves (seed 003's auto-resolve). Off, the first one counts as a
    /// failure for good and `on_error` decides.
    pub auto_resolve: bool,
    /// Attempts after which an intermittent failure counts as one for good;
    /// 0: no limit.
    pub retry_limit: u32,
}

/// When a flow runs by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `every 30s`: first one interval after the site starts.
    Every(Duration),
    /// A cron expression, at its next match (in UTC).
    Cron {
        /// As written in the file.
        expr: String,
        /// Boxed: a parsed pattern is far larger than an interval.
        cron: Box<croner::Cron>,
    },
}

/// Two schedules are equal when they are written the same way.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { expr: a, .. }, Schedule::Cron { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// What `schedule` accepts, for the messages that refuse one.
const SCHEDULE_FORMATS: &str = "use 'every DURATION' (e.g. 'every 30s'; units ms, s, m, h, d) \
     or a cron expression of 5 fields (minute hour day month weekday, e.g. '*/5 * * * *') \
     or 6 (seconds first)";

impl Schedule {
    /// `every 30s` (durations as [`parse_duration`] reads them, above zero)
    /// or a cron expression of 5 or 6 fields that matches some date.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        let mut words = s.split_whitespace();
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("every"))
        {
            let interval: String = words.collect();
            return match parse_duration(&interval) {
                Some(d) if !d.is_zero() => Ok(Schedule::Every(d)),
                _ => Err(format!(
                    "'{s}': the interval must be a duration above zero, \
                     e.g. 'every 30s' or 'every 5m' (units ms, s, m, h, d)"
                )),
            };
        }
        if s.is_empty() {
            return Err(format!("empty: {SCHEDULE_FORMATS}"));
        }
        let cron = croner::Cron::new(s)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("'{s}' is not a schedule ({e}): {SCHEDULE_FORMATS}"))?;
        // A pattern such as "0 0 30 2 *" parses but never fires: say so now
        // rather than leave the flow silently unscheduled.
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!("'{s}' matches no date"));
        }
        Ok(Schedule::Cron {
            expr: s.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The next firing strictly after `after` (Every: `after` + interval);
    /// None if there is none a calendar can hold.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.checked_add_signed(d)),
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(&after, false).ok(),
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; None when the problem has no place in the file (it cannot
    /// be read, or a top-level key is missing).
    pub line: Option<usize>,
    /// The dotted key path, e.g. `sites.LIVE.integrations.orders.flows[1].source`;
    /// empty for the file as a whole.
    pub key: String,
    pub message: String,
}

/// `sluice.toml:12: sites.LIVE.endpoints.crm.batch: must be between 1 and 10000`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file, in line order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One error a line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file. `data_dir_override` (a command-line
    /// flag) wins over the file's `data_dir` and is taken as given.
    pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        Config::parse(&text, path, data_dir_override)
    }

    /// Validates `text` as if read from `file` (which names it in errors and
    /// whose folder relative paths resolve against). Nothing is read but the
    /// TLS files it names (`tls_cert`, `tls_key`, an endpoint's `ca_file`,
    /// `client_cert`, `client_key`): a certificate that cannot be used is a
    /// problem of the configuration, found before anything starts.
    pub fn parse(
        text: &str,
        file: &Path,
        data_dir_override: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut reader = Reader::new(file, text);
        let config = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => Some(reader.config(doc.as_table(), data_dir_override)),
            Err(e) => {
                let line = reader.line(e.span());
                reader.error(line, "", format!("not valid TOML: {}", e.message().trim()));
                None
            }
        };
        let mut errors = reader.errors;
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => {
                errors.sort_by_key(|e| e.line.unwrap_or(0));
                Err(ConfigErrors(errors))
            }
        }
    }

    pub fn site(&self, name: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.name == name)
    }
}

impl SiteConfig {
    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    pub fn integration(&self, name: &str) -> Option<&IntegrationConfig> {
        self.integrations.iter().find(|i| i.name == name)
    }

    /// The flow and its integration.
    pub fn flow(&self, name: &str) -> Option<(&IntegrationConfig, &FlowConfig)> {
        self.integrations
            .iter()
            .find_map(|i| i.flows.iter().find(|f| f.name == name).map(|f| (i, f)))
    }
}

// ------------------------------------------------------------------ reading

const NO_SITE: &str = "no site: add at least one [sites.NAME] table";

const ROOT_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "max_body_memory",
    "tls_cert",
    "tls_key",
    "behind_proxy",
    "sites",
];
const SITE_KEYS: &[&str] = &[
    "log_level",
    "data_file",
    "log_file",
    "keep_sent",
    "stall_after",
    "endpoints",
    "integrations",
];
const INTEGRATION_KEYS: &[&str] = &["on_error", "flows"];
const FLOW_KEYS: &[&str] = &[
    "name",
    "source",
    "target",
    "schedule",
    "key",
    "cursor",
    "enabled",
    "auto_resolve",
    "retry_limit",
];

/// Names appear in URLs: 1 to 64 letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A name as one segment of a key path: quoted as TOML quotes it when it is
/// not a bare key, so the path stays unambiguous.
fn segment(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path` against `base`, without the `./` steps that only clutter what an
/// operator is shown; an absolute `path` as it is.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut out = base.to_path_buf();
    for part in path.components() {
        if part != Component::CurDir {
            out.push(part);
        }
    }
    out
}

/// A known word close enough to `word` to be what was meant.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// "unknown key; did you mean 'schedule'?", or the keys `owner` has.
fn unknown_key_message(key: &str, known: &[&str], owner: &str) -> String {
    match closest(key, known) {
        Some(k) => format!("unknown key; did you mean '{k}'?"),
        None => format!("unknown key; {owner} has: {}", known.join(", ")),
    }
}

/// The settings of an endpoint as plain values, for its kind to deserialize.
fn plain_table(table: &dyn TableLike) -> toml::Table {
    table
        .iter()
        .filter_map(|(k, item)| plain_item(item).map(|v| (k.to_string(), v)))
        .collect()
}

fn plain_item(item: &Item) -> Option<toml::Value> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(plain_value(v)),
        Item::Table(t) => Some(toml::Value::Table(plain_table(t))),
        Item::ArrayOfTables(a) => Some(toml::Value::Array(
            a.iter()
                .map(|t| toml::Value::Table(plain_table(t)))
                .collect(),
        )),
    }
}

fn plain_value(value: &Value) -> toml::Value {
    match value {
        Value::String(s) => toml::Value::String(s.value().clone()),
        Value::Integer(n) => toml::Value::Integer(*n.value()),
        Value::Float(x) => toml::Value::Float(*x.value()),
        Value::Boolean(b) => toml::Value::Boolean(*b.value()),
        Value::Datetime(d) => toml::Value::Datetime(*d.value()),
        Value::Array(a) => toml::Value::Array(a.iter().map(plain_value).collect()),
        Value::InlineTable(t) => toml::Value::Table(plain_table(t)),
    }
}

/// One problem an endpoint kind found while reading its settings.
struct SettingProblem {
    /// Relative to the endpoint's table (`batch`, `headers.X-Api`).
    key: Option<String>,
    /// The key to leave out to look for the next problem.
    top: Option<String>,
    missing: bool,
    message: String,
}

/// What serde said about an endpoint's settings, in the file's terms.
fn setting_problem(e: &toml::de::Error, kind: &str) -> SettingProblem {
    let message = e.message().trim();
    // serde quotes keys in backticks: "unknown field `bach`, expected one
    // of `url`, `batch`, …"; "missing field `url`".
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if message.starts_with("unknown field `") && !quoted.is_empty() {
        let key = quoted[0].to_string();
        let mut known: Vec<&str> = vec!["kind"];
        known.extend(&quoted[1..]);
        return SettingProblem {
            message: unknown_key_message(&key, &known, &format!("an endpoint of kind {kind}")),
            top: Some(key.clone()),
            key: Some(key),
            missing: false,
        };
    }
    if message.starts_with("missing field `") && !quoted.is_empty() {
        return SettingProblem {
            key: Some(quoted[0].to_string()),
            top: None,
            missing: true,
            message: format!("missing: an endpoint of kind {kind} needs it"),
        };
    }
    // A value of the wrong type: `toml` names its key on a line of its own,
    // "in `batch`".
    let shown = e.to_string();
    let key = shown.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("in `")
            .and_then(|k| k.strip_suffix('`'))
            .map(str::to_string)
    });
    SettingProblem {
        top: key
            .as_deref()
            .map(|k| k.split('.').next().unwrap_or(k).to_string()),
        key,
        missing: false,
        message: message.to_string(),
    }
}

/// What a flow's endpoint name refers to.
enum Lookup<'e> {
    Found(&'e EndpointKind),
    /// Defined, but its own settings are wrong (already reported).
    Broken,
    Missing,
}

/// What the flows of a site are checked against.
struct SiteScope {
    name: String,
    endpoints: Vec<EndpointConfig>,
    /// Endpoints defined with settings their kind could not read.
    broken: Vec<String>,
    /// Each flow name seen so far, with where.
    flows: Vec<(String, String, Option<usize>)>,
}

impl SiteScope {
    fn lookup(&self, name: &str) -> Lookup<'_> {
        match self.endpoints.iter().find(|e| e.name == name) {
            Some(e) => Lookup::Found(&e.kind),
            None if self.broken.iter().any(|b| b == name) => Lookup::Broken,
            None => Lookup::Missing,
        }
    }

    /// The endpoints that could play a part, for the message that refuses one.
    fn would_fit(&self, role: &str, fits: fn(&EndpointKind) -> bool) -> String {
        let names: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|e| fits(&e.kind))
            .map(|e| e.name.as_str())
            .collect();
        if names.is_empty() {
            format!("site {} has no endpoint that can be a {role}", self.name)
        } else {
            format!("would fit: {}", names.join(", "))
        }
    }
}

fn is_source(kind: &EndpointKind) -> bool {
    kind.is_pull_source() || kind.is_push_source()
}

/// Walks the syntax tree and collects every problem on the way.
struct Reader<'a> {
    file: &'a Path,
    /// The byte offset where each line starts.
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
    /// The top level's `max_body_memory`, which bounds every webhook's
    /// `max_body`.
    max_body_memory: usize,
}

impl<'a> Reader<'a> {
    fn new(file: &'a Path, text: &str) -> Reader<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Reader {
            file,
            line_starts,
            errors: Vec::new(),
            max_body_memory: DEFAULT_BODY_MEMORY,
        }
    }

    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start;
        Some(self.line_starts.partition_point(|&s| s <= start))
    }

    /// Records a problem. A URL the message quotes from the file is shown
    /// without its user-info.
    fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: crate::redact::urls_in(&message.into()),
        });
    }

    /// The line of `key` in `table` (else of its value).
    fn key_line(&self, table: &dyn TableLike, key: &str) -> Option<usize> {
        table
            .key(key)
            .and_then(|k| self.line(k.span()))
            .or_else(|| table.get(key).and_then(|i| self.line(i.span())))
    }

    /// The line of the table `key` of `parent`: its own header when it has
    /// one (`[sites.LIVE]`), else where its key first appears.
    fn table_line(&self, parent: &dyn TableLike, key: &str) -> Option<usize> {
        match parent.get(key) {
            Some(Item::Table(t)) => self.line(t.span()),
            _ => None,
        }
        .or_else(|| self.key_line(parent, key))
    }

    /// The line of a dotted key below `table` (`headers.X-Api`), as far down
    /// as the file has it; `fallback` when even its first part is missing.
    fn nested_line(
        &self,
        table: &dyn TableLike,
        key: &str,
        fallback: Option<usize>,
    ) -> Option<usize> {
        let mut table = table;
        let mut rest = key;
        let mut line = fallback;
        'down: loop {
            // The longest leading part of `rest` that is a key here (keys
            // may hold dots of their own).
            let ends = std::iter::once(rest.len()).chain(rest.rmatch_indices('.').map(|(i, _)| i));
            for end in ends {
                let part = &rest[..end];
                if !table.contains_key(part) {
                    continue;
                }
                line = self.key_line(table, part).or(line);
                match table.get(part).and_then(Item::as_table_like) {
                    Some(inner) if end < rest.len() => {
                        table = inner;
                        rest = &rest[end + 1..];
                        continue 'down;
                    }
                    _ => return line,
                }
            }
            return line;
        }
    }

    fn unknown_keys(&mut self, table: &dyn TableLike, path: &str, known: &[&str], owner: &str) {
        let unknown: Vec<String> = table
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        for key in unknown {
            let line = self.key_line(table, &key);
            let message = unknown_key_message(&key, known, owner);
            self.error(line, join(path, &segment(&key)), message);
        }
    }

    /// Reports a value of the wrong type.
    fn wrong_type(&mut self, table: &dyn TableLike, path: &str, key: &str, want: &str) {
        let found = table.get(key).map_or("nothing", Item::type_name);
        let line = self.key_line(table, key);
        self.error(
            line,
            join(path, key),
            format!("must be {want}, not {found}"),
        );
    }

    fn string(&mut self, table: &dyn TableLike, path: &str, key: &str) -> Option<String> {
        let item = table.get(key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(table, path, key, "a string");
                None
            }
        }
    }

    /// A string that must not be empty.
    fn text(&mut self, table: &dyn TableLike, path: &str, key: &str) -> Option<String> {
        let s = self.string(table, path, key)?;
        if s.trim().is_empty() {
            let line = self.key_line(table, key);
            self.error(line, join(path, key), "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A string that must be there: when it is not, the error stands at
    /// `header` (the line of the table's header).
    fn required(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        header: Option<usize>,
        why: &str,
    ) -> Option<String> {
        if !table.contains_key(key) {
            self.error(header, join(path, key), format!("missing: {why}"));
            return None;
        }
        self.text(table, path, key)
    }

    fn integer(&mut self, table: &dyn TableLike, path: &str, key: &str) -> Option<i64> {
        let item = table.get(key)?;
        match item.as_integer() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(table, path, key, "an integer");
                None
            }
        }
    }

    fn boolean(&mut self, table: &dyn TableLike, path: &str, key: &str) -> Option<bool> {
        let item = table.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(table, path, key, "true or false");
                None
            }
        }
    }

    /// `table[key]` as a duration (`30s`, `5m`, `7d`) above zero, or `default`.
    fn duration(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = self.string(table, path, key) else {
            return default;
        };
        match parse_duration(&text) {
            Some(d) if !d.is_zero() => d,
            _ => {
                let line = self.key_line(table, key);
                self.error(
                    line,
                    join(path, key),
                    format!("'{text}' is not a duration above zero (e.g. 90s, 5m, 12h, 7d)"),
                );
                default
            }
        }
    }

    /// `table[key]` as a table, or an error if it is something else.
    fn table<'t>(
        &mut self,
        parent: &'t dyn TableLike,
        path: &str,
        key: &str,
    ) -> Option<&'t dyn TableLike> {
        let item = parent.get(key)?;
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                self.wrong_type(parent, path, key, "a table");
                None
            }
        }
    }

    /// Each entry of the table `key` of `parent`, with its path and line;
    /// entries that are not tables are reported.
    fn entries<'t>(
        &mut self,
        parent: &'t dyn TableLike,
        path: &str,
        key: &str,
        what: &str,
    ) -> Vec<(&'t str, &'t dyn TableLike, String, Option<usize>)> {
        let Some(table) = self.table(parent, path, key) else {
            return Vec::new();
        };
        let at = join(path, key);
        let mut out = Vec::new();
        for (name, item) in table.iter() {
            let line = self.table_line(table, name);
            let entry_path = join(&at, &segment(name));
            match item.as_table_like() {
                Some(t) => out.push((name, t, entry_path, line)),
                None => self.error(
                    line,
                    entry_path,
                    format!("{what} must be a table, not {}", item.type_name()),
                ),
            }
        }
        out
    }

    fn check_name(&mut self, what: &str, name: &str, key: &str, line: Option<usize>) {
        if !valid_name(name) {
            self.error(
                line,
                key,
                format!(
                    "'{name}' is not a valid {what} name: 1 to 64 letters, digits, '-' or '_' \
                     (it is part of URLs)"
                ),
            );
        }
    }

    fn config(&mut self, root: &toml_edit::Table, data_dir_override: Option<&Path>) -> Config {
        let root: &dyn TableLike = root;
        self.unknown_keys(root, "", ROOT_KEYS, "the top level");
        let base_dir = match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().expect("a valid default");
        let listen = match self.string(root, "", "listen") {
            None => default_listen,
            Some(s) => s.trim().parse().unwrap_or_else(|_| {
                let line = self.key_line(root, "listen");
                self.error(
                    line,
                    "listen",
                    format!("'{s}' is not an address: use IP:PORT, such as {DEFAULT_LISTEN}"),
                );
                default_listen
            }),
        };
        self.max_body_memory = match self.integer(root, "", "max_body_memory") {
            None => DEFAULT_BODY_MEMORY,
            Some(n) if (1024..=1 << 30).contains(&n) => n as usize,
            Some(n) => {
                let line = self.key_line(root, "max_body_memory");
                let message = format!("{n} bytes: give 1024 (1 KiB) to 1073741824 (1 GiB)");
                self.error(line, "max_body_memory", message);
                DEFAULT_BODY_MEMORY
            }
        };
        let tls = self.server_tls(root, &base_dir);
        let behind_proxy = self.boolean(root, "", "behind_proxy").unwrap_or(false);
        let file_data_dir = self
            .text(root, "", "data_dir")
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let data_dir = match data_dir_override {
            Some(d) => d.to_path_buf(),
            None => resolve(&base_dir, Path::new(&file_data_dir)),
        };

        let mut sites = Vec::new();
        if !root.contains_key("sites") {
            self.error(None, "sites", NO_SITE);
        }
        let entries = self.entries(root, "", "sites", "a site");
        if root
            .get("sites")
            .and_then(Item::as_table_like)
            .is_some_and(|t| t.is_empty())
        {
            let line = self.table_line(root, "sites");
            self.error(line, "sites", NO_SITE);
        }
        // Each site's data and log file, to keep sites from sharing one.
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        for (name, table, path, line) in entries {
            self.check_name("site", name, &path, line);
            let site = self.site(name, table, &path, &base_dir, &data_dir);
            for (key, file) in [("data_file", &site.data_file), ("log_file", &site.log_file)] {
                let key_path = join(&path, key);
                match files.iter().find(|(f, _)| f == file) {
                    Some((_, other)) => {
                        let at = self.key_line(table, key).or(line);
                        let message = format!(
                            "{} is also {other}: every site needs files of its own",
                            file.display()
                        );
                        self.error(at, key_path, message);
                    }
                    None => files.push((file.clone(), key_path)),
                }
            }
            sites.push(site);
        }
        Config {
            file: self.file.to_path_buf(),
            base_dir,
            listen,
            tls,
            behind_proxy,
            data_dir,
            sites,
            max_body_memory: self.max_body_memory,
        }
    }

    /// `tls_cert` and `tls_key`: both or neither, and usable together (the
    /// files are read now, so a broken one stops the start, not the first
    /// connection).
    fn server_tls(&mut self, root: &dyn TableLike, base_dir: &Path) -> Option<ServerTls> {
        let cert = self.text(root, "", "tls_cert");
        let key = self.text(root, "", "tls_key");
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) if !root.contains_key("tls_key") => {
                let line = self.key_line(root, "tls_cert");
                self.error(
                    line,
                    "tls_key",
                    "missing: tls_cert needs the key of its certificate",
                );
                return None;
            }
            (None, Some(_)) if !root.contains_key("tls_cert") => {
                let line = self.key_line(root, "tls_key");
                self.error(
                    line,
                    "tls_cert",
                    "missing: tls_key needs the certificate it is the key of",
                );
                return None;
            }
            _ => return None,
        };
        let tls = ServerTls {
            cert: resolve(base_dir, Path::new(&cert)),
            key: resolve(base_dir, Path::new(&key)),
        };
        // Each file on its own, so that both are named when both are
        // broken; then together (a key that is not the certificate's).
        let mut broken: Vec<crate::tls::SetupError> = [
            crate::tls::certificates("tls_cert", &tls.cert).map(drop),
            crate::tls::private_key("tls_key", &tls.key).map(drop),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if broken.is_empty() {
            broken.extend(crate::tls::server_config(&tls.cert, &tls.key).err());
        }
        if broken.is_empty() {
            return Some(tls);
        }
        for e in broken {
            let line = self.key_line(root, e.key);
            self.error(line, e.key, e.message);
        }
        None
    }

    fn site(
        &mut self,
        name: &str,
        table: &dyn TableLike,
        path: &str,
        base_dir: &Path,
        data_dir: &Path,
    ) -> SiteConfig {
        self.unknown_keys(table, path, SITE_KEYS, "a site");
        let log_level = match self.integer(table, path, "log_level") {
            None => DEFAULT_LOG_LEVEL,
            Some(n @ 0..=9) => n as u8,
            Some(n) => {
                let at = self.key_line(table, "log_level");
                let message = format!("{n} is not a level: use 0 (fewest lines) to 9 (all)");
                self.error(at, join(path, "log_level"), message);
                DEFAULT_LOG_LEVEL
            }
        };
        let mut file = |key: &str, extension: &str| match self.text(table, path, key) {
            Some(f) => resolve(base_dir, Path::new(&f)),
            None => data_dir.join(format!("{name}.{extension}")),
        };
        let data_file = file("data_file", "db");
        let log_file = file("log_file", "log");
        let keep_sent = self.duration(table, path, "keep_sent", DEFAULT_KEEP_SENT);
        let stall_after = self.duration(table, path, "stall_after", DEFAULT_STALL_AFTER);

        let mut scope = SiteScope {
            name: name.to_string(),
            endpoints: Vec::new(),
            broken: Vec::new(),
            flows: Vec::new(),
        };
        for (ename, ep, epath, eline) in self.entries(table, path, "endpoints", "an endpoint") {
            self.check_name("endpoint", ename, &epath, eline);
            match self.endpoint(ep, &epath, eline, base_dir) {
                Some(kind) => {
                    if let EndpointKind::Webhook(c) = &kind {
                        if c.max_body > self.max_body_memory {
                            let at = self.key_line(ep, "max_body").or(eline);
                            let message = format!(
                                "{} bytes is more than max_body_memory ({}): such a body could \
                                 never be read; raise max_body_memory at the top of the file",
                                c.max_body, self.max_body_memory
                            );
                            self.error(at, join(&epath, "max_body"), message);
                        }
                    }
                    scope.endpoints.push(EndpointConfig {
                        name: ename.to_string(),
                        kind,
                    })
                }
                None => scope.broken.push(ename.to_string()),
            }
        }

        let mut integrations = Vec::new();
        let entries = self.entries(table, path, "integrations", "an integration");
        for (iname, it, ipath, iline) in entries {
            self.check_name("integration", iname, &ipath, iline);
            self.unknown_keys(it, &ipath, INTEGRATION_KEYS, "an integration");
            let on_error = match self.string(it, &ipath, "on_error").as_deref() {
                None | Some("block") => OnError::Block,
                Some("skip") => OnError::Skip,
                Some(other) => {
                    let at = self.key_line(it, "on_error");
                    let hint = closest(other, &["block", "skip"])
                        .map(|k| format!("; did you mean \"{k}\"?"))
                        .unwrap_or_default();
                    let message = format!("'{other}' is neither \"block\" nor \"skip\"{hint}");
                    self.error(at, join(&ipath, "on_error"), message);
                    OnError::Block
                }
            };
            let flows = self.flows(it, iname, &ipath, iline, &mut scope);
            integrations.push(IntegrationConfig {
                name: iname.to_string(),
                on_error,
                flows,
            });
        }
        SiteConfig {
            name: name.to_string(),
            log_level,
            data_file,
            log_file,
            keep_sent,
            stall_after,
            endpoints: scope.endpoints,
            integrations,
        }
    }

    /// The endpoint's kind with its settings, or None when its kind could
    /// not read them. Settings that were read but are wrong are reported and
    /// still returned, so the flows that use the endpoint are checked too.
    fn endpoint(
        &mut self,
        ep: &dyn TableLike,
        path: &str,
        header: Option<usize>,
        base_dir: &Path,
    ) -> Option<EndpointKind> {
        let kinds = EndpointKind::NAMES.join(", ");
        let kind = self.required(ep, path, "kind", header, &format!("one of {kinds}"))?;
        let mut settings = plain_table(ep);
        settings.remove("kind");
        // Keys left out after a problem, each reported once.
        let mut left_out: Vec<String> = Vec::new();
        let parsed = loop {
            let Some(result) = EndpointKind::from_table(&kind, settings.clone()) else {
                let at = self.key_line(ep, "kind");
                let hint = closest(&kind, &EndpointKind::NAMES)
                    .map(|k| format!("did you mean '{k}'? "))
                    .unwrap_or_default();
                let message = format!("unknown kind '{kind}': {hint}one of {kinds}");
                self.error(at, join(path, "kind"), message);
                return None;
            };
            let e = match result {
                Ok(parsed) => break Some(parsed),
                Err(e) => e,
            };
            let problem = setting_problem(&e, &kind);
            let at = match (&problem.key, problem.missing) {
                (Some(key), false) => self.nested_line(ep, key, header),
                _ => header,
            };
            let key = problem
                .key
                .as_deref()
                .map_or_else(|| path.to_string(), |k| join(path, k));
            self.error(at, key, problem.message);
            // Leave the key out and read again, to find the next problem too.
            match problem.top {
                Some(top) if settings.remove(&top).is_some() => left_out.push(top),
                _ => break None,
            }
        };
        let parsed = parsed?;
        for (key, problem) in parsed.validate(base_dir) {
            let top = key.split('.').next().unwrap_or(&key);
            if !left_out.iter().any(|k| k == top) {
                let at = self.nested_line(ep, &key, header);
                self.error(at, join(path, &key), problem);
            }
        }
        Some(parsed)
    }

    fn flows(
        &mut self,
        it: &dyn TableLike,
        integration: &str,
        ipath: &str,
        iline: Option<usize>,
        site: &mut SiteScope,
    ) -> Vec<FlowConfig> {
        let Some(item) = it.get("flows") else {
            return Vec::new();
        };
        let tables: Vec<(&dyn TableLike, Option<usize>)> = match item {
            Item::ArrayOfTables(a) => a
                .iter()
                .map(|t| (t as &dyn TableLike, self.line(t.span()).or(iline)))
                .collect(),
            Item::Value(Value::Array(a)) if a.iter().all(Value::is_inline_table) => a
                .iter()
                .filter_map(Value::as_inline_table)
                .map(|t| (t as &dyn TableLike, self.line(t.span()).or(iline)))
                .collect(),
            other => {
                let at = self.key_line(it, "flows");
                let message = format!(
                    "must be an array of tables ([[{ipath}.flows]]), not {}",
                    other.type_name()
                );
                self.error(at, join(ipath, "flows"), message);
                return Vec::new();
            }
        };
        tables
            .into_iter()
            .enumerate()
            .filter_map(|(i, (flow, line))| {
                let path = format!("{ipath}.flows[{i}]");
                self.flow(flow, integration, &path, line, site)
            })
            .collect()
    }

    /// The kind of the endpoint a flow names as its `role` (`source` or
    /// `target`) when it exists and can be one; otherwise the error, at the
    /// key's line (nothing more for an endpoint whose own settings were
    /// wrong: that is reported already).
    fn flow_endpoint<'s>(
        &mut self,
        site: &'s SiteScope,
        flow: &dyn toml_edit::TableLike,
        path: &str,
        role: &str,
        name: &str,
        fits: fn(&EndpointKind) -> bool,
    ) -> Option<&'s EndpointKind> {
        let at = self.key_line(flow, role);
        let message = match site.lookup(name) {
            Lookup::Broken => return None,
            Lookup::Found(kind) if fits(kind) => return Some(kind),
            Lookup::Missing => format!(
                "no endpoint '{name}' in site {}; {}",
                site.name,
                site.would_fit(role, fits)
            ),
            Lookup::Found(kind) => format!(
                "endpoint '{name}' is of kind {}, which cannot be a {role}; {}",
                kind.name(),
                site.would_fit(role, fits)
            ),
        };
        self.error(at, join(path, role), message);
        None
    }

    fn flow(
        &mut self,
        flow: &dyn TableLike,
        integration: &str,
        path: &str,
        header: Option<usize>,
        site: &mut SiteScope,
    ) -> Option<FlowConfig> {
        self.unknown_keys(flow, path, FLOW_KEYS, "a flow");
        let name = self.required(
            flow,
            path,
            "name",
            header,
            "the flow's name, by which the API addresses it (/sites/{site}/flows/{name})",
        );
        let source = self.required(
            flow,
            path,
            "source",
            header,
            "the endpoint records come from",
        );
        let target = self.required(flow, path, "target", header, "the endpoint records go to");
        let key = self.text(flow, path, "key");
        let cursor = self.text(flow, path, "cursor");
        let enabled = self.boolean(flow, path, "enabled").unwrap_or(true);
        let auto_resolve = self.boolean(flow, path, "auto_resolve").unwrap_or(true);
        let retry_limit = match self.integer(flow, path, "retry_limit") {
            None => 0,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= 1_000_000)
                .unwrap_or_else(|| {
                    let at = self.key_line(flow, "retry_limit");
                    let message = format!("{n}: use 0 (no limit) to 1000000");
                    self.error(at, join(path, "retry_limit"), message);
                    0
                }),
        };
        let schedule_line = self.key_line(flow, "schedule");
        let schedule = self
            .string(flow, path, "schedule")
            .map(|s| Schedule::parse(&s));
        // A webhook flow's schedule is wrong whatever it says.
        let mut pushed = false;

        if let Some(name) = &name {
            let at = self.key_line(flow, "name");
            self.check_name("flow", name, &join(path, "name"), at);
            if let Some((_, other, other_line)) = site.flows.iter().find(|(n, ..)| n == name) {
                let place = other_line.map_or_else(String::new, |l| format!(" (line {l})"));
                let message = format!(
                    "flow '{name}' is already defined at {other}{place}: flow names are unique \
                     within a site, across its integrations (/sites/{}/flows/{name})",
                    site.name
                );
                self.error(at, join(path, "name"), message);
            } else {
                site.flows.push((name.clone(), path.to_string(), at));
            }
        }

        if let Some(source) = &source {
            if let Some(kind) = self.flow_endpoint(site, flow, path, "source", source, is_source) {
                pushed = kind.is_push_source();
                if pushed && flow.contains_key("schedule") {
                    let flow_name = name.as_deref().unwrap_or("{flow}");
                    let message = format!(
                        "a flow from webhook '{source}' has no schedule: its records arrive \
                         by POST to /hooks/{}/{integration}/{flow_name}",
                        site.name
                    );
                    self.error(schedule_line, join(path, "schedule"), message);
                }
                if matches!(kind, EndpointKind::File(_)) && !flow.contains_key("cursor") {
                    let message = format!(
                        "missing: a flow from file endpoint '{source}' needs the record \
                         field 'Send Changed' compares with the checkpoint \
                         (e.g. cursor = \"updated_at\")"
                    );
                    self.error(header, join(path, "cursor"), message);
                }
            }
        }

        let schedule = match schedule {
            Some(Err(e)) if !pushed => {
                self.error(schedule_line, join(path, "schedule"), e);
                None
            }
            Some(parsed) => parsed.ok(),
            None => None,
        };

        if let Some(target) = &target {
            self.flow_endpoint(site, flow, path, "target", target, EndpointKind::is_target);
        }

        Some(FlowConfig {
            name: name?,
            source: source?,
            target: target?,
            schedule,
            key,
            cursor,
            enabled,
            auto_resolve,
            retry_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// DESIGN.md's example without its comments and blank lines.
    const EXAMPLE: &str = r#"listen = "127.0.0.1:7070"
data_dir = "./data"
[sites.LIVE]
log_level = 4
[sites.LIVE.endpoints.shop]
kind = "webhook"
[sites.LIVE.endpoints.erp]
kind = "file"
path = "erp.jsonl"
[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:9000/records"
batch = 1
[sites.LIVE.integrations.orders]
on_error = "block"
[[sites.LIVE.integrations.orders.flows]]
name = "web-orders"
source = "shop"
target = "crm"
[[sites.LIVE.integrations.orders.flows]]
name = "customers"
source = "erp"
target = "crm"
schedule = "*/5 * * * *"
key = "id"
cursor = "updated_at"
"#;

    /// A site with one endpoint of each kind and an integration `orders`
    /// without flows; what a test appends starts at line `BASE + 1`.
    const SITE: &str = r#"[sites.LIVE.endpoints.shop]
kind = "webhook"
[sites.LIVE.endpoints.erp]
kind = "file"
path = "erp.jsonl"
[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:9000/records"
[sites.LIVE.endpoints.gen]
kind = "generator"
[sites.LIVE.integrations.orders]
"#;
    const BASE: usize = 11;

    fn with(more: &str) -> String {
        format!("{SITE}{more}")
    }

    fn flow(lines: &str) -> String {
        with(&format!(
            "[[sites.LIVE.integrations.orders.flows]]\n{lines}"
        ))
    }

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("/etc/sluice/sluice.toml"), None)
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match parse(text) {
            Ok(c) => panic!("no error in\n{text}\nparsed to {c:#?}"),
            Err(e) => e.0,
        }
    }

    /// The error about `key` is on `line` and its message holds `part`.
    #[track_caller]
    fn assert_error(errors: &[ConfigError], key: &str, line: Option<usize>, part: &str) {
        let e = errors
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key} in {errors:#?}"));
        assert_eq!(e.line, line, "line of {e:#?}");
        assert!(e.message.contains(part), "{:?} lacks {part:?}", e.message);
    }

    /// `text` has exactly one problem: about `key`, on `line`, saying `part`.
    #[track_caller]
    fn assert_only(text: &str, key: &str, line: Option<usize>, part: &str) {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_error(&errs, key, line, part);
    }

    #[test]
    fn the_design_example_parses_to_the_expected_structure() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.file, Path::new("/etc/sluice/sluice.toml"));
        assert_eq!(c.base_dir, Path::new("/etc/sluice"));
        assert_eq!(c.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.data_dir.as_os_str(), "/etc/sluice/data");
        assert_eq!(c.sites.len(), 1);
        let live = c.site("LIVE").unwrap();
        assert_eq!(live.name, "LIVE");
        assert_eq!(live.log_level, 4);
        assert_eq!(live.data_file.as_os_str(), "/etc/sluice/data/LIVE.db");
        assert_eq!(live.log_file.as_os_str(), "/etc/sluice/data/LIVE.log");

        let names: Vec<&str> = live.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["shop", "erp", "crm"]);
        assert!(matches!(
            live.endpoint("shop").unwrap().kind,
            EndpointKind::Webhook(_)
        ));
        match &live.endpoint("erp").unwrap().kind {
            EndpointKind::File(f) => assert_eq!(f.path, Path::new("erp.jsonl")),
            other => panic!("{other:?}"),
        }
        match &live.endpoint("crm").unwrap().kind {
            EndpointKind::Http(h) => {
                assert_eq!(h.url, "http://127.0.0.1:9000/records");
                assert_eq!(h.batch, 1);
            }
            other => panic!("{other:?}"),
        }

        let web_orders = FlowConfig {
            name: "web-orders".into(),
            source: "shop".into(),
            target: "crm".into(),
            schedule: None,
            key: None,
            cursor: None,
            enabled: true,
            auto_resolve: true,
            retry_limit: 0,
        };
        let customers = FlowConfig {
            name: "customers".into(),
            source: "erp".into(),
            target: "crm".into(),
            schedule: Some(Schedule::parse("*/5 * * * *").unwrap()),
            key: Some("id".into()),
            cursor: Some("updated_at".into()),
            ..web_orders.clone()
        };
        assert_eq!(
            live.integrations,
            [IntegrationConfig {
                name: "orders".into(),
                on_error: OnError::Block,
                flows: vec![web_orders, customers.clone()],
            }]
        );
        let (integration, flow) = live.flow("customers").unwrap();
        assert_eq!(integration.name, "orders");
        assert_eq!(flow, &customers);
        assert!(live.integration("orders").is_some());
        assert!(live.flow("nowhere").is_none() && c.site("DEV").is_none());
    }

    #[test]
    fn the_daemons_tls_keys_come_in_pairs_and_behind_proxy_is_a_bool() {
        assert_only(
            "tls_cert = \"c.pem\"\n[sites.DEV]\n",
            "tls_key",
            Some(1),
            "missing: tls_cert needs the key",
        );
        assert_only(
            "tls_key = \"k.pem\"\n[sites.DEV]\n",
            "tls_cert",
            Some(1),
            "missing: tls_key needs the certificate",
        );
        let errs = errors("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[sites.DEV]\n");
        assert_error(&errs, "tls_cert", Some(1), "cannot read /etc/sluice/c.pem");
        assert_error(&errs, "tls_key", Some(2), "cannot read /etc/sluice/k.pem");
        assert_only(
            "behind_proxy = \"yes\"\n[sites.DEV]\n",
            "behind_proxy",
            Some(1),
            "must be true or false",
        );
        assert!(
            parse("behind_proxy = true\n[sites.DEV]\n")
                .unwrap()
                .behind_proxy
        );
    }

    #[test]
    fn defaults_are_applied() {
        let c = parse("[sites.DEV]\n").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.tls, None);
        assert!(!c.behind_proxy);
        assert_eq!(c.data_dir.as_os_str(), "/etc/sluice/data");
        let dev = c.site("DEV").unwrap();
        assert_eq!(dev.log_level, DEFAULT_LOG_LEVEL);
        assert_eq!(dev.data_file.as_os_str(), "/etc/sluice/data/DEV.db");
        assert_eq!(dev.log_file.as_os_str(), "/etc/sluice/data/DEV.log");
        assert_eq!(dev.keep_sent, DEFAULT_KEEP_SENT);
        assert_eq!(dev.stall_after, DEFAULT_STALL_AFTER);
        assert!(dev.endpoints.is_empty() && dev.integrations.is_empty());

        let c = parse(&flow("name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\n")).unwrap();
        let (integration, f) = c.sites[0].flow("f").unwrap();
        assert_eq!(integration.on_error, OnError::Block);
        assert_eq!((f.enabled, f.auto_resolve, f.retry_limit), (true, true, 0));
        assert_eq!((&f.schedule, &f.key, &f.cursor), (&None, &None, &None));

        let c = parse(&flow(
            "name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\nenabled = false\n\
             auto_resolve = false\nretry_limit = 5\nschedule = \"every 1m 30s\"\n",
        ))
        .unwrap();
        let f = c.sites[0].flow("f").unwrap().1;
        assert_eq!(
            (f.enabled, f.auto_resolve, f.retry_limit),
            (false, false, 5)
        );
        assert_eq!(f.schedule, Some(Schedule::Every(Duration::from_secs(90))));
        let c = parse("[sites.DEV]\nkeep_sent = \"36h\"\nstall_after = \"90s\"\n").unwrap();
        assert_eq!(c.sites[0].keep_sent, Duration::from_secs(36 * 3600));
        assert_eq!(c.sites[0].stall_after, Duration::from_secs(90));
        let c = parse("[sites.DEV.integrations.orders]\non_error = \"skip\"\n").unwrap();
        assert_eq!(c.sites[0].integrations[0].on_error, OnError::Skip);
    }

    #[test]
    fn relative_paths_resolve_against_the_files_folder() {
        let text = "data_dir = \"state\"\n[sites.A]\ndata_file = \"./a/live.db\"\n\
                    log_file = \"/var/log/a.log\"\n[sites.B]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.data_dir.as_os_str(), "/etc/sluice/state");
        assert_eq!(c.sites[0].data_file.as_os_str(), "/etc/sluice/a/live.db");
        assert_eq!(c.sites[0].log_file.as_os_str(), "/var/log/a.log");
        assert_eq!(c.sites[1].data_file.as_os_str(), "/etc/sluice/state/B.db");
        // The command line's data directory is taken as given.
        let c = Config::parse(text, Path::new("sluice.toml"), Some(Path::new("d"))).unwrap();
        assert_eq!(c.base_dir, Path::new("."));
        assert_eq!(c.data_dir, Path::new("d"));
        assert_eq!(c.sites[1].log_file, Path::new("d/B.log"));
        assert_eq!(c.sites[0].data_file.as_os_str(), "./a/live.db");
        let c = Config::parse("[sites.A]\n", Path::new("conf/s.toml"), None).unwrap();
        assert_eq!(c.data_dir.as_os_str(), "conf/data");
    }

    #[test]
    fn there_is_at_least_one_site() {
        assert_only(
            "listen = \"127.0.0.1:1\"\n",
            "sites",
            None,
            "no site: add at least one [sites.NAME] table",
        );
        assert_only(
            "listen = \"127.0.0.1:1\"\n[sites]\n",
            "sites",
            Some(2),
            "no site",
        );
        assert_only(
            "sites = 3\n",
            "sites",
            Some(1),
            "must be a table, not integer",
        );
        assert_only(
            "[[sites]]\n",
            "sites",
            Some(1),
            "must be a table, not array of tables",
        );
    }

    #[test]
    fn names_are_url_segments() {
        let rule = "1 to 64 letters, digits, '-' or '_'";
        assert_only("[sites.\"LI VE\"]\n", "sites.\"LI VE\"", Some(1), rule);
        assert_only(
            "listen = \"127.0.0.1:1\"\n[sites.\"\"]\n",
            "sites.\"\"",
            Some(2),
            "'' is not a valid site name",
        );
        let long = "e".repeat(65);
        assert_only(
            &with(&format!(
                "[sites.LIVE.endpoints.{long}]\nkind = \"webhook\"\n"
            )),
            &format!("sites.LIVE.endpoints.{long}"),
            Some(BASE + 1),
            "is not a valid endpoint name",
        );
        assert!(parse(&format!("[sites.{}]\n", "s".repeat(64))).is_ok());
        assert_only(
            &with("[sites.LIVE.integrations.\"a.b\"]\n"),
            "sites.LIVE.integrations.\"a.b\"",
            Some(BASE + 1),
            "'a.b' is not a valid integration name",
        );
        assert_only(
            &flow("name = \"web orders\"\nsource = \"gen\"\ntarget = \"crm\"\n"),
            "sites.LIVE.integrations.orders.flows[0].name",
            Some(BASE + 2),
            "'web orders' is not a valid flow name",
        );
    }

    #[test]
    fn log_level_is_0_to_9() {
        assert_only(
            "[sites.LIVE]\nlog_level = 12\n",
            "sites.LIVE.log_level",
            Some(2),
            "12 is not a level: use 0 (fewest lines) to 9 (all)",
        );
        assert_only(
            "[sites.LIVE]\n\nlog_level = \"4\"\n",
            "sites.LIVE.log_level",
            Some(3),
            "must be an integer, not string",
        );
        assert!(parse("[sites.LIVE]\nlog_level = 0\n").is_ok());
        assert!(parse("[sites.LIVE]\nlog_level = 9\n").is_ok());
    }

    #[test]
    fn listen_is_a_socket_address() {
        assert_only(
            "listen = \"here\"\n[sites.X]\n",
            "listen",
            Some(1),
            "'here' is not an address: use IP:PORT, such as 127.0.0.1:7070",
        );
        let c = parse("listen = \"0.0.0.0:80\"\n[sites.X]\n").unwrap();
        assert_eq!(c.listen, "0.0.0.0:80".parse().unwrap());
    }

    #[test]
    fn flow_names_are_unique_within_a_site_across_integrations() {
        let text = with(
            "[[sites.LIVE.integrations.orders.flows]]\nname = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\n\
             [sites.LIVE.integrations.other]\n\
             [[sites.LIVE.integrations.other.flows]]\nname = \"f\"\nsource = \"shop\"\ntarget = \"crm\"\n",
        );
        assert_only(
            &text,
            "sites.LIVE.integrations.other.flows[0].name",
            Some(BASE + 7),
            "flow 'f' is already defined at sites.LIVE.integrations.orders.flows[0] (line 13)",
        );
        // Other sites may use the name.
        let other_site = text.replace("integrations.other", "elsewhere");
        let other_site = other_site.replace("[sites.LIVE.elsewhere]\n", "");
        let other_site = other_site.replace(
            "[[sites.LIVE.elsewhere.flows]]",
            "[sites.DEV.endpoints.crm]\nkind = \"file\"\npath = \"x\"\n\
             [sites.DEV.endpoints.gen]\nkind = \"generator\"\n\
             [[sites.DEV.integrations.other.flows]]",
        );
        let other_site = other_site.replace("source = \"shop\"", "source = \"gen\"");
        let c = parse(&other_site).unwrap();
        assert!(c.site("DEV").unwrap().flow("f").is_some());
    }

    #[test]
    fn source_names_an_endpoint_that_is_a_source() {
        assert_only(
            &flow("name = \"f\"\nsource = \"nowhere\"\ntarget = \"crm\"\n"),
            "sites.LIVE.integrations.orders.flows[0].source",
            Some(BASE + 3),
            "no endpoint 'nowhere' in site LIVE; would fit: shop, erp, gen",
        );
        assert_only(
            &flow("name = \"f\"\ntarget = \"erp\"\nsource = \"crm\"\n"),
            "sites.LIVE.integrations.orders.flows[0].source",
            Some(BASE + 4),
            "endpoint 'crm' is of kind http, which cannot be a source; would fit: shop, erp, gen",
        );
        assert_only(
            "[sites.L.endpoints.out]\nkind = \"http\"\nurl = \"http://x\"\n\
             [[sites.L.integrations.i.flows]]\nname = \"f\"\nsource = \"out\"\ntarget = \"out\"\n",
            "sites.L.integrations.i.flows[0].source",
            Some(6),
            "site L has no endpoint that can be a source",
        );
    }

    #[test]
    fn target_names_an_endpoint_that_is_a_target() {
        assert_only(
            &flow("name = \"f\"\nsource = \"gen\"\ntarget = \"shop\"\n"),
            "sites.LIVE.integrations.orders.flows[0].target",
            Some(BASE + 4),
            "endpoint 'shop' is of kind webhook, which cannot be a target; would fit: erp, crm",
        );
        assert_only(
            &flow("name = \"f\"\nsource = \"gen\"\ntarget = \"crn\"\n"),
            "sites.LIVE.integrations.orders.flows[0].target",
            Some(BASE + 4),
            "no endpoint 'crn' in site LIVE; would fit: erp, crm",
        );
        assert_only(
            "[sites.L.endpoints.in]\nkind = \"webhook\"\n\
             [[sites.L.integrations.i.flows]]\nname = \"f\"\nsource = \"in\"\ntarget = \"in\"\n",
            "sites.L.integrations.i.flows[0].target",
            Some(6),
            "site L has no endpoint that can be a target",
        );
    }

    #[test]
    fn a_webhook_flow_has_no_schedule() {
        let text =
            flow("name = \"f\"\nsource = \"shop\"\ntarget = \"crm\"\nschedule = \"every 5s\"\n");
        assert_only(
            &text,
            "sites.LIVE.integrations.orders.flows[0].schedule",
            Some(BASE + 5),
            "a flow from webhook 'shop' has no schedule: its records arrive by POST to \
             /hooks/LIVE/orders/f",
        );
        // Whatever the schedule says, that is the one problem with it.
        let text = text.replace("every 5s", "sometimes");
        assert_only(
            &text,
            "sites.LIVE.integrations.orders.flows[0].schedule",
            Some(BASE + 5),
            "has no schedule",
        );
    }

    #[test]
    fn a_file_flow_needs_a_cursor() {
        assert_only(
            &flow("name = \"f\"\nsource = \"erp\"\ntarget = \"crm\"\nkey = \"id\"\n"),
            "sites.LIVE.integrations.orders.flows[0].cursor",
            Some(BASE + 1),
            "missing: a flow from file endpoint 'erp' needs the record field 'Send Changed' \
             compares with the checkpoint",
        );
        assert!(parse(&flow(
            "name = \"f\"\nsource = \"erp\"\ntarget = \"crm\"\ncursor = \"updated_at\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn schedule_must_parse() {
        let errs = errors(&flow(
            "name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\nschedule = \"sometimes\"\n",
        ));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let key = "sites.LIVE.integrations.orders.flows[0].schedule";
        assert_error(&errs, key, Some(BASE + 5), "'sometimes' is not a schedule");
        assert_error(
            &errs,
            key,
            Some(BASE + 5),
            "use 'every DURATION' (e.g. 'every 30s'",
        );
        assert_error(&errs, key, Some(BASE + 5), "a cron expression of 5 fields");
        assert_only(
            &flow("name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\nschedule = \"every 0s\"\n"),
            key,
            Some(BASE + 5),
            "the interval must be a duration above zero",
        );
        assert_only(
            &flow("name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\nschedule = 5\n"),
            key,
            Some(BASE + 5),
            "must be a string, not integer",
        );
    }

    #[test]
    fn on_error_is_block_or_skip() {
        assert_only(
            &with("on_error = \"halt\"\n"),
            "sites.LIVE.integrations.orders.on_error",
            Some(BASE + 1),
            "'halt' is neither \"block\" nor \"skip\"",
        );
        assert_only(
            &with("on_error = \"skp\"\n"),
            "sites.LIVE.integrations.orders.on_error",
            Some(BASE + 1),
            "did you mean \"skip\"?",
        );
    }

    #[test]
    fn an_integration_without_flows_is_allowed() {
        let c = parse(&with("on_error = \"skip\"\n")).unwrap();
        let orders = c.sites[0].integration("orders").unwrap();
        assert!(orders.flows.is_empty());
        let c = parse(&with("flows = []\n")).unwrap();
        assert!(c.sites[0].integrations[0].flows.is_empty());
    }

    #[test]
    fn flow_values_are_checked() {
        let path = "sites.LIVE.integrations.orders.flows[0]";
        let errs = errors(&flow("name = \"f\"\n"));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_error(&errs, &format!("{path}.source"), Some(BASE + 1), "missing");
        assert_error(&errs, &format!("{path}.target"), Some(BASE + 1), "missing");
        assert_only(
            &flow("source = \"gen\"\ntarget = \"crm\"\n"),
            &format!("{path}.name"),
            Some(BASE + 1),
            "missing: the flow's name",
        );
        let good = "name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\n";
        for (line, part) in [
            ("enabled = \"yes\"", "must be true or false, not string"),
            ("auto_resolve = 1", "must be true or false, not integer"),
            ("retry_limit = -1", "-1: use 0 (no limit) to 1000000"),
            ("key = \"\"", "must not be empty"),
            ("cursor = \" \"", "must not be empty"),
        ] {
            let key = line.split(' ').next().unwrap();
            assert_only(
                &flow(&format!("{good}{line}\n")),
                &format!("{path}.{key}"),
                Some(BASE + 5),
                part,
            );
        }
        assert_only(
            &with("[sites.LIVE.integrations.orders.flows]\nname = \"f\"\n"),
            "sites.LIVE.integrations.orders.flows",
            Some(BASE + 1),
            "must be an array of tables ([[sites.LIVE.integrations.orders.flows]]), not table",
        );
        assert_only(
            "[sites.L]\nkeep_sent = \"forever\"\n",
            "sites.L.keep_sent",
            Some(2),
            "'forever' is not a duration above zero",
        );
    }

    #[test]
    fn flows_may_be_inline_tables() {
        let c = parse(&with(
            "flows = [\n  { name = \"a\", source = \"gen\", target = \"crm\" },\n  \
             { name = \"b\", source = \"gen\", target = \"crm\" },\n]\n",
        ))
        .unwrap();
        assert_eq!(c.sites[0].integrations[0].flows.len(), 2);
        assert_only(
            &with("flows = [\n  { name = \"a\", source = \"gen\", target = \"crm\" },\n  { name = \"b\", target = \"crm\" },\n]\n"),
            "sites.LIVE.integrations.orders.flows[1].source",
            Some(BASE + 3),
            "missing",
        );
    }

    #[test]
    fn sites_do_not_share_files() {
        assert_only(
            "[sites.A]\ndata_file = \"data/B.db\"\n[sites.B]\n",
            "sites.B.data_file",
            Some(3),
            "/etc/sluice/data/B.db is also sites.A.data_file: every site needs files of its own",
        );
        assert_only(
            "[sites.A]\nlog_file = \"a\"\n[sites.B]\n\ndata_file = \"a\"\n",
            "sites.B.data_file",
            Some(5),
            "is also sites.A.log_file",
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_closest_known_key() {
        let errs = errors(&flow(
            "name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\nshedule = \"every 5s\"\n",
        ));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_error(
            &errs,
            "sites.LIVE.integrations.orders.flows[0].shedule",
            Some(BASE + 5),
            "unknown key; did you mean 'schedule'?",
        );
        assert_only(
            "listne = \"x\"\n[sites.A]\n",
            "listne",
            Some(1),
            "did you mean 'listen'?",
        );
        assert_only(
            "[sites.A]\nLog_Levle = 3\n",
            "sites.A.Log_Levle",
            Some(2),
            "'log_level'",
        );
        assert_only(
            &with("on_eror = \"skip\"\n"),
            "sites.LIVE.integrations.orders.on_eror",
            Some(BASE + 1),
            "did you mean 'on_error'?",
        );
        assert_only(
            &flow("name = \"f\"\nsource = \"gen\"\ntarget = \"crm\"\ncolour = \"red\"\n"),
            "sites.LIVE.integrations.orders.flows[0].colour",
            Some(BASE + 5),
            "unknown key; a flow has: name, source, target, schedule, key, cursor, enabled",
        );
        assert_only(
            "[sites.A]\n\"odd key\" = 1\n",
            "sites.A.\"odd key\"",
            Some(2),
            "unknown key; a site has: log_level",
        );
    }

    #[test]
    fn endpoint_kinds() {
        assert_only(
            &with("[sites.LIVE.endpoints.x]\npath = \"p\"\n"),
            "sites.LIVE.endpoints.x.kind",
            Some(BASE + 1),
            "missing: one of webhook, file, http, generator",
        );
        assert_only(
            &with("[sites.LIVE.endpoints.x]\n\nkind = \"webhok\"\n"),
            "sites.LIVE.endpoints.x.kind",
            Some(BASE + 3),
            "unknown kind 'webhok': did you mean 'webhook'? one of webhook, file, http, generator",
        );
        assert_only(
            &with("[sites.LIVE.endpoints.x]\nkind = 3\n"),
            "sites.LIVE.endpoints.x.kind",
            Some(BASE + 2),
            "must be a string, not integer",
        );
        // A flow that uses an endpoint whose own settings are wrong is not
        // blamed for it.
        assert_only(
            &with(
                "[sites.LIVE.endpoints.x]\nkind = \"teleport\"\n\
                 [[sites.LIVE.integrations.orders.flows]]\nname = \"f\"\nsource = \"x\"\ntarget = \"x\"\n",
            ),
            "sites.LIVE.endpoints.x.kind",
            Some(BASE + 2),
            "unknown kind 'teleport': one of",
        );
    }

    #[test]
    fn endpoint_settings_are_read_and_validated_by_their_kind() {
        let ep = "sites.LIVE.endpoints.crm";
        // Unknown settings, with the closest key the kind knows.
        assert_only(
            &SITE.replace("url = ", "bach = 3\nurl = "),
            &format!("{ep}.bach"),
            Some(8),
            "unknown key; did you mean 'batch'?",
        );
        assert_only(
            &SITE.replace("url = ", "colour = 3\nurl = "),
            &format!("{ep}.colour"),
            Some(8),
            "unknown key; an endpoint of kind http has: kind, url, batch, timeout",
        );
        // A missing setting stands at the endpoint's header.
        assert_only(
            &SITE.replace("url = \"http://127.0.0.1:9000/records\"\n", ""),
            &format!("{ep}.url"),
            Some(6),
            "missing: an endpoint of kind http needs it",
        );
        // Values the kind refuses (`EndpointKind::validate`).
        assert_only(
            &SITE.replace("url = ", "batch = 0\nurl = "),
            &format!("{ep}.batch"),
            Some(8),
            "must be between 1 and 10000",
        );
        assert_only(
            &with("[sites.LIVE.endpoints.crm.headers]\nok = \"1\"\n\"bad header\" = \"x\"\n"),
            &format!("{ep}.headers.bad header"),
            Some(BASE + 3),
            "is not a header name",
        );
        // Values of the wrong type.
        assert_only(
            &SITE.replace("url = ", "timeout = 5\nurl = "),
            &format!("{ep}.timeout"),
            Some(8),
            "invalid type: integer `5`, expected a string",
        );
        assert_only(
            &with("[sites.LIVE.endpoints.crm.headers]\nok = \"1\"\nnumber = 2\n"),
            &format!("{ep}.headers.number"),
            Some(BASE + 3),
            "expected a string",
        );
        assert_only(
            &SITE.replace(
                "path = \"erp.jsonl\"",
                "path = \"erp.jsonl\"\npace = \"soon\"",
            ),
            "sites.LIVE.endpoints.erp.pace",
            Some(6),
            "'soon' is not a duration",
        );
        // Every problem of one endpoint at once.
        let errs = errors(&SITE.replace("url = ", "bach = 3\nbatch = 0\nurl = "));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_error(
            &errs,
            &format!("{ep}.bach"),
            Some(8),
            "did you mean 'batch'?",
        );
        assert_error(
            &errs,
            &format!("{ep}.batch"),
            Some(9),
            "must be between 1 and 10000",
        );
        let errs = errors(&SITE.replace(
            "url = ",
            "bach = 3\ntimeout = 5\nbatch = \"x\"\nheaders = { a = 1 }\nurl = ",
        ));
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert_error(
            &errs,
            &format!("{ep}.bach"),
            Some(8),
            "did you mean 'batch'?",
        );
        assert_error(
            &errs,
            &format!("{ep}.timeout"),
            Some(9),
            "expected a string",
        );
        assert_error(&errs, &format!("{ep}.batch"), Some(10), "expected usize");
        assert_error(
            &errs,
            &format!("{ep}.headers.a"),
            Some(11),
            "expected a string",
        );
    }

    #[test]
    fn every_error_is_reported_at_once_in_line_order() {
        let text = EXAMPLE
            .replace("batch = 1", "batch = 0")
            .replace("source = \"shop\"", "source = \"nowhere\"")
            .replace("on_error = \"block\"", "on_error = \"halt\"")
            .replace("key = \"id\"", "kee = \"id\"")
            .replace("log_level = 4", "log_level = 12")
            .replace("listen = \"127.0.0.1:7070\"", "listen = \"here\"");
        let errs = errors(&text);
        let found: Vec<(Option<usize>, &str)> =
            errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(1), "listen"),
                (Some(4), "sites.LIVE.log_level"),
                (Some(13), "sites.LIVE.endpoints.crm.batch"),
                (Some(15), "sites.LIVE.integrations.orders.on_error"),
                (Some(18), "sites.LIVE.integrations.orders.flows[0].source"),
                (Some(25), "sites.LIVE.integrations.orders.flows[1].kee"),
            ]
        );
        assert_error(
            &errs,
            "sites.LIVE.integrations.orders.flows[0].source",
            Some(18),
            "no endpoint 'nowhere' in site LIVE; would fit: shop, erp",
        );
        let shown = ConfigErrors(errs).to_string();
        assert_eq!(shown.lines().count(), 6, "{shown}");
        assert_eq!(
            shown.lines().nth(2),
            Some(
                "/etc/sluice/sluice.toml:13: sites.LIVE.endpoints.crm.batch: \
                 must be between 1 and 10000"
            )
        );
    }

    #[test]
    fn a_syntax_error_is_one_error_with_its_line() {
        let errs = errors("[sites.LIVE]\nlog_level = = 4\n");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!((errs[0].line, errs[0].key.as_str()), (Some(2), ""));
        assert!(errs[0].message.starts_with("not valid TOML: "), "{errs:#?}");
        let errs = errors("[sites.LIVE]\nlog_level = 4\n\nlog_level = 5\n");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].line, Some(4));
        assert!(errs[0].message.contains("duplicate key"), "{errs:#?}");
    }

    #[test]
    fn errors_show_file_line_key_and_message() {
        let mut e = ConfigError {
            file: PathBuf::from("sluice.toml"),
            line: Some(12),
            key: "sites.LIVE.endpoints.crm.batch".into(),
            message: "must be between 1 and 10000".into(),
        };
        assert_eq!(
            e.to_string(),
            "sluice.toml:12: sites.LIVE.endpoints.crm.batch: must be between 1 and 10000"
        );
        let one = e.clone();
        e.line = None;
        assert_eq!(
            e.to_string(),
            "sluice.toml: sites.LIVE.endpoints.crm.batch: must be between 1 and 10000"
        );
        e.key.clear();
        assert_eq!(e.to_string(), "sluice.toml: must be between 1 and 10000");
        let all = ConfigErrors(vec![one, e]);
        assert_eq!(
            all.to_string(),
            "sluice.toml:12: sites.LIVE.endpoints.crm.batch: must be between 1 and 10000\n\
             sluice.toml: must be between 1 and 10000"
        );
        let _: &dyn std::error::Error = &all;
    }

    #[test]
    fn every_example_a_user_may_copy_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                // Certificates and keys are the user's own: an example names
                // placeholders, which may be missing here and nothing else.
                let placeholder = |e: &ConfigError| {
                    [
                        "tls_cert",
                        "tls_key",
                        "ca_file",
                        "client_cert",
                        "client_key",
                    ]
                    .iter()
                    .any(|k| e.key.ends_with(k))
                        && e.message.starts_with("cannot read")
                };
                if let Err(errors) = Config::load(&path, None) {
                    let real: Vec<_> = errors.0.iter().filter(|e| !placeholder(e)).collect();
                    assert!(real.is_empty(), "{}:\n{errors}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 2, "examples/*.toml");
    }

    #[test]
    fn a_webhook_may_not_take_more_than_the_body_memory() {
        let text = "max_body_memory = 2048\n[sites.A.endpoints.in]\nkind = \"webhook\"\n\
                    max_body = 4096\n";
        let errs = parse(text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].key, "sites.A.endpoints.in.max_body");
        assert_eq!(errs[0].line, Some(4));
        assert!(
            errs[0].message.contains("max_body_memory"),
            "{}",
            errs[0].message
        );
        assert_eq!(
            parse("[sites.A]\n").unwrap().max_body_memory,
            DEFAULT_BODY_MEMORY
        );
        let errs = parse("max_body_memory = 10\n[sites.A]\n").unwrap_err().0;
        assert_eq!(errs[0].key, "max_body_memory");
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let errs = Config::load(&path, None).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].line, errs[0].file.as_path()),
            (None, path.as_path())
        );
        assert!(
            errs[0].message.starts_with("cannot read the file"),
            "{errs:#?}"
        );

        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load(&path, None).unwrap();
        assert_eq!(
            (c.file.as_path(), c.base_dir.as_path()),
            (path.as_path(), dir.path())
        );
        assert_eq!(c.data_dir, dir.path().join("data"));
        let c = Config::load(&path, Some(Path::new("/srv/sluice"))).unwrap();
        assert_eq!(c.sites[0].data_file, Path::new("/srv/sluice/LIVE.db"));
    }

    #[test]
    fn schedules() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        let at = |h, m, s| chrono::Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap();

        let every = Schedule::parse("every 30s").unwrap();
        assert_eq!(every, Schedule::Every(Duration::from_secs(30)));
        assert_eq!(every.next_after(t), Some(at(0, 0, 40)));
        assert_eq!(
            Schedule::parse(" Every 1m30s ").unwrap(),
            Schedule::Every(Duration::from_secs(90))
        );

        let cron = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(cron.next_after(t), Some(at(0, 5, 0)));
        // Strictly after: a firing time itself is not the next one.
        assert_eq!(cron.next_after(at(0, 5, 0)), Some(at(0, 10, 0)));
        let seconds = Schedule::parse("*/20 * * * * *").unwrap();
        assert_eq!(seconds.next_after(t), Some(at(0, 0, 20)));
        assert!(matches!(&cron, Schedule::Cron { expr, .. } if expr == "*/5 * * * *"));

        for (bad, part) in [
            ("every 0s", "above zero"),
            ("every", "above zero"),
            ("every 5 minutes", "above zero"),
            ("", "empty: use 'every DURATION'"),
            ("whenever", "'whenever' is not a schedule"),
            ("* * *", "or 6 (seconds first)"),
            ("0 0 30 2 *", "'0 0 30 2 *' matches no date"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(part), "{bad}: {e}");
        }
    }
}
