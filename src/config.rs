//! `sluice.toml` → a typed, validated [`Config`].
//!
//! The file is read once into a syntax tree that keeps where each key
//! stands, then walked table by table: every value is checked, unknown keys
//! are reported (with the closest known key when one is close), and the
//! references between sites, endpoints and flows are validated. Every
//! problem becomes a [`ConfigError`] naming the file, the line and the key,
//! and all of them are reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike};

use crate::connectors::{parse_duration, EndpointKind};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// That file's folder: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// In file order.
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    pub name: String,
    /// Seed 000's verbosity: lines with a higher number are not kept.
    pub log_level: u8,
    pub data_file: PathBuf,
    pub log_file: PathBuf,
    /// How long sent and ignored transactions are kept (for listing and
    /// replay) before they are deleted.
    pub keep_sent: Duration,
    /// A run or a drain that makes no progress this long is flagged as
    /// stalled, with the reason, in its status.
    pub stall_after: Duration,
    pub endpoints: Vec<EndpointConfig>,
    pub integrations: Vec<IntegrationConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub kind: EndpointKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationConfig {
    pub name: String,
    pub on_error: OnError,
    pub flows: Vec<FlowConfig>,
}

/// What a record the target rejects does to the queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The queue waits behind it (strict order).
    Block,
    /// It is marked Error and the rest goes on.
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    pub name: String,
    pub source: String,
    pub target: String,
    pub schedule: Option<Schedule>,
    pub key: Option<String>,
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
    /// A cron expression, at its next match.
    Cron {
        expr: String,
        cron: Box<croner::Cron>,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { expr: a, .. }, Schedule::Cron { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Schedule {
    /// `every 30s` (ms, s, m, h) or a cron expression of 5 or 6 fields.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("every ") {
            return match parse_duration(rest) {
                Some(d) if !d.is_zero() => Ok(Schedule::Every(d)),
                _ => Err(format!(
                    "'{s}': the interval must be a duration above zero, e.g. 'every 30s', 'every 5m'"
                )),
            };
        }
        let cron = croner::Cron::new(s)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                format!("'{s}' is neither 'every DURATION' (e.g. 'every 30s') nor a cron expression (e.g. '*/5 * * * *'): {e}")
            })?;
        Ok(Schedule::Cron {
            expr: s.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The next firing strictly after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| after + d),
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(&after, false).ok(),
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The dotted key path, e.g. `sites.LIVE.integrations.orders.flows[1].source`.
    pub key: String,
    pub message: String,
}

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

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

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

    pub fn parse(
        text: &str,
        file: &Path,
        data_dir_override: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut ctx = Ctx::new(file, text);
        let doc = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = ctx.line(e.span());
                ctx.error(line, "", format!("not valid TOML: {}", e.message().trim()));
                return Err(ConfigErrors(ctx.errors));
            }
        };
        // The same text as plain values, for the endpoint kinds' settings.
        let values: toml::Table = toml::from_str(text).unwrap_or_default();
        let config = ctx.config(doc.as_table(), &values, data_dir_override);
        if ctx.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(ctx.errors))
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

const ROOT_KEYS: &[&str] = &["listen", "data_dir", "sites"];
const SITE_KEYS: &[&str] = &[
    "log_level",
    "data_file",
    "log_file",
    "keep_sent",
    "stall_after",
    "endpoints",
    "integrations",
];

/// Sent transactions are kept a week unless the site says otherwise.
pub const DEFAULT_KEEP_SENT: Duration = Duration::from_secs(7 * 86_400);

/// A run or a drain without progress this long is flagged as stalled.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(300);
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

/// Names appear in URLs: letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A known key close enough to `key` to be what was meant.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

struct Ctx<'a> {
    file: &'a Path,
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, text: &str) -> Ctx<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Ctx {
            file,
            line_starts,
            errors: Vec::new(),
        }
    }

    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start;
        Some(self.line_starts.partition_point(|&s| s <= start))
    }

    fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The line of `key` in `table`, else of the value, else `fallback`.
    fn key_line(&self, table: &dyn TableLike, key: &str, fallback: Option<usize>) -> Option<usize> {
        table
            .key(key)
            .and_then(|k| self.line(k.span()))
            .or_else(|| table.get(key).and_then(|i| self.line(i.span())))
            .or(fallback)
    }

    fn unknown_keys(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        known: &[&str],
        line: Option<usize>,
    ) {
        let unknown: Vec<String> = table
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        for key in unknown {
            let hint = match closest(&key, known) {
                Some(k) => format!("unknown key; did you mean '{k}'?"),
                None => format!("unknown key; known keys here: {}", known.join(", ")),
            };
            let l = self.key_line(table, &key, line);
            self.error(l, join(path, &key), hint);
        }
    }

    fn string(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        line: Option<usize>,
    ) -> Option<String> {
        let item = table.get(key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let l = self.key_line(table, key, line);
                self.error(
                    l,
                    join(path, key),
                    format!("must be a string, not {}", item.type_name()),
                );
                None
            }
        }
    }

    fn integer(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        line: Option<usize>,
    ) -> Option<i64> {
        let item = table.get(key)?;
        match item.as_integer() {
            Some(n) => Some(n),
            None => {
                let l = self.key_line(table, key, line);
                self.error(
                    l,
                    join(path, key),
                    format!("must be an integer, not {}", item.type_name()),
                );
                None
            }
        }
    }

    fn boolean(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        line: Option<usize>,
    ) -> Option<bool> {
        let item = table.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                let l = self.key_line(table, key, line);
                self.error(
                    l,
                    join(path, key),
                    format!("must be true or false, not {}", item.type_name()),
                );
                None
            }
        }
    }

    /// `table[key]` as a duration (`30s`, `5m`, `7d`), or `default`.
    fn duration(
        &mut self,
        table: &dyn TableLike,
        path: &str,
        key: &str,
        line: Option<usize>,
        default: Duration,
    ) -> Duration {
        let Some(text) = self.string(table, path, key, line) else {
            return default;
        };
        match parse_duration(&text) {
            Some(d) if !d.is_zero() => d,
            _ => {
                let l = self.key_line(table, key, line);
                self.error(
                    l,
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
        line: Option<usize>,
    ) -> Option<&'t dyn TableLike> {
        let item = parent.get(key)?;
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                let l = self.key_line(parent, key, line);
                self.error(
                    l,
                    join(path, key),
                    format!("must be a table, not {}", item.type_name()),
                );
                None
            }
        }
    }

    fn config(
        &mut self,
        root: &toml_edit::Table,
        values: &toml::Table,
        data_dir_override: Option<&Path>,
    ) -> Config {
        let root: &dyn TableLike = root;
        self.unknown_keys(root, "", ROOT_KEYS, Some(1));
        let base_dir = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        let listen = match self.string(root, "", "listen", None) {
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    let l = self.key_line(root, "listen", None);
                    self.error(
                        l,
                        "listen",
                        format!("'{s}' is not an address such as {DEFAULT_LISTEN}"),
                    );
                    DEFAULT_LISTEN.parse().expect("a valid default")
                }
            },
            None => DEFAULT_LISTEN.parse().expect("a valid default"),
        };
        let data_dir = match data_dir_override {
            Some(d) => d.to_path_buf(),
            None => base_dir.join(
                self.string(root, "", "data_dir", None)
                    .unwrap_or_else(|| "./data".into()),
            ),
        };
        let mut sites = Vec::new();
        match self.table(root, "", "sites", None) {
            Some(table) if !table.is_empty() => {
                for (name, item) in table.iter() {
                    let line = self.key_line(table, name, None);
                    let path = format!("sites.{name}");
                    let Some(site) = item.as_table_like() else {
                        self.error(line, path, "a site must be a table: [sites.NAME]");
                        continue;
                    };
                    if !valid_name(name) {
                        self.error(
                            line,
                            &path,
                            "a site name has 1 to 64 letters, digits, '-' or '_'",
                        );
                    }
                    let site_values = values
                        .get("sites")
                        .and_then(|s| s.get(name))
                        .and_then(|s| s.as_table());
                    sites.push(self.site(name, site, site_values, &path, line, &data_dir));
                }
            }
            _ => {
                let l = self.key_line(root, "sites", Some(1));
                self.error(l, "sites", "no site: add at least one [sites.NAME] table");
            }
        }
        Config {
            file: self.file.to_path_buf(),
            base_dir,
            listen,
            data_dir,
            sites,
        }
    }

    fn site(
        &mut self,
        name: &str,
        table: &dyn TableLike,
        values: Option<&toml::Table>,
        path: &str,
        line: Option<usize>,
        data_dir: &Path,
    ) -> SiteConfig {
        self.unknown_keys(table, path, SITE_KEYS, line);
        let log_level = match self.integer(table, path, "log_level", line) {
            Some(n @ 0..=9) => n as u8,
            Some(n) => {
                let l = self.key_line(table, "log_level", line);
                self.error(
                    l,
                    join(path, "log_level"),
                    format!("{n} is not a level: use 0 to 9"),
                );
                4
            }
            None => 4,
        };
        let data_file = self
            .string(table, path, "data_file", line)
            .map(|f| data_dir.join(f))
            .unwrap_or_else(|| data_dir.join(format!("{name}.db")));
        let log_file = self
            .string(table, path, "log_file", line)
            .map(|f| data_dir.join(f))
            .unwrap_or_else(|| data_dir.join(format!("{name}.log")));
        let keep_sent = self.duration(table, path, "keep_sent", line, DEFAULT_KEEP_SENT);
        let stall_after = self.duration(table, path, "stall_after", line, DEFAULT_STALL_AFTER);

        let mut endpoints = Vec::new();
        let ep_path = join(path, "endpoints");
        if let Some(eps) = self.table(table, path, "endpoints", line) {
            for (ename, item) in eps.iter() {
                let eline = self.key_line(eps, ename, line);
                let epath = join(&ep_path, ename);
                let Some(ep) = item.as_table_like() else {
                    self.error(eline, epath, "an endpoint must be a table");
                    continue;
                };
                if !valid_name(ename) {
                    self.error(
                        eline,
                        &epath,
                        "an endpoint name has 1 to 64 letters, digits, '-' or '_'",
                    );
                }
                let ep_values = values
                    .and_then(|v| v.get("endpoints"))
                    .and_then(|v| v.get(ename))
                    .and_then(|v| v.as_table());
                if let Some(kind) = self.endpoint_kind(ep, ep_values, &epath, eline) {
                    endpoints.push(EndpointConfig {
                        name: ename.to_string(),
                        kind,
                    });
                }
            }
        }

        let mut integrations = Vec::new();
        let int_path = join(path, "integrations");
        let mut flow_names: Vec<(String, String)> = Vec::new();
        if let Some(ints) = self.table(table, path, "integrations", line) {
            for (iname, item) in ints.iter() {
                let iline = self.key_line(ints, iname, line);
                let ipath = join(&int_path, iname);
                let Some(it) = item.as_table_like() else {
                    self.error(iline, ipath, "an integration must be a table");
                    continue;
                };
                if !valid_name(iname) {
                    self.error(
                        iline,
                        &ipath,
                        "an integration name has 1 to 64 letters, digits, '-' or '_'",
                    );
                }
                self.unknown_keys(it, &ipath, INTEGRATION_KEYS, iline);
                let on_error = match self.string(it, &ipath, "on_error", iline).as_deref() {
                    None | Some("block") => OnError::Block,
                    Some("skip") => OnError::Skip,
                    Some(other) => {
                        let l = self.key_line(it, "on_error", iline);
                        self.error(
                            l,
                            join(&ipath, "on_error"),
                            format!("'{other}' is neither \"block\" nor \"skip\""),
                        );
                        OnError::Block
                    }
                };
                let flows = self.flows(it, &ipath, iline, &endpoints, &mut flow_names);
                integrations.push(IntegrationConfig {
                    name: iname.to_string(),
                    on_error,
                    flows,
                });
            }
        }
        SiteConfig {
            name: name.to_string(),
            log_level,
            data_file,
            log_file,
            keep_sent,
            stall_after,
            endpoints,
            integrations,
        }
    }

    fn endpoint_kind(
        &mut self,
        ep: &dyn TableLike,
        values: Option<&toml::Table>,
        path: &str,
        line: Option<usize>,
    ) -> Option<EndpointKind> {
        let Some(kind) = self.string(ep, path, "kind", line) else {
            if !ep.contains_key("kind") {
                self.error(
                    line,
                    join(path, "kind"),
                    format!("missing: one of {}", EndpointKind::NAMES.join(", ")),
                );
            }
            return None;
        };
        let mut settings = values.cloned().unwrap_or_default();
        settings.remove("kind");
        let parsed = match EndpointKind::from_table(&kind, settings) {
            None => {
                let l = self.key_line(ep, "kind", line);
                self.error(
                    l,
                    join(path, "kind"),
                    format!(
                        "unknown kind '{kind}': one of {}",
                        EndpointKind::NAMES.join(", ")
                    ),
                );
                return None;
            }
            Some(Err(e)) => {
                let message = e.message().trim().to_string();
                // serde names the key in backticks: `bach`.
                let key = message
                    .split('`')
                    .nth(1)
                    .filter(|k| ep.contains_key(k))
                    .map(str::to_string);
                let l = key
                    .as_deref()
                    .and_then(|k| self.key_line(ep, k, None))
                    .or(line);
                let full = key
                    .map(|k| join(path, &k))
                    .unwrap_or_else(|| path.to_string());
                self.error(l, full, message);
                return None;
            }
            Some(Ok(kind)) => kind,
        };
        // Kept even when a value is wrong, so flows that use it are checked
        // against it (the error alone stops the daemon).
        for (key, problem) in parsed.validate() {
            let top = key.split('.').next().unwrap_or(&key).to_string();
            let l = self.key_line(ep, &top, line);
            self.error(l, join(path, &key), problem);
        }
        Some(parsed)
    }

    fn flows(
        &mut self,
        it: &dyn TableLike,
        ipath: &str,
        iline: Option<usize>,
        endpoints: &[EndpointConfig],
        flow_names: &mut Vec<(String, String)>,
    ) -> Vec<FlowConfig> {
        let mut flows = Vec::new();
        let Some(item) = it.get("flows") else {
            return flows;
        };
        let tables: Vec<&dyn TableLike> = match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| t as &dyn TableLike).collect(),
            Item::Value(toml_edit::Value::Array(a))
                if a.iter().all(|v| v.as_inline_table().is_some()) =>
            {
                a.iter()
                    .filter_map(|v| v.as_inline_table())
                    .map(|t| t as &dyn TableLike)
                    .collect()
            }
            other => {
                let l = self.key_line(it, "flows", iline);
                self.error(
                    l,
                    join(ipath, "flows"),
                    format!(
                        "must be an array of tables ([[…flows]]), not {}",
                        other.type_name()
                    ),
                );
                return flows;
            }
        };
        for (i, flow) in tables.into_iter().enumerate() {
            let fpath = format!("{ipath}.flows[{i}]");
            let fline = flow
                .iter()
                .filter_map(|(k, _)| self.key_line(flow, k, None))
                .min()
                .map(|l| l.saturating_sub(1).max(1))
                .or(iline);
            self.unknown_keys(flow, &fpath, FLOW_KEYS, fline);
            let required = |ctx: &mut Ctx<'_>, key: &str| {
                let v = ctx.string(flow, &fpath, key, fline);
                if v.is_none() && !flow.contains_key(key) {
                    ctx.error(fline, join(&fpath, key), "missing");
                }
                v
            };
            let name = required(self, "name");
            let source = required(self, "source");
            let target = required(self, "target");
            let key = self.string(flow, &fpath, "key", fline);
            let cursor = self.string(flow, &fpath, "cursor", fline);
            let enabled = self.boolean(flow, &fpath, "enabled", fline).unwrap_or(true);
            let auto_resolve = self
                .boolean(flow, &fpath, "auto_resolve", fline)
                .unwrap_or(true);
            let retry_limit = match self.integer(flow, &fpath, "retry_limit", fline) {
                None => 0,
                Some(n) if (0..=1_000_000).contains(&n) => n as u32,
                Some(n) => {
                    let l = self.key_line(flow, "retry_limit", fline);
                    self.error(
                        l,
                        join(&fpath, "retry_limit"),
                        format!("{n}: use 0 (no limit) to 1000000"),
                    );
                    0
                }
            };
            let schedule = self.string(flow, &fpath, "schedule", fline).and_then(|s| {
                match Schedule::parse(&s) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        let l = self.key_line(flow, "schedule", fline);
                        self.error(l, join(&fpath, "schedule"), e);
                        None
                    }
                }
            });
            let (Some(name), Some(source), Some(target)) = (name, source, target) else {
                continue;
            };
            let nline = self.key_line(flow, "name", fline);
            if !valid_name(&name) {
                self.error(
                    nline,
                    join(&fpath, "name"),
                    "a flow name has 1 to 64 letters, digits, '-' or '_'",
                );
            }
            if let Some((_, other)) = flow_names.iter().find(|(n, _)| *n == name) {
                self.error(nline, join(&fpath, "name"), format!("flow '{name}' is already defined at {other}: flow names are unique within a site"));
            }
            flow_names.push((name.clone(), fpath.clone()));
            let fits = |want: fn(&EndpointKind) -> bool| -> String {
                let names: Vec<&str> = endpoints
                    .iter()
                    .filter(|e| want(&e.kind))
                    .map(|e| e.name.as_str())
                    .collect();
                if names.is_empty() {
                    "none is defined".to_string()
                } else {
                    format!("would fit: {}", names.join(", "))
                }
            };
            let sline = self.key_line(flow, "source", fline);
            match endpoints.iter().find(|e| e.name == source) {
                None => self.error(
                    sline,
                    join(&fpath, "source"),
                    format!(
                        "no endpoint '{source}' in this site ({})",
                        fits(|k| k.is_pull_source() || k.is_push_source())
                    ),
                ),
                Some(e) if !(e.kind.is_pull_source() || e.kind.is_push_source()) => self.error(
                    sline,
                    join(&fpath, "source"),
                    format!(
                        "endpoint '{source}' ({}) cannot be a source ({})",
                        e.kind.name(),
                        fits(|k| k.is_pull_source() || k.is_push_source())
                    ),
                ),
                Some(e) => {
                    if e.kind.is_push_source() && schedule.is_some() {
                        let l = self.key_line(flow, "schedule", fline);
                        self.error(l, join(&fpath, "schedule"), format!("flow '{name}' takes records from webhook '{source}'; they arrive by POST and there is nothing to schedule"));
                    }
                    if matches!(e.kind, EndpointKind::File(_)) && cursor.is_none() {
                        self.error(fline, join(&fpath, "cursor"), format!("missing: a flow from file endpoint '{source}' needs the field 'Send Changed' compares with its checkpoint"));
                    }
                }
            }
            let tline = self.key_line(flow, "target", fline);
            match endpoints.iter().find(|e| e.name == target) {
                None => self.error(
                    tline,
                    join(&fpath, "target"),
                    format!(
                        "no endpoint '{target}' in this site ({})",
                        fits(EndpointKind::is_target)
                    ),
                ),
                Some(e) if !e.kind.is_target() => self.error(
                    tline,
                    join(&fpath, "target"),
                    format!(
                        "endpoint '{target}' ({}) cannot be a target ({})",
                        e.kind.name(),
                        fits(EndpointKind::is_target)
                    ),
                ),
                Some(_) => {}
            }
            flows.push(FlowConfig {
                name,
                source,
                target,
                schedule,
                key,
                cursor,
                enabled,
                auto_resolve,
                retry_limit,
            });
        }
        flows
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("/etc/sluice/sluice.toml"), None)
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        parse(text).unwrap_err().0
    }

    fn find<'a>(errors: &'a [ConfigError], key: &str) -> &'a ConfigError {
        errors
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key} in {errors:#?}"))
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/etc/sluice/./data"));
        let live = c.site("LIVE").unwrap();
        assert_eq!(live.log_level, 4);
        assert_eq!(live.data_file, Path::new("/etc/sluice/./data/LIVE.db"));
        assert_eq!(live.endpoints.len(), 3);
        assert_eq!(live.endpoint("crm").unwrap().kind.name(), "http");
        let (integration, flow) = live.flow("customers").unwrap();
        assert_eq!(integration.name, "orders");
        assert_eq!(integration.on_error, OnError::Block);
        assert_eq!(flow.cursor.as_deref(), Some("updated_at"));
        assert!(matches!(flow.schedule, Some(Schedule::Cron { .. })));
        assert!(flow.enabled);
        assert!(live.flow("web-orders").unwrap().1.schedule.is_none());
    }

    #[test]
    fn defaults() {
        let c = parse("[sites.DEV]\n").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        let dev = c.site("DEV").unwrap();
        assert_eq!(dev.log_level, 4);
        assert_eq!(dev.keep_sent, DEFAULT_KEEP_SENT);
        assert_eq!(dev.stall_after, DEFAULT_STALL_AFTER);
        let c = parse("[sites.DEV]\nkeep_sent = \"36h\"\n").unwrap();
        assert_eq!(c.sites[0].keep_sent, Duration::from_secs(36 * 3600));
        let errs = errors("[sites.DEV]\nkeep_sent = \"forever\"\n");
        assert_eq!(find(&errs, "sites.DEV.keep_sent").line, Some(2));
        assert!(dev.integrations.is_empty());
        let c = Config::parse(
            "[sites.DEV]\n",
            Path::new("x.toml"),
            Some(Path::new("/tmp/d")),
        )
        .unwrap();
        assert_eq!(c.site("DEV").unwrap().log_file, Path::new("/tmp/d/DEV.log"));
    }

    #[test]
    fn every_error_at_once_with_line_and_key() {
        let text = EXAMPLE
            .replace("batch = 1", "batch = 0")
            .replace("source = \"shop\"", "source = \"nowhere\"")
            .replace("on_error = \"block\"", "on_error = \"halt\"")
            .replace("key = \"id\"", "kee = \"id\"")
            .replace("log_level = 4", "log_level = 12");
        let errs = errors(&text);
        assert_eq!(find(&errs, "sites.LIVE.endpoints.crm.batch").line, Some(17));
        let source = find(&errs, "sites.LIVE.integrations.orders.flows[0].source");
        assert_eq!(source.line, Some(24));
        assert!(
            source.message.contains("would fit: shop, erp"),
            "{}",
            source.message
        );
        assert_eq!(
            find(&errs, "sites.LIVE.integrations.orders.on_error").line,
            Some(20)
        );
        let kee = find(&errs, "sites.LIVE.integrations.orders.flows[1].kee");
        assert_eq!(kee.line, Some(32));
        assert!(
            kee.message.contains("did you mean 'key'"),
            "{}",
            kee.message
        );
        assert_eq!(find(&errs, "sites.LIVE.log_level").line, Some(5));
        assert_eq!(errs.len(), 5, "{errs:#?}");
        let shown = ConfigErrors(errs).to_string();
        assert!(
            shown.contains("/etc/sluice/sluice.toml:17: sites.LIVE.endpoints.crm.batch: "),
            "{shown}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = errors("[sites.LIVE]\nlog_level = = 4\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("not valid TOML"));
    }

    #[test]
    fn references_and_rules() {
        let errs = errors(
            r#"[sites.LIVE.endpoints.shop]
kind = "webhook"
[sites.LIVE.endpoints.erp]
kind = "file"
path = "x.jsonl"
[sites.LIVE.endpoints.gen]
kind = "teleport"
[sites.LIVE.integrations.a]
[[sites.LIVE.integrations.a.flows]]
name = "f"
source = "shop"
target = "shop"
schedule = "every 5s"
[[sites.LIVE.integrations.a.flows]]
name = "f"
source = "erp"
target = "erp"
schedule = "sometimes"
"#,
        );
        assert!(find(&errs, "sites.LIVE.endpoints.gen.kind")
            .message
            .contains("unknown kind 'teleport'"));
        assert!(find(&errs, "sites.LIVE.integrations.a.flows[0].target")
            .message
            .contains("cannot be a target"));
        assert!(find(&errs, "sites.LIVE.integrations.a.flows[0].schedule")
            .message
            .contains("webhook"));
        assert!(find(&errs, "sites.LIVE.integrations.a.flows[1].name")
            .message
            .contains("unique"));
        assert!(find(&errs, "sites.LIVE.integrations.a.flows[1].cursor")
            .message
            .contains("missing"));
        assert_eq!(
            find(&errs, "sites.LIVE.integrations.a.flows[1].schedule").line,
            Some(18)
        );
        assert!(errors("listen = \"here\"\n[sites.X]\n")[0]
            .message
            .contains("not an address"));
        assert!(errors("data_dir = \"d\"\n")[0].message.contains("no site"));
        assert!(errors("[sites.\"LI VE\"]\n")[0]
            .message
            .contains("site name"));
    }

    #[test]
    fn endpoint_settings_are_checked_by_their_kind() {
        let errs =
            errors("[sites.L.endpoints.crm]\nkind = \"http\"\nurl = \"http://x\"\nbach = 3\n");
        let e = find(&errs, "sites.L.endpoints.crm.bach");
        assert_eq!(e.line, Some(4));
        let errs = errors("[sites.L.endpoints.crm]\nkind = \"http\"\n");
        assert!(errs[0].message.contains("url"), "{errs:#?}");
        let errs =
            errors("[sites.L.endpoints.e]\nkind = \"file\"\npath = \"p\"\npace = \"soon\"\n");
        assert!(errs[0].message.contains("not a duration"), "{errs:#?}");
    }

    #[test]
    fn schedules() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        let every = Schedule::parse("every 30s").unwrap();
        assert_eq!(every.next_after(t), Some(t + chrono::Duration::seconds(30)));
        let cron = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            cron.next_after(t),
            Some(chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap())
        );
        assert!(Schedule::parse("every 0s").is_err());
        assert!(Schedule::parse("whenever").is_err());
    }
}
