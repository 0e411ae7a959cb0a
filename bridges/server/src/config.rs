//! The effective configuration: file, then environment, then flags, checked once.
//!
//! Layers, later ones winning:
//! 1. the TOML file (`--config PATH`, else `switchyard.toml` in the working directory if it
//!    exists, else nothing): sections `[broker]` (= [`CoreConfig`], users as
//!    `[[broker.users]]`), `[amqp]` (= [`AmqpConfig`]), `[stomp]` (= [`StompConfig`]), `[mqtt]` (= [`MqttConfig`]), `[aws]` and `[ws]` (= [`WsConfig`]);
//! 2. environment variables `SWITCHYARD_<SECTION>__<KEY>` (`__` separates path segments;
//!    segments are lower-cased), written into the parsed TOML tree before it is deserialized;
//! 3. command-line flags (`--data-dir`, `--amqp-listen`, `--stomp-listen`, `--mqtt-listen`, `--aws-listen`,
//!    `--ws-stomp-listen`, `--ws-mqtt-listen`, `--http-listen`).
//!
//! Each crate owns its own config struct and its defaults; this module only composes them and
//! checks what no type expresses ([`validate`]), so that a bad value stops the process before
//! anything is opened or bound, with every problem listed by its key path. A few checks repeat
//! ones the core makes in `Broker::open` (password hash format): the core stays the authority,
//! this is the earlier and clearer message.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use switchyard::config::CoreConfig;
use switchyard_amqp::config::AmqpConfig;
use switchyard_aws::config::AwsConfig;
use switchyard_mqtt::config::MqttConfig;
use switchyard_stomp::config::StompConfig;
use switchyard_ws::config::WsConfig;

use crate::cli::Cli;

/// Name of the config file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "switchyard.toml";

/// Prefix of environment overrides. Only names that also contain `__` are overrides, so
/// variables such as `SWITCHYARD_BIN` (used by the test harness) are left alone.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

/// Separator between path segments in an environment override name.
const ENV_SEPARATOR: &str = "__";

/// What a clear-text password is replaced with by `--print-config`.
const REDACTED: &str = "<redacted>";

/// AMQP 0-9-1 §4.2.3: peers must accept frames of at least `frame-min-size` = 4096 octets.
const AMQP_FRAME_MIN_SIZE: u32 = 4096;

/// RabbitMQ's `rabbit_password_hashing_sha256`: 4 bytes of salt, then a SHA-256 digest.
const PASSWORD_HASH_LEN: usize = 4 + 32;

/// The whole config file. A missing section or key takes its crate's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `[broker]`: the core: data directory, virtual hosts, users, limits.
    pub broker: CoreConfig,
    /// `[amqp]`: the AMQP 0-9-1 listener.
    pub amqp: AmqpConfig,
    /// `[stomp]`: the STOMP 1.0-1.2 listener.
    pub stomp: StompConfig,
    /// `[mqtt]`: the MQTT 3.1/3.1.1/5.0 listener.
    pub mqtt: MqttConfig,
    /// `[aws]`: the AWS-compatible HTTP listener (SQS).
    pub aws: AwsConfig,
    /// `[ws]`: STOMP and MQTT over WebSocket, the JSON live API, the main HTTP port.
    pub ws: WsConfig,
}

/// The effective configuration and where it came from (for the startup log).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated configuration.
    pub config: ServerConfig,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Names of the environment overrides that were applied (values are not kept: they may
    /// be secrets).
    pub env_overrides: Vec<String>,
}

/// Builds the effective configuration from `cli`, the given environment and the working
/// directory `cwd` (where the default config file is looked for), and validates it.
///
/// The environment is passed in rather than read so that tests can supply their own.
pub fn load(cli: &Cli, env: impl IntoIterator<Item = (OsString, OsString)>, cwd: &Path) -> anyhow::Result<Loaded> {
    let file = match &cli.config {
        Some(path) => Some(path.clone()),
        None => {
            let candidate = cwd.join(DEFAULT_CONFIG_FILE);
            candidate.is_file().then_some(candidate)
        }
    };
    let mut tree = match &file {
        Some(path) => read_file(path)?,
        None => toml::Table::new(),
    };

    let env_overrides = apply_env_overrides(&mut tree, env)?;
    let mut config: ServerConfig = toml::Value::Table(tree).try_into().with_context(|| {
        if env_overrides.is_empty() {
            "invalid configuration".to_string()
        } else {
            format!("invalid configuration after applying environment overrides {}", env_overrides.join(", "))
        }
    })?;

    if let Some(dir) = &cli.data_dir {
        config.broker.data_dir = dir.clone();
    }
    if let Some(addr) = cli.amqp_listen {
        config.amqp.listen = addr;
    }
    if let Some(addr) = cli.stomp_listen {
        config.stomp.listen = addr;
    }
    if let Some(addr) = cli.mqtt_listen {
        config.mqtt.listen = addr;
    }
    if let Some(addr) = cli.aws_listen {
        config.aws.listen = addr;
    }
    if let Some(addr) = cli.ws_stomp_listen {
        config.ws.stomp_listen = addr;
    }
    if let Some(addr) = cli.ws_mqtt_listen {
        config.ws.mqtt_listen = addr;
    }
    if let Some(addr) = cli.http_listen {
        config.ws.http_listen = addr;
    }

    validate(&config)?;
    Ok(Loaded { config, file, env_overrides })
}

/// Reads and parses one config file into a TOML tree.
///
/// The file is also deserialized on its own, strictly, so that a mistake in it is reported with
/// its line and column before environment overrides make the tree synthetic.
fn read_file(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str::<ServerConfig>(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    toml::from_str::<toml::Table>(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Writes every `SWITCHYARD_<SECTION>__<KEY>[__<KEY>...]` variable of `env` into `tree` and
/// returns the names applied, sorted.
///
/// A value is kept as a string when the default at that path is a string (so
/// `SWITCHYARD_BROKER__DATA_DIR=2024` is a directory, not a number); otherwise it is parsed as a
/// TOML value (`60`, `true`, `["/", "dev"]`, `[]`) and falls back to a string if that fails
/// (`127.0.0.1:5672`).
pub fn apply_env_overrides(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Vec<String>> {
    let defaults = toml::Table::try_from(ServerConfig::default()).context("serializing the built-in defaults")?;

    let mut overrides: Vec<(String, OsString)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let rest = name.strip_prefix(ENV_PREFIX)?;
            rest.contains(ENV_SEPARATOR).then_some((name, value))
        })
        .collect();
    overrides.sort();

    let mut applied = Vec::with_capacity(overrides.len());
    for (name, value) in overrides {
        let Some(raw) = value.to_str() else {
            bail!("environment variable {name} is not valid UTF-8");
        };
        let path: Vec<String> = name[ENV_PREFIX.len()..].split(ENV_SEPARATOR).map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            bail!(
                "environment variable {name}: expected {ENV_PREFIX}<SECTION>__<KEY>, \
                 with no empty segment"
            );
        }
        let hint = lookup(&defaults, &path);
        set_path(tree, &path, env_value(raw, hint)).with_context(|| format!("applying environment variable {name}"))?;
        applied.push(name);
    }
    Ok(applied)
}

/// The value at `path` in `tree`, if every segment exists.
fn lookup<'a>(tree: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut table = tree;
    for segment in parents {
        table = table.get(segment)?.as_table()?;
    }
    table.get(last)
}

/// Sets `path` in `tree` to `value`, creating intermediate tables.
fn set_path(tree: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else {
        bail!("empty key path");
    };
    let mut table = tree;
    for segment in parents {
        let entry = table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            other => bail!("`{segment}` is a {}, not a table", other.type_str()),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// Interprets one environment value; see [`apply_env_overrides`].
fn env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    if matches!(default, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Checks the values no type can express. Reports every problem found, not just the first.
pub fn validate(cfg: &ServerConfig) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let broker = &cfg.broker;

    if broker.data_dir.as_os_str().is_empty() {
        problems.push("broker.data_dir must not be empty".into());
    }
    if broker.vhosts.is_empty() {
        problems.push("broker.vhosts must name at least one virtual host".into());
    }
    let mut vhosts = BTreeSet::new();
    for vhost in &broker.vhosts {
        if vhost.is_empty() {
            problems.push("broker.vhosts: a virtual host name must not be empty".into());
        } else if !vhosts.insert(vhost.as_str()) {
            problems.push(format!("broker.vhosts: {vhost:?} is listed twice"));
        }
    }
    if broker.max_message_size == 0 {
        problems.push("broker.max_message_size must be greater than 0".into());
    }

    let mut names = BTreeSet::new();
    for (i, user) in broker.users.iter().enumerate() {
        let who = if user.name.is_empty() {
            problems.push(format!("broker.users[{i}]: name must not be empty"));
            format!("broker.users[{i}]")
        } else {
            if !names.insert(user.name.as_str()) {
                problems.push(format!("broker.users: {:?} is defined twice", user.name));
            }
            format!("broker.users[{i}] ({:?})", user.name)
        };
        match (&user.password, &user.password_hash) {
            // A user with neither cannot log in with a password (RabbitMQ allows that too).
            (None, None) | (Some(_), None) => {}
            (Some(_), Some(_)) => {
                problems.push(format!("{who}: set password or password_hash, not both"));
            }
            (None, Some(hash)) => {
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(hash)
                    .is_ok_and(|bytes| bytes.len() == PASSWORD_HASH_LEN);
                if !ok {
                    problems.push(format!(
                        "{who}: password_hash must be base64 of a 4-byte salt followed by \
                         sha256(salt ++ password) ({PASSWORD_HASH_LEN} bytes)"
                    ));
                }
            }
        }
        for (vhost, perm) in &user.permissions {
            if !vhosts.contains(vhost.as_str()) {
                problems.push(format!("{who}: permissions for virtual host {vhost:?}, which is not in broker.vhosts"));
            }
            for (what, pattern) in [("configure", &perm.configure), ("write", &perm.write), ("read", &perm.read)] {
                if let Err(err) = regex::Regex::new(pattern) {
                    problems.push(format!("{who}: permissions.{vhost:?}.{what} is not a valid regex: {err}"));
                }
            }
        }
    }
    if broker.loopback_users.iter().any(String::is_empty) {
        problems.push("broker.loopback_users: a user name must not be empty".into());
    }

    let amqp = &cfg.amqp;
    if amqp.frame_max < AMQP_FRAME_MIN_SIZE {
        problems.push(format!("amqp.frame_max must be at least {AMQP_FRAME_MIN_SIZE} (the protocol's minimum)"));
    }
    if amqp.max_connections == 0 {
        problems.push("amqp.max_connections must be at least 1".into());
    }
    if amqp.handshake_timeout == 0 {
        problems.push("amqp.handshake_timeout must be at least 1 second".into());
    }

    let stomp = &cfg.stomp;
    if stomp.max_connections == 0 {
        problems.push("stomp.max_connections must be at least 1".into());
    }
    if stomp.handshake_timeout == 0 {
        problems.push("stomp.handshake_timeout must be at least 1 second".into());
    }
    if stomp.max_headers == 0 || stomp.max_header_length < 64 {
        problems.push("stomp.max_headers must be at least 1 and stomp.max_header_length at least 64".into());
    }
    if stomp.max_body_size == 0 {
        problems.push("stomp.max_body_size must be greater than 0".into());
    }

    let mqtt = &cfg.mqtt;
    if mqtt.max_connections == 0 {
        problems.push("mqtt.max_connections must be at least 1".into());
    }
    if mqtt.connect_timeout == 0 {
        problems.push("mqtt.connect_timeout must be at least 1 second".into());
    }
    if mqtt.max_packet_size < 64 || mqtt.max_packet_size as usize > switchyard_mqtt::codec::MAX_REMAINING_LENGTH + 5 {
        problems.push("mqtt.max_packet_size must be between 64 and 268435460 bytes".into());
    }
    if mqtt.max_packet_size_unauthenticated < 64 {
        problems.push("mqtt.max_packet_size_unauthenticated must be at least 64 bytes".into());
    }
    if mqtt.session_max_messages == 0 {
        problems.push("mqtt.session_max_messages must be at least 1".into());
    }
    if mqtt.prefetch == 0 || mqtt.receive_maximum == 0 {
        problems.push("mqtt.prefetch and mqtt.receive_maximum must be at least 1".into());
    }
    if mqtt.max_session_expiry == 0 {
        problems.push("mqtt.max_session_expiry must be at least 1 second".into());
    }

    let ws = &cfg.ws;
    if !ws.path.starts_with('/') || ws.path.len() < 2 {
        problems.push("ws.path must start with '/' and name a path, e.g. \"/ws\"".into());
    }
    if ws.max_connections == 0 {
        problems.push("ws.max_connections must be at least 1".into());
    }
    if ws.max_message_size < 1024 {
        problems.push("ws.max_message_size must be at least 1024 bytes".into());
    }
    if ws.ping_interval == 0 || ws.idle_timeout < ws.ping_interval {
        problems
            .push("ws.ping_interval must be at least 1 second and ws.idle_timeout at least ws.ping_interval".into());
    }
    if ws.outbound_max_messages == 0 || ws.outbound_max_bytes < 1024 {
        problems.push("ws.outbound_max_messages must be at least 1 and ws.outbound_max_bytes at least 1024".into());
    }
    if ws.default_window == 0 {
        problems.push("ws.default_window must be at least 1".into());
    }

    if problems.is_empty() { Ok(()) } else { bail!("invalid configuration:\n  - {}", problems.join("\n  - ")) }
}

/// The configuration as TOML, with clear-text passwords replaced by `<redacted>`.
pub fn to_toml_redacted(cfg: &ServerConfig) -> anyhow::Result<String> {
    let mut cfg = cfg.clone();
    for user in &mut cfg.broker.users {
        if user.password.is_some() {
            user.password = Some(REDACTED.to_string());
        }
    }
    toml::to_string_pretty(&cfg).context("serializing the configuration as TOML")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use clap::Parser;

    use super::*;

    /// The annotated file shipped at the repository root.
    const SHIPPED: &str = include_str!("../../../switchyard.toml");

    fn tree_of(cfg: &ServerConfig) -> toml::Table {
        toml::Table::try_from(cfg).expect("config serializes")
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied())).expect("valid flags")
    }

    fn load_str(toml_text: &str, env_pairs: &[(&str, &str)], args: &[&str]) -> anyhow::Result<ServerConfig> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).expect("write config");
        let mut all = vec!["--config", path.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        load(&cli(&all), env(env_pairs), dir.path()).map(|l| l.config)
    }

    /// Every key path of `tree` that holds a non-table value, recursively; arrays are leaves.
    fn leaf_paths(tree: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in tree {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(t) => leaf_paths(t, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn shipped_file_equals_the_built_in_defaults() {
        let shipped: ServerConfig = toml::from_str(SHIPPED).expect("switchyard.toml parses");
        assert_eq!(tree_of(&shipped), tree_of(&ServerConfig::default()));
        validate(&shipped).expect("switchyard.toml is valid");
    }

    #[test]
    fn shipped_file_spells_out_every_key() {
        let raw: toml::Table = toml::from_str(SHIPPED).expect("switchyard.toml parses");
        let mut expected = Vec::new();
        leaf_paths(&tree_of(&ServerConfig::default()), "", &mut expected);
        let mut present = Vec::new();
        leaf_paths(&raw, "", &mut present);
        for key in expected {
            assert!(present.contains(&key), "switchyard.toml lacks `{key}`");
        }
    }

    /// The commented-out users example must stay valid and show every user/permission key.
    #[test]
    fn shipped_users_example_is_valid_and_complete() {
        let example: String = SHIPPED
            .lines()
            .skip_while(|l| l.trim() != "# [[broker.users]]")
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!example.is_empty(), "switchyard.toml lacks the `# [[broker.users]]` example");
        let cfg: ServerConfig = toml::from_str(&example).expect("users example parses");
        validate(&cfg).expect("users example is valid");
        assert!(cfg.broker.users.len() >= 2, "example shows both password forms");
        for key in ["name", "password", "password_hash", "tags", "permissions", "configure", "write", "read"] {
            assert!(
                example.lines().any(|l| l.trim_start().starts_with(key) || l.contains(&format!(".{key}"))),
                "users example lacks `{key}`"
            );
        }
    }

    #[test]
    fn no_file_means_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = load(&cli(&[]), env(&[]), dir.path()).expect("defaults load");
        assert!(loaded.file.is_none());
        assert_eq!(tree_of(&loaded.config), tree_of(&ServerConfig::default()));
    }

    #[test]
    fn default_file_in_cwd_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), "[amqp]\nheartbeat = 5\n").expect("write");
        let loaded = load(&cli(&[]), env(&[]), dir.path()).expect("loads");
        assert_eq!(loaded.file, Some(dir.path().join(DEFAULT_CONFIG_FILE)));
        assert_eq!(loaded.config.amqp.heartbeat, 5);
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml");
        let err = load(&cli(&["--config", missing.to_str().expect("utf-8")]), env(&[]), dir.path())
            .expect_err("missing file");
        assert!(format!("{err:#}").contains("nope.toml"), "{err:#}");
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let err = load_str("[amqp]\nheartbaet = 5\n", &[], &[]).expect_err("unknown key");
        let msg = format!("{err:#}");
        assert!(msg.contains("c.toml") && msg.contains("heartbaet"), "{msg}");
        let err = load_str("[nosuchsection]\n", &[], &[]).expect_err("unknown section");
        assert!(format!("{err:#}").contains("nosuchsection"), "{err:#}");
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let file = "[broker]\ndata_dir = \"from-file\"\n[amqp]\nlisten = \"127.0.0.1:1111\"\nheartbeat = 1\n";
        let cfg = load_str(file, &[], &[]).expect("file");
        assert_eq!(cfg.broker.data_dir, PathBuf::from("from-file"));
        assert_eq!(cfg.amqp.heartbeat, 1);

        let env_pairs = [
            ("SWITCHYARD_BROKER__DATA_DIR", "from-env"),
            ("SWITCHYARD_AMQP__LISTEN", "127.0.0.1:2222"),
            ("SWITCHYARD_AMQP__HEARTBEAT", "2"),
        ];
        let cfg = load_str(file, &env_pairs, &[]).expect("env");
        assert_eq!(cfg.broker.data_dir, PathBuf::from("from-env"));
        assert_eq!(cfg.amqp.listen, "127.0.0.1:2222".parse::<SocketAddr>().expect("addr"));
        assert_eq!(cfg.amqp.heartbeat, 2);

        let cfg =
            load_str(file, &env_pairs, &["--data-dir", "from-flag", "--amqp-listen", "127.0.0.1:3333"]).expect("flags");
        assert_eq!(cfg.broker.data_dir, PathBuf::from("from-flag"));
        assert_eq!(cfg.amqp.listen, "127.0.0.1:3333".parse::<SocketAddr>().expect("addr"));
        assert_eq!(cfg.amqp.heartbeat, 2);
    }

    #[test]
    fn env_values_follow_the_type_of_the_default() {
        let cfg = load_str(
            "",
            &[
                ("SWITCHYARD_BROKER__DATA_DIR", "2024"),
                ("SWITCHYARD_BROKER__VHOSTS", r#"["/", "dev"]"#),
                ("SWITCHYARD_BROKER__LOOPBACK_USERS", "[]"),
                ("SWITCHYARD_BROKER__MAX_MESSAGE_SIZE", "1_048_576"),
                ("SWITCHYARD_BROKER__USERS", r#"[{name = "app", password = "pw"}]"#),
            ],
            &[],
        )
        .expect("env overrides apply");
        assert_eq!(cfg.broker.data_dir, PathBuf::from("2024"));
        assert_eq!(cfg.broker.vhosts, vec!["/".to_string(), "dev".to_string()]);
        assert!(cfg.broker.loopback_users.is_empty());
        assert_eq!(cfg.broker.max_message_size, 1 << 20);
        assert_eq!(cfg.broker.users.len(), 1);
        assert_eq!(cfg.broker.users[0].password.as_deref(), Some("pw"));
    }

    #[test]
    fn env_names_without_double_underscore_are_not_overrides() {
        let cfg = load_str("", &[("SWITCHYARD_BIN", "/x"), ("OTHER__THING", "1")], &[]).expect("ignored");
        assert_eq!(tree_of(&cfg), tree_of(&ServerConfig::default()));
    }

    #[test]
    fn bad_env_overrides_are_errors_that_name_the_variable() {
        for (name, value, needle) in [
            ("SWITCHYARD_AMQP__NOPE", "1", "SWITCHYARD_AMQP__NOPE"),
            ("SWITCHYARD_NOPE__X", "1", "SWITCHYARD_NOPE__X"),
            ("SWITCHYARD_AMQP__HEARTBEAT", "soon", "SWITCHYARD_AMQP__HEARTBEAT"),
            ("SWITCHYARD_AMQP____LISTEN", "1", "empty segment"),
            ("SWITCHYARD_AMQP__LISTEN__X", "1", "SWITCHYARD_AMQP__LISTEN__X"),
        ] {
            let err = load_str("", &[(name, value)], &[]).expect_err(name);
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{name}: {msg}");
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = r#"
            [broker]
            vhosts = ["/", "/"]
            max_message_size = 0
            [[broker.users]]
            name = "a"
            [[broker.users]]
            name = "a"
            password = "x"
            password_hash = "not-base64!"
            [broker.users.permissions."nowhere"]
            read = "("
            [amqp]
            frame_max = 100
            max_connections = 0
            handshake_timeout = 0
        "#;
        let err = load_str(text, &[], &[]).expect_err("invalid");
        let msg = format!("{err:#}");
        for needle in [
            "listed twice",
            "max_message_size",
            "defined twice",
            "not both",
            "\"nowhere\"",
            "not a valid regex",
            "frame_max",
            "max_connections",
            "handshake_timeout",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn printed_config_round_trips_and_redacts_passwords() {
        let text = r#"
            [[broker.users]]
            name = "app"
            password = "s3cret"
            [broker.users.permissions."/"]
            read = "^app\\."
        "#;
        let cfg = load_str(text, &[], &[]).expect("valid");
        let printed = to_toml_redacted(&cfg).expect("prints");
        assert!(!printed.contains("s3cret"), "{printed}");
        let back: ServerConfig = toml::from_str(&printed).expect("printed config parses");
        let mut expected = cfg.clone();
        expected.broker.users[0].password = Some(REDACTED.into());
        assert_eq!(tree_of(&back), tree_of(&expected));
    }
}
