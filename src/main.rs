//! The `costmeter` binary: parses arguments, sets up logging, maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use costmeter::cli::{self, Cli, Command, EXIT_INVALID_CONFIG};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => cli::check_config(&file),
        Command::Run { config } => {
            init_logging();
            // Parse the config before binding anything: a bad file never half-starts a daemon.
            let config = match cli::load_config(config.as_deref()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("costmeter: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(costmeter::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = %error, "costmeter stopped");
                    eprintln!("costmeter: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// JSON logs on stderr; `COSTMETER_LOG` (or `RUST_LOG`) filters, default `info`.
fn init_logging() {
    let filter = EnvFilter::try_from_env("COSTMETER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
}
