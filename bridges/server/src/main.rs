//! `switchyard`: the broker binary. Reads the configuration, starts the core and every
//! front-end, and stops them in order on SIGINT/SIGTERM.
//!
//! This is the only crate that depends on every bridge, and the only one that reads files,
//! environment variables and flags (style guide §2.1, §2.6); the libraries take values.
//! Modules: [`cli`] (flags), [`config`] (file → env → flags, validation), [`app`] (startup,
//! ready line, shutdown), [`signal`] (SIGINT/SIGTERM), [`reclaim`] (freed heap back to the system).

mod app;
mod cli;
mod config;
mod reclaim;
mod signal;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the working directory")?;

    if cli.print_config {
        let loaded = config::load(&cli, std::env::vars_os(), &cwd)?;
        print!("{}", config::to_toml_redacted(&loaded.config)?);
        return Ok(());
    }

    init_tracing(&cli.log)?;
    let loaded = config::load(&cli, std::env::vars_os(), &cwd)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config_file = %loaded.file.as_deref().map_or_else(|| "(none: built-in defaults)".into(), |p| p.display().to_string()),
        env_overrides = ?loaded.env_overrides,
        "starting switchyard"
    );

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("switchyard");
    // A publishing connection writes its acks after the deliveries it caused (see handover).
    switchyard_kit::handover::install(&mut builder);
    let runtime = builder.build().context("starting the tokio runtime")?;
    runtime.block_on(app::run(loaded.config))
}

/// Logs go to stderr, so stdout carries only the ready line (and `--print-config`).
fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?} (from --log or RUST_LOG)"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|err| anyhow::anyhow!("initialising logging: {err}"))
}
