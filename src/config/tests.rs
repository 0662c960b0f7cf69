//! Configuration files as an operator writes them, and the values or the
//! errors (file, line, key, message) they come back as.

use super::*;

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
        mapping: Default::default(),
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
fn the_store_is_sqlite_unless_postgres_is_named_with_the_variable_of_its_url() {
    assert_eq!(parse("[sites.DEV]\n").unwrap().store, StoreConfig::Sqlite);
    assert_eq!(
        parse("store = \"postgres\"\n[sites.DEV]\n").unwrap().store,
        StoreConfig::Postgres {
            url_env: DEFAULT_STORE_URL_ENV.into()
        }
    );
    assert_eq!(
        parse("store = \"postgres\"\nstore_url_env = \"PG_URL\"\n[sites.DEV]\n")
            .unwrap()
            .store,
        StoreConfig::Postgres {
            url_env: "PG_URL".into()
        }
    );
    assert_only(
        "store = \"mongo\"\n[sites.DEV]\n",
        "store",
        Some(1),
        "'mongo' is not a store",
    );
    assert_only(
        "store_url_env = \"PG_URL\"\n[sites.DEV]\n",
        "store_url_env",
        Some(1),
        "only with store = \"postgres\"",
    );
    assert_only(
        "store = \"postgres\"\nstore_url_env = \"postgres://x\"\n[sites.DEV]\n",
        "store_url_env",
        Some(2),
        "not the name of an environment variable",
    );
}

#[test]
fn a_cluster_takes_a_lease_and_a_single_node_none() {
    let default = parse("store = \"postgres\"\n[sites.DEV]\n").unwrap();
    assert_eq!(default.lease, crate::config::DEFAULT_LEASE);
    assert!(!default.node.is_empty(), "the host's name by default");
    let set = parse("store = \"postgres\"\nlease = \"2s\"\n[sites.DEV]\n").unwrap();
    assert_eq!(set.lease, std::time::Duration::from_secs(2));
    assert_only(
        "lease = \"2s\"\n[sites.DEV]\n",
        "lease",
        Some(1),
        "only with store = \"postgres\"",
    );
    assert_only(
        "store = \"postgres\"\nlease = \"soon\"\n[sites.DEV]\n",
        "lease",
        Some(2),
        "not a duration",
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
    let text = flow("name = \"f\"\nsource = \"shop\"\ntarget = \"crm\"\nschedule = \"every 5s\"\n");
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
fn a_broker_flow_has_no_schedule_and_each_broker_takes_its_own_keys() {
    let site = "[sites.L.endpoints.in]\nkind = \"amqp\"\nurl = \"amqp://127.0.0.1\"\n\
                queue = \"orders\"\n\
                [sites.L.endpoints.out]\nkind = \"file\"\npath = \"out.jsonl\"\n\
                [[sites.L.integrations.i.flows]]\nname = \"f\"\nsource = \"in\"\n\
                target = \"out\"\n";
    assert!(parse(site).is_ok());
    assert_only(
        &format!("{site}schedule = \"every 5s\"\n"),
        "sites.L.integrations.i.flows[0].schedule",
        Some(12),
        "a flow from amqp endpoint 'in' has no schedule: its records are consumed while the \
         site runs",
    );
    assert_only(
        &site.replace(
            "queue = \"orders\"",
            "queue = \"orders\"\nsubject = \"a.b\"",
        ),
        "sites.L.endpoints.in.subject",
        Some(5),
        "is a key of nats endpoints, not of amqp",
    );
    assert_only(
        &site.replace("amqp://127.0.0.1", "amqp://guest:secret@127.0.0.1"),
        "sites.L.endpoints.in.url",
        Some(3),
        "carries a user",
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
    let found: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
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

// ------------------------------------------------------------- map, transform

const MAPPED: &str = "name = \"m\"\nsource = \"shop\"\ntarget = \"crm\"\n";

fn mapping_of(text: &str) -> crate::mapping::Mapping {
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let site = config.site("LIVE").unwrap();
    site.flow("m").unwrap().1.mapping.clone()
}

#[test]
fn a_map_inline_or_as_a_sub_table_maps_records() {
    use serde_json::json;
    let record = json!({"id": 7, "address": {"city": "Nelson"}, "extra": 1});
    let want = json!({
        "contact_id": 7, "city": "Nelson", "country": "NZ", "tier": "basic",
        "billing": {"city": "Nelson"}, "when": "2026-01-02", "tags": ["a", 1.5]
    });
    let inline = flow(&format!(
        "{MAPPED}map = {{ contact_id = \"id\", city = \"address.city\", country = {{ value = \"NZ\" }}, \
         tier = {{ from = \"level\", default = \"basic\" }}, \"billing.city\" = \"address.city\", \
         when = {{ value = 2026-01-02 }}, tags = {{ value = [\"a\", 1.5] }} }}\n"
    ));
    let m = mapping_of(&inline);
    assert_eq!(m.apply(record.clone()).unwrap(), vec![want.clone()]);
    let table = flow(&format!(
        "{MAPPED}[sites.LIVE.integrations.orders.flows.map]\ncontact_id = \"id\"\n\
         city = \"address.city\"\ncountry = {{ value = \"NZ\" }}\n\
         tier = {{ from = \"level\", default = \"basic\" }}\nbilling.city = \"address.city\"\n\
         when = {{ value = 2026-01-02 }}\ntags = {{ value = [\"a\", 1.5] }}\n"
    ));
    assert_eq!(mapping_of(&table).apply(record).unwrap(), vec![want]);
    // Without map or transform: records go as they come.
    assert!(mapping_of(&flow(MAPPED)).is_identity());
}

#[test]
fn a_transform_compiles_at_load() {
    let m = mapping_of(&flow(&format!(
        "{MAPPED}transform = \".total = (.qty * .price) | select(.total > 0)\"\n"
    )));
    let out = m.apply(serde_json::json!({"qty": 0, "price": 2})).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_jq_syntax_error_is_a_config_error_at_the_transform_key() {
    let text = flow(&format!("{MAPPED}transform = \".a | (.b\"\n"));
    assert_only(
        &text,
        "sites.LIVE.integrations.orders.flows[0].transform",
        Some(BASE + 5),
        "the jq program does not compile: expected",
    );
    let text = flow(&format!("{MAPPED}transform = \"nosuch(1)\"\n"));
    assert_only(
        &text,
        "sites.LIVE.integrations.orders.flows[0].transform",
        Some(BASE + 5),
        "undefined filter 'nosuch'",
    );
}

#[test]
fn map_problems_are_config_errors_at_their_keys() {
    let at = "sites.LIVE.integrations.orders.flows[0].map";
    let text = flow(&format!(
        "{MAPPED}[sites.LIVE.integrations.orders.flows.map]\na = \"x..y\"\nb = {{ from = \"x\", defualt = 1 }}\n\
         c = 5\nd = {{ value = 1, from = \"x\" }}\n\"\" = \"x\"\ne = {{}}\nf = {{ from = \".x\" }}\n"
    ));
    let errs = errors(&text);
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert_error(&errs, &format!("{at}.a"), Some(BASE + 6), "not a path");
    assert_error(&errs, &format!("{at}.b.defualt"), Some(BASE + 7), "default");
    assert_error(&errs, &format!("{at}.c"), Some(BASE + 8), "{ value = … }");
    assert_error(&errs, &format!("{at}.d"), Some(BASE + 9), "neither");
    assert_error(
        &errs,
        &format!("{at}.\"\""),
        Some(BASE + 10),
        "target field",
    );
    assert_error(&errs, &format!("{at}.e"), Some(BASE + 11), "`from`");
    assert_error(
        &errs,
        &format!("{at}.f.from"),
        Some(BASE + 12),
        "source path",
    );
    // A target field that is both a value and a parent.
    let text = flow(&format!("{MAPPED}map = {{ a = \"x\", \"a.b\" = \"y\" }}\n"));
    assert_only(&text, &format!("{at}.\"a.b\""), Some(BASE + 5), "clash");
    // A sub-table of target fields is not nesting: the message says how.
    let text = flow(&format!(
        "{MAPPED}[sites.LIVE.integrations.orders.flows.map.billing]\nzip = \"address.zip\"\n"
    ));
    assert_only(
        &text,
        &format!("{at}.billing"),
        Some(BASE + 5),
        "\"billing.FIELD\" = …",
    );
    let text = flow(&format!("{MAPPED}map = {{ a = {{ form = \"x\" }} }}\n"));
    assert_only(
        &text,
        &format!("{at}.a.form"),
        Some(BASE + 5),
        "did you mean 'from'",
    );
    let text = flow(&format!("{MAPPED}map = {{}}\n"));
    assert_only(&text, at, Some(BASE + 5), "empty map");
    let text = flow(&format!("{MAPPED}map = \"id\"\n"));
    assert_only(&text, at, Some(BASE + 5), "must be a table");
}

#[test]
fn alert_channels_are_read_with_their_defaults() {
    let c = parse(&with(
        r#"[alerts.ops]
kind = "webhook"
url = "http://127.0.0.1:9000/alerts"
format = "slack"
on = ["held", "paused"]
sites = ["LIVE"]
remind_every = "1h"
failing_threshold = 3
failing_window = "1m"
headers = { "X-Team" = "ops" }
[alerts.all]
kind = "webhook"
url = "https://alerts.example.com/in"
"#,
    ))
    .unwrap();
    use crate::model::alert::AlertKind;
    let ops = &c.alerts[0];
    assert_eq!(ops.name, "ops");
    assert_eq!(ops.on, [AlertKind::Held, AlertKind::Paused]);
    assert_eq!(ops.sites.as_deref(), Some(&["LIVE".to_string()][..]));
    assert_eq!(ops.remind_every, Some(Duration::from_secs(3600)));
    assert_eq!(
        (ops.failing_threshold, ops.failing_window),
        (3, Duration::from_secs(60))
    );
    match &ops.channel {
        AlertChannel::Webhook { http, format } => {
            assert_eq!(http.url, "http://127.0.0.1:9000/alerts");
            assert_eq!(http.headers["X-Team"], "ops");
            assert_eq!(*format, AlertFormat::Slack);
        }
        other => panic!("a webhook: {other:?}"),
    }
    let all = &c.alerts[1];
    assert_eq!(all.on, AlertKind::DEFAULT_ON);
    assert!(all.covers("ANY") && ops.covers("LIVE") && !ops.covers("ANY"));
    assert_eq!(all.remind_every, None);
    assert_eq!(
        (all.failing_threshold, all.failing_window),
        (DEFAULT_FAILING_THRESHOLD, DEFAULT_FAILING_WINDOW)
    );
}

#[test]
fn a_wrong_alert_channel_is_named_by_file_line_and_key() {
    let head = "[alerts.ops]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/a\"\n";
    assert_only(
        &with(&format!("{head}on = [\"helt\"]\n")),
        "alerts.ops.on",
        Some(BASE + 4),
        "did you mean 'held'?",
    );
    assert_only(
        &with(&format!("{head}sites = [\"DEV\"]\n")),
        "alerts.ops.sites",
        Some(BASE + 4),
        "no site 'DEV'",
    );
    assert_only(
        &with(&format!("{head}format = \"teams\"\n")),
        "alerts.ops.format",
        Some(BASE + 4),
        "\"slack\"",
    );
    assert_only(
        &with(&format!("{head}remind_every = \"often\"\n")),
        "alerts.ops.remind_every",
        Some(BASE + 4),
        "not a duration",
    );
    assert_only(
        &with("[alerts.ops]\nkind = \"pager\"\n"),
        "alerts.ops.kind",
        Some(BASE + 2),
        "unknown kind 'pager'",
    );
    assert_only(
        &with("[alerts.ops]\nkind = \"webhook\"\n"),
        "alerts.ops.url",
        Some(BASE + 1),
        "an alert channel of kind webhook needs it",
    );
    assert_only(
        &with("[alerts.ops]\nkind = \"emial\"\n"),
        "alerts.ops.kind",
        Some(BASE + 2),
        "did you mean 'email'?",
    );
}

#[test]
fn an_email_channel_is_read_with_its_defaults() {
    let c = parse(&with(
        r#"[alerts.oncall]
kind = "email"
smtp_url = "smtp://127.0.0.1:2525"
username = "sluice"
password_env = "SMTP_PASSWORD"
from = "Sluice <sluice@example.com>"
to = ["ops@example.com", "Ann <ann@example.com>"]
on = ["held"]
timeout = "5s"
[alerts.night]
kind = "email"
smtp_url = "smtps://mail.example.com"
from = "sluice@example.com"
to = "night@example.com"
"#,
    ))
    .unwrap();
    use crate::connectors::email::{EmailConfig, DEFAULT_TIMEOUT};
    let email = |i: usize| match &c.alerts[i].channel {
        AlertChannel::Email(e) => e.clone(),
        other => panic!("an email channel: {other:?}"),
    };
    assert_eq!(
        email(0),
        EmailConfig {
            smtp_url: "smtp://127.0.0.1:2525".into(),
            username: Some("sluice".into()),
            password_env: Some("SMTP_PASSWORD".into()),
            from: "Sluice <sluice@example.com>".into(),
            to: vec!["ops@example.com".into(), "Ann <ann@example.com>".into()],
            ca_file: None,
            client_cert: None,
            client_key: None,
            timeout: Duration::from_secs(5),
        }
    );
    assert_eq!(c.alerts[0].on, [crate::model::alert::AlertKind::Held]);
    // One recipient may be given as a string; 30s to send an email.
    let night = email(1);
    assert_eq!(night.to, ["night@example.com"]);
    assert_eq!(night.timeout, DEFAULT_TIMEOUT);
    assert_eq!((night.username, night.password_env), (None, None));
}

#[test]
fn a_wrong_email_channel_is_named_by_file_line_and_key() {
    let head = "[alerts.oncall]\nkind = \"email\"\n";
    let good = "smtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"sluice@example.com\"\n\
                to = [\"ops@example.com\"]\n";
    // Every key missing at once, at the table's header.
    let errs = errors(&with(head));
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alerts.oncall.smtp_url",
            "alerts.oncall.from",
            "alerts.oncall.to"
        ]
    );
    assert!(errs.iter().all(|e| e.line == Some(BASE + 1)), "{errs:#?}");
    assert_error(&errs, "alerts.oncall.to", Some(BASE + 1), "recipients");
    // A password in the URL: refused, and not repeated.
    let text = with(&format!(
        "{head}smtp_url = \"smtp://ann:S3cret@mail.example.com:587\"\n\
         from = \"sluice@example.com\"\nto = [\"ops@example.com\"]\n"
    ));
    assert_only(
        &text,
        "alerts.oncall.smtp_url",
        Some(BASE + 3),
        "password_env",
    );
    assert!(!errors(&text)[0].message.contains("S3cret"));
    assert_only(
        &with(&format!(
            "{head}smtp_url = \"imap://mail.example.com\"\nfrom = \"s@example.com\"\n\
             to = \"o@example.com\"\n"
        )),
        "alerts.oncall.smtp_url",
        Some(BASE + 3),
        "scheme 'imap'",
    );
    // (the line added, the key of the problem, what it says, whether it is
    // said at the table's header: a key missing)
    for (line, key, part, at_header) in [
        (
            "to = [\"ops@example.com\", \"nobody\"]",
            "to",
            "'nobody' is not an email address",
            false,
        ),
        ("to = []", "to", "names no one", false),
        ("to = 7", "to", "must be an array of strings", false),
        (
            "username = \"ann\"",
            "password_env",
            "missing: username needs",
            true,
        ),
        (
            "password_env = \"SMTP PW\"",
            "username",
            "missing: password_env needs",
            true,
        ),
        (
            "password_env = \"SMTP PW\"",
            "password_env",
            "not the name of an environment",
            false,
        ),
        ("timeout = \"soon\"", "timeout", "not a duration", false),
        (
            "format = \"slack\"",
            "format",
            "only a webhook channel",
            false,
        ),
        (
            "smtp_utl = \"smtp://mail\"",
            "smtp_utl",
            "did you mean 'smtp_url'",
            false,
        ),
        ("ca_file = \"nowhere.pem\"", "ca_file", "cannot read", false),
    ] {
        // The good `to` left out where the line gives another.
        let first = line.split(' ').next().unwrap();
        let good: String = good
            .lines()
            .filter(|l| !l.starts_with(&format!("{first} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = with(&format!("{head}{good}{line}\n"));
        let at = match at_header {
            true => BASE + 1,
            false => BASE + 3 + good.lines().count(),
        };
        assert_error(
            &errors(&text),
            &format!("alerts.oncall.{key}"),
            Some(at),
            part,
        );
    }
}
