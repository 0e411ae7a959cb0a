//! The command line: flags only, parsed by clap.
//!
//! Flags are the last of the three configuration layers (file, then environment, then flags);
//! [`crate::config`] applies them. Nothing here reads files or the environment, except clap's
//! own `RUST_LOG` fallback for `--log`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// `switchyard`: one broker binary for AMQP 0-9-1 today, more protocols later.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a multi-protocol message broker",
    after_help = "Configuration: the TOML file, then SWITCHYARD_<SECTION>__<KEY> environment \
                  variables (e.g. SWITCHYARD_AMQP__LISTEN=127.0.0.1:5672), then these flags.\n\
                  Once every listener is bound, one line is printed on stdout:\n  \
                  switchyard ready {\"amqp\":\"127.0.0.1:5672\",\"stomp\":\"127.0.0.1:61613\",\"mqtt\":\"127.0.0.1:1883\",...}"
)]
pub struct Cli {
    /// Config file (TOML). Default: `switchyard.toml` in the working directory if it exists,
    /// else built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Directory for durable state; overrides `[broker] data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address of the AMQP 0-9-1 listener, e.g. `127.0.0.1:0`; overrides `[amqp] listen`.
    #[arg(long, value_name = "ADDR")]
    pub amqp_listen: Option<SocketAddr>,

    /// Address of the STOMP listener, e.g. `127.0.0.1:0`; overrides `[stomp] listen`.
    #[arg(long, value_name = "ADDR")]
    pub stomp_listen: Option<SocketAddr>,

    /// Address of the MQTT listener, e.g. `127.0.0.1:0`; overrides `[mqtt] listen`.
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,

    /// Address of the AWS-compatible HTTP listener (SQS, SNS, Kinesis), e.g. `127.0.0.1:0`; overrides `[aws] listen`.
    #[arg(long, value_name = "ADDR")]
    pub aws_listen: Option<SocketAddr>,

    /// Address of the STOMP-over-WebSocket listener (RabbitMQ Web-STOMP, 15674), e.g.
    /// `127.0.0.1:0`; overrides `[ws] stomp_listen`.
    #[arg(long, value_name = "ADDR")]
    pub ws_stomp_listen: Option<SocketAddr>,

    /// Address of the MQTT-over-WebSocket listener (RabbitMQ Web-MQTT, 15675), e.g.
    /// `127.0.0.1:0`; overrides `[ws] mqtt_listen`.
    #[arg(long, value_name = "ADDR")]
    pub ws_mqtt_listen: Option<SocketAddr>,

    /// Address of the main HTTP listener (15672: WebSocket endpoints, JSON live API, /demo),
    /// e.g. `127.0.0.1:0`; overrides `[ws] http_listen`.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// Log filter in tracing's `EnvFilter` syntax, e.g. `info,switchyard_amqp=debug`.
    #[arg(long, value_name = "FILTER", env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Print the effective configuration as TOML (passwords redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "--config",
            "x.toml",
            "--data-dir",
            "/tmp/d",
            "--amqp-listen",
            "127.0.0.1:0",
            "--log",
            "debug",
            "--print-config",
        ])
        .expect("valid flags");
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        assert_eq!(cli.data_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(cli.amqp_listen, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(cli.log, "debug");
        assert!(cli.print_config);
    }

    #[test]
    fn bad_listen_address_is_a_usage_error() {
        assert!(Cli::try_parse_from(["switchyard", "--amqp-listen", "nope"]).is_err());
    }
}
