//! The walk of a configuration file's syntax tree: each table's keys checked
//! where they stand, every problem collected with its line and key path.
//!
//! # Invariants
//! - The walk never stops at a problem: a wrong value is reported and a
//!   default stands in for it, so every other problem of the file is found
//!   in the same pass.
//! - An unknown key or kind is named with the closest known one when one is
//!   close (Levenshtein distance through `strsim`); else the known ones are
//!   listed.
//! - An endpoint's settings are its kind's to read and validate; a setting
//!   its kind refuses is left out and the rest read again, so each problem
//!   of an endpoint is reported once.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::{
    AlertChannel, AlertConfig, AlertFormat, Config, ConfigError, EndpointConfig, FlowConfig,
    IntegrationConfig, OnError, Schedule, ServerTls, SiteConfig, StoreConfig, DEFAULT_BODY_MEMORY,
    DEFAULT_DATA_DIR, DEFAULT_FAILING_THRESHOLD, DEFAULT_FAILING_WINDOW, DEFAULT_KEEP_HISTORY,
    DEFAULT_KEEP_SENT, DEFAULT_LISTEN, DEFAULT_LOG_LEVEL, DEFAULT_STALL_AFTER,
    DEFAULT_STORE_URL_ENV,
};
use crate::connectors::EndpointKind;
use crate::duration::parse_duration;
use crate::mapping::{Field, MapTable, Mapping, Path as FieldPath, Rule, Transform};

// ------------------------------------------------------------------ reading

const NO_SITE: &str = "no site: add at least one [sites.NAME] table";

const ROOT_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "max_body_memory",
    "tls_cert",
    "tls_key",
    "behind_proxy",
    "store",
    "store_url_env",
    "lease",
    "sites",
    "alerts",
];
const SITE_KEYS: &[&str] = &[
    "log_level",
    "data_file",
    "log_file",
    "keep_sent",
    "keep_history",
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
    "map",
    "transform",
];
/// The keys of a `map` entry written as a table.
const MAP_ENTRY_KEYS: &[&str] = &["from", "default", "value"];

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

/// A known word close enough to `word` to be what was meant: the nearest
/// by edit distance (Levenshtein, in characters), at most 2 edits away or a
/// quarter of the known word's length, whichever allows more; the first of
/// equally near ones.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
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
/// `what`: the table in a person's words, "an endpoint of kind http".
fn setting_problem(e: &toml::de::Error, what: &str) -> SettingProblem {
    let message = e.message().trim();
    // serde quotes keys in backticks: "unknown field `bach`, expected one
    // of `url`, `batch`, …"; "missing field `url`".
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if message.starts_with("unknown field `") && !quoted.is_empty() {
        let key = quoted[0].to_string();
        let mut known: Vec<&str> = vec!["kind"];
        known.extend(&quoted[1..]);
        return SettingProblem {
            message: unknown_key_message(&key, &known, what),
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
            message: format!("missing: {what} needs it"),
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
    kind.is_pull_source() || kind.is_push_source() || kind.is_stream_source()
}

/// Walks the syntax tree and collects every problem on the way.
pub(super) struct Reader<'a> {
    file: &'a Path,
    /// The byte offset where each line starts.
    line_starts: Vec<usize>,
    pub(super) errors: Vec<ConfigError>,
    /// The top level's `max_body_memory`, which bounds every webhook's
    /// `max_body`.
    max_body_memory: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(file: &'a Path, text: &str) -> Reader<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Reader {
            file,
            line_starts,
            errors: Vec::new(),
            max_body_memory: DEFAULT_BODY_MEMORY,
        }
    }

    pub(super) fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start;
        Some(self.line_starts.partition_point(|&s| s <= start))
    }

    /// Records a problem. A URL the message quotes from the file is shown
    /// without its user-info.
    pub(super) fn error(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
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

    pub(super) fn config(
        &mut self,
        root: &toml_edit::Table,
        data_dir_override: Option<&Path>,
    ) -> Config {
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
        let store = self.store(root);
        let lease = self.duration(root, "", "lease", super::DEFAULT_LEASE);
        if root.contains_key("lease") && store == StoreConfig::Sqlite {
            let line = self.key_line(root, "lease");
            self.error(
                line,
                "lease",
                "only with store = \"postgres\": a single node holds no lease",
            );
        }
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
        let alerts = self.alerts(root, &base_dir, &sites);
        Config {
            file: self.file.to_path_buf(),
            base_dir,
            listen,
            tls,
            behind_proxy,
            data_dir,
            sites,
            max_body_memory: self.max_body_memory,
            store,
            lease,
            node: super::host_name(),
            alerts,
        }
    }

    /// `[alerts.NAME]`, each an alert channel.
    fn alerts(
        &mut self,
        root: &dyn TableLike,
        base_dir: &Path,
        sites: &[SiteConfig],
    ) -> Vec<AlertConfig> {
        use crate::model::alert::AlertKind;
        const ALERT_KEYS: [&str; 7] = [
            "kind",
            "format",
            "on",
            "sites",
            "remind_every",
            "failing_threshold",
            "failing_window",
        ];
        let mut out = Vec::new();
        for (name, t, path, line) in self.entries(root, "", "alerts", "an alert channel") {
            self.check_name("alert channel", name, &path, line);
            let Some(kind) = self.required(t, &path, "kind", line, "\"webhook\" or \"email\"")
            else {
                continue;
            };
            let mut settings = plain_table(t);
            for key in ALERT_KEYS {
                settings.remove(key);
            }
            let channel = match kind.as_str() {
                "webhook" => {
                    let format = match self.string(t, &path, "format").as_deref() {
                        None | Some("json") => AlertFormat::Json,
                        Some("slack") => AlertFormat::Slack,
                        Some(other) => {
                            let at = self.key_line(t, "format");
                            let message = format!("'{other}' is neither \"json\" nor \"slack\"");
                            self.error(at, join(&path, "format"), message);
                            AlertFormat::Json
                        }
                    };
                    let what = "an alert channel of kind webhook";
                    match self.endpoint_settings("http", what, settings, t, &path, line, base_dir) {
                        Some(EndpointKind::Http(http)) => AlertChannel::Webhook { http, format },
                        _ => continue,
                    }
                }
                "email" => match self.email_channel(t, &path, line, base_dir, &ALERT_KEYS) {
                    Some(email) => AlertChannel::Email(email),
                    None => continue,
                },
                other => {
                    let at = self.key_line(t, "kind");
                    let hint = closest(other, &["webhook", "email"])
                        .map(|k| format!("did you mean '{k}'? "))
                        .unwrap_or_default();
                    let message = format!(
                        "unknown kind '{other}': {hint}an alert channel is a \"webhook\" or an \
                         \"email\""
                    );
                    self.error(at, join(&path, "kind"), message);
                    continue;
                }
            };
            let on = match self.strings(t, &path, "on") {
                None => AlertKind::DEFAULT_ON.to_vec(),
                Some(names) => {
                    let known: Vec<&str> = AlertKind::ON.iter().map(|k| k.as_str()).collect();
                    let mut on = Vec::new();
                    for n in names {
                        match AlertKind::parse(&n).filter(|k| AlertKind::ON.contains(k)) {
                            Some(k) => on.push(k),
                            None => {
                                let at = self.key_line(t, "on");
                                let hint = closest(&n, &known)
                                    .map(|k| format!("did you mean '{k}'? "))
                                    .unwrap_or_default();
                                let message = format!(
                                    "'{n}' is not an alert: {hint}one of {}",
                                    known.join(", ")
                                );
                                self.error(at, join(&path, "on"), message);
                            }
                        }
                    }
                    on
                }
            };
            let only = self.strings(t, &path, "sites");
            for s in only.iter().flatten() {
                if !sites.iter().any(|site| &site.name == s) {
                    let at = self.key_line(t, "sites");
                    let message = format!("no site '{s}' in this file");
                    self.error(at, join(&path, "sites"), message);
                }
            }
            let remind_every = t
                .contains_key("remind_every")
                .then(|| self.duration(t, &path, "remind_every", Duration::from_secs(3600)));
            let failing_threshold = match self.integer(t, &path, "failing_threshold") {
                None => DEFAULT_FAILING_THRESHOLD,
                Some(n) if n >= 0 => n as u64,
                Some(n) => {
                    let at = self.key_line(t, "failing_threshold");
                    let message = format!("{n}: give a count of failures, 0 or more");
                    self.error(at, join(&path, "failing_threshold"), message);
                    DEFAULT_FAILING_THRESHOLD
                }
            };
            let failing_window = self.duration(t, &path, "failing_window", DEFAULT_FAILING_WINDOW);
            out.push(AlertConfig {
                name: name.to_string(),
                channel,
                on,
                sites: only,
                remind_every,
                failing_threshold,
                failing_window,
            });
        }
        out
    }

    /// The keys of an alert channel of kind email (`common`: those of
    /// every alert channel), each problem named by its line and key.
    fn email_channel(
        &mut self,
        t: &dyn TableLike,
        path: &str,
        header: Option<usize>,
        base_dir: &Path,
        common: &[&str],
    ) -> Option<crate::connectors::email::EmailConfig> {
        use crate::connectors::email::{self, EmailConfig};
        let what = "an alert channel of kind email";
        if t.contains_key("format") {
            let at = self.key_line(t, "format");
            let message = "only a webhook channel takes it: an email is plain text, the JSON \
                           document at its end";
            self.error(at, join(path, "format"), message);
        }
        // `format` is one of `common`: said above, not again as unknown.
        let known: Vec<&str> = common.iter().chain(&email::KEYS).copied().collect();
        self.unknown_keys(t, path, &known, what);
        let smtp_url = self.required(
            t,
            path,
            "smtp_url",
            header,
            &format!("{what} needs it (smtp://host:port, or smtps://host:port)"),
        );
        let from = self.required(
            t,
            path,
            "from",
            header,
            &format!("{what} needs it (the sender's address)"),
        );
        // A list of addresses, or one.
        let to = match t.get("to") {
            None => {
                let why = format!("{what} needs it (the recipients' addresses)");
                self.error(header, join(path, "to"), format!("missing: {why}"));
                None
            }
            Some(item) => match item.as_str() {
                Some(one) => Some(vec![one.to_string()]),
                None => self.strings(t, path, "to"),
            },
        };
        let username = self.text(t, path, "username");
        let password_env = self.text(t, path, "password_env");
        let mut file = |key: &str| self.text(t, path, key).map(PathBuf::from);
        let (ca_file, client_cert, client_key) =
            (file("ca_file"), file("client_cert"), file("client_key"));
        let timeout = self.duration(t, path, "timeout", email::DEFAULT_TIMEOUT);
        let config = EmailConfig {
            smtp_url: smtp_url?,
            username,
            password_env,
            from: from?,
            to: to?,
            ca_file,
            client_cert,
            client_key,
            timeout,
        };
        for (key, problem) in config.validate(base_dir) {
            let at = self.nested_line(t, &key, header);
            self.error(at, join(path, &key), problem);
        }
        Some(config)
    }

    /// An array of strings.
    fn strings(&mut self, table: &dyn TableLike, path: &str, key: &str) -> Option<Vec<String>> {
        let item = table.get(key)?;
        let strings = item.as_array().and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        if strings.is_none() {
            self.wrong_type(table, path, key, "an array of strings");
        }
        strings
    }

    /// `store` and `store_url_env`.
    fn store(&mut self, root: &dyn TableLike) -> StoreConfig {
        let url_env = self.text(root, "", "store_url_env");
        if let Some(name) = &url_env {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let line = self.key_line(root, "store_url_env");
                let message = format!(
                    "'{name}' is not the name of an environment variable: letters, digits and _"
                );
                self.error(line, "store_url_env", message);
            }
        }
        match self.string(root, "", "store").as_deref() {
            None | Some("sqlite") => {
                if url_env.is_some() {
                    let line = self.key_line(root, "store_url_env");
                    self.error(
                        line,
                        "store_url_env",
                        "only with store = \"postgres\": an SQLite store is a file per site",
                    );
                }
                StoreConfig::Sqlite
            }
            Some("postgres") => StoreConfig::Postgres {
                url_env: url_env.unwrap_or_else(|| DEFAULT_STORE_URL_ENV.into()),
            },
            Some(other) => {
                let line = self.key_line(root, "store");
                let message =
                    format!("'{other}' is not a store: \"sqlite\" (the default) or \"postgres\"");
                self.error(line, "store", message);
                StoreConfig::Sqlite
            }
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
        let keep_history = match self.string(table, path, "keep_history").as_deref() {
            Some("off") => Duration::ZERO,
            _ => self.duration(table, path, "keep_history", DEFAULT_KEEP_HISTORY),
        };

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
            keep_history,
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
        let what = format!("an endpoint of kind {kind}");
        self.endpoint_settings(&kind, &what, settings, ep, path, header, base_dir)
    }

    /// An endpoint of `kind` read from `settings` (the keys of `ep` that
    /// are the endpoint's), its problems reported at `ep`'s lines as those
    /// of `what`.
    #[allow(clippy::too_many_arguments)]
    fn endpoint_settings(
        &mut self,
        kind: &str,
        what: &str,
        mut settings: toml::Table,
        ep: &dyn TableLike,
        path: &str,
        header: Option<usize>,
        base_dir: &Path,
    ) -> Option<EndpointKind> {
        let kinds = EndpointKind::NAMES.join(", ");
        // Keys left out after a problem, each reported once.
        let mut left_out: Vec<String> = Vec::new();
        let parsed = loop {
            let Some(result) = EndpointKind::from_table(kind, settings.clone()) else {
                let at = self.key_line(ep, "kind");
                let hint = closest(kind, &EndpointKind::NAMES)
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
            let problem = setting_problem(&e, what);
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
                pushed = kind.is_push_source() || kind.is_stream_source();
                if kind.is_push_source() && flow.contains_key("schedule") {
                    let flow_name = name.as_deref().unwrap_or("{flow}");
                    let message = format!(
                        "a flow from webhook '{source}' has no schedule: its records arrive \
                         by POST to /hooks/{}/{integration}/{flow_name}",
                        site.name
                    );
                    self.error(schedule_line, join(path, "schedule"), message);
                }
                if kind.is_stream_source() && flow.contains_key("schedule") {
                    let message = format!(
                        "a flow from {} endpoint '{source}' has no schedule: its records are \
                         consumed while the site runs and the integration is not stopped",
                        kind.name()
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
        let mapping = self.mapping(flow, path);

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
            mapping,
        })
    }

    /// A flow's `map` and `transform`. A problem is reported at its key
    /// and that step left out (the flow is not used: the file is refused).
    fn mapping(&mut self, flow: &dyn TableLike, path: &str) -> Mapping {
        let mut mapping = Mapping::default();
        if let Some(map) = self.table(flow, path, "map") {
            let at = join(path, "map");
            let mut fields = Vec::new();
            self.map_entries(map, &at, "", &mut fields);
            if map.is_empty() {
                let line = self.key_line(flow, "map");
                self.error(
                    line,
                    at.clone(),
                    "an empty map would send empty records: list the target fields, or leave \
                     `map` out to send records as they come",
                );
            }
            let lines: Vec<(String, Option<usize>, String)> = fields
                .iter()
                .map(|(f, line, key): &(Field, Option<usize>, String)| {
                    (f.target.to_string(), *line, key.clone())
                })
                .collect();
            match MapTable::new(fields.into_iter().map(|(f, ..)| f).collect()) {
                Ok(table) => mapping.map = Some(table),
                Err((target, message)) => {
                    let (line, key) = lines
                        .iter()
                        .rev()
                        .find(|(t, ..)| *t == target)
                        .map_or((None, at.clone()), |(_, l, k)| (*l, k.clone()));
                    self.error(line, key, message);
                }
            }
        }
        if let Some(code) = self.text(flow, path, "transform") {
            match Transform::compile(&code) {
                Ok(transform) => mapping.transform = Some(transform),
                Err(e) => {
                    let line = self.key_line(flow, "transform");
                    self.error(
                        line,
                        join(path, "transform"),
                        format!("the jq program does not compile: {e}"),
                    );
                }
            }
        }
        mapping
    }

    /// The entries of a `map` (or of a dotted part of one, `a.b = "x"`
    /// read as the target field `a.b`) with each one's line and key path.
    fn map_entries(
        &mut self,
        map: &dyn TableLike,
        path: &str,
        prefix: &str,
        out: &mut Vec<(Field, Option<usize>, String)>,
    ) {
        for (name, item) in map.iter() {
            let line = self.key_line(map, name);
            let key = join(path, &segment(name));
            let target_text = format!("{prefix}{name}");
            let target = match FieldPath::parse(&target_text) {
                Ok(t) => t,
                Err(e) => {
                    self.error(line, key, format!("target field: {e}"));
                    continue;
                }
            };
            let dotted = match item {
                Item::Table(t) => t.is_dotted(),
                Item::Value(Value::InlineTable(t)) => t.is_dotted(),
                _ => false,
            };
            if dotted {
                if let Some(inner) = item.as_table_like() {
                    self.map_entries(inner, &key, &format!("{target_text}."), out);
                }
                continue;
            }
            let rule = if let Some(source) = item.as_str() {
                match FieldPath::parse(source) {
                    Ok(p) => Rule::From {
                        path: p,
                        default: None,
                    },
                    Err(e) => {
                        self.error(line, key, format!("source path: {e}"));
                        continue;
                    }
                }
            } else if let Some(entry) = item.as_table_like() {
                match self.map_rule(entry, &key, line, &target_text) {
                    Some(rule) => rule,
                    None => continue,
                }
            } else {
                self.error(
                    line,
                    key,
                    format!(
                        "must be a source path (\"address.city\") or a table ({{ from = \"…\", \
                         default = … }} or {{ value = … }}), not {}; a constant is written \
                         {{ value = … }}",
                        item.type_name()
                    ),
                );
                continue;
            };
            out.push((Field { target, rule }, line, key));
        }
    }

    /// `{ from = "path", default = … }`, `{ default = … }` (from the field
    /// of the same name) or `{ value = … }`.
    fn map_rule(
        &mut self,
        entry: &dyn TableLike,
        key: &str,
        line: Option<usize>,
        target: &str,
    ) -> Option<Rule> {
        let misspelt = entry
            .iter()
            .any(|(k, _)| closest(k, MAP_ENTRY_KEYS).is_some());
        if !MAP_ENTRY_KEYS.iter().any(|k| entry.contains_key(k)) && !misspelt {
            self.error(
                line,
                key.to_string(),
                format!(
                    "a map entry table takes `from` (with an optional `default`) or `value`; a \
                     nested target field is written \"{target}.FIELD\" = …"
                ),
            );
            return None;
        }
        let before = self.errors.len();
        self.unknown_keys(entry, key, MAP_ENTRY_KEYS, "a map entry");
        let json = |reader: &mut Self, name: &str| -> Option<serde_json::Value> {
            let item = entry.get(name)?;
            let value = plain_item(item).and_then(|v| json_of(&v));
            if value.is_none() {
                let at = reader.key_line(entry, name).or(line);
                reader.error(
                    at,
                    join(key, name),
                    "must be a value JSON can hold (not NaN or infinity)",
                );
            }
            value
        };
        let rule = if entry.contains_key("value") {
            if entry.contains_key("from") || entry.contains_key("default") {
                self.error(
                    line,
                    key.to_string(),
                    "`value` is a constant: it takes neither `from` nor `default`",
                );
                return None;
            }
            Rule::Value(json(self, "value")?)
        } else if entry.contains_key("from") || entry.contains_key("default") {
            let source = match entry.get("from") {
                None => target.to_string(),
                Some(_) => self.text(entry, key, "from")?,
            };
            let path = match FieldPath::parse(&source) {
                Ok(p) => p,
                Err(e) => {
                    let at = self.key_line(entry, "from").or(line);
                    self.error(at, join(key, "from"), format!("source path: {e}"));
                    return None;
                }
            };
            let default = match entry.get("default") {
                None => None,
                Some(_) => Some(json(self, "default")?),
            };
            Rule::From { path, default }
        } else {
            // Only unknown keys: reported above.
            return None;
        };
        (self.errors.len() == before).then_some(rule)
    }
}

/// A TOML value as JSON: tables are objects, a date or time is its TOML
/// text (RFC 3339); None for a float JSON cannot hold (NaN, infinity).
fn json_of(value: &toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(n) => Json::from(*n),
        toml::Value::Float(x) => Json::Number(serde_json::Number::from_f64(*x)?),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(json_of).collect::<Option<_>>()?),
        toml::Value::Table(t) => Json::Object(
            t.iter()
                .map(|(k, v)| Some((k.clone(), json_of(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}
