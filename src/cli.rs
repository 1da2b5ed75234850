//! Command-line interface: argument parsing and the verbs' top-level flow.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Exit code for a config that does not validate (EX_USAGE would be 64; 2 matches clap's own
/// usage errors, so scripts need to know one code for "fix your input").
pub const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "costmeter",
    version,
    about = "Meter what an AI agent costs, export it to Prometheus, hold it to budgets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (built-in defaults when no config is given).
    Run {
        /// TOML config file.
        #[arg(long, short, env = "COSTMETER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run CMD as the metered target with the daemon around it; exit with CMD's status, or
    /// 86 when a budget stopped it.
    Exec {
        /// TOML config file.
        #[arg(long, short, env = "COSTMETER_CONFIG")]
        config: Option<PathBuf>,
        /// The target name CMD's process tree is metered and enforced under.
        #[arg(long, default_value = "agent")]
        target: String,
        /// The command and its arguments.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<std::ffi::OsString>,
    },
    /// Daemon up, version, uptime, recent spend, budgets at a glance.
    Status(ClientArgs),
    /// Every budget with a bar: used / limit, state, window end.
    Budgets(ClientArgs),
    /// Runs, newest first: which failed most recently and why; `runs show ID` for one run.
    Runs {
        #[command(flatten)]
        client: ClientArgs,
        /// running, success, failure (or failed), cancelled, timeout.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// A duration such as 7d, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(subcommand)]
        show: Option<RunsCommand>,
    },
    /// The cost report of a window.
    Report {
        /// costmeter's address.
        #[arg(long, env = "COSTMETER_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        #[arg(long, default_value = "7d")]
        window: String,
        /// table, json or md (Markdown).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// The price table.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Validate a config file offline and print every problem found.
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
}

/// `--url` and `--format` of every client verb.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// costmeter's address.
    #[arg(
        long,
        global = true,
        env = "COSTMETER_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub format: crate::client::Format,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run with its tasks and their cost records.
    Show { id: String },
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// Baseline version, manifest, rejected rows, models priced at 0.
    Status(ClientArgs),
}

/// Loads the config for `run`, printing problems the way `check-config` does.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    Config::load_or_default(path)
}

/// `costmeter check-config FILE`.
pub fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: ok (listen {}, namespace {}, {} target{})",
                file.display(),
                config.server.listen,
                config.metrics.namespace,
                config.targets.len(),
                if config.targets.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}
