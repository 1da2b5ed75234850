//! The `costmeter` binary: parses arguments, sets up logging, maps errors to exit codes.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use costmeter::cli::{self, Cli, Command, EXIT_INVALID_CONFIG, PricingCommand, RunsCommand};
use costmeter::client::{self, Client, Format, Verb};
use costmeter::config::ConfigError;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the ingestion path allocates small, short-lived strings
/// across threads, where glibc's arenas cost a measurable share of the CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("costmeter: {error:#}");
            if error.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_INVALID_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => Ok(cli::check_config(&file)),
        Command::Status(args) => Ok(client::run(
            &Client::new(&args.url),
            Verb::Status,
            args.format,
        )),
        Command::Budgets(args) => Ok(client::run(
            &Client::new(&args.url),
            Verb::Budgets,
            args.format,
        )),
        Command::Runs {
            client: args,
            status,
            agent,
            since,
            limit,
            show,
        } => {
            let verb = match show {
                Some(RunsCommand::Show { id }) => Verb::RunShow { id },
                None => Verb::Runs {
                    query: client::runs_query(
                        status.as_deref(),
                        agent.as_deref(),
                        since.as_deref(),
                        limit,
                    ),
                },
            };
            Ok(client::run(&Client::new(&args.url), verb, args.format))
        }
        Command::Report {
            url,
            window,
            format,
        } => {
            let (markdown, format) = match format.as_str() {
                "md" | "markdown" => (true, Format::Table),
                "json" => (false, Format::Json),
                "table" => (false, Format::Table),
                other => anyhow::bail!("--format '{other}' is not table, json or md"),
            };
            Ok(client::run(
                &Client::new(&url),
                Verb::Report { window, markdown },
                format,
            ))
        }
        Command::Doctor(args) => Ok(client::doctor(&Client::new(&args.url), args.format)),
        Command::Emit {
            client: args,
            token,
            event,
        } => Ok(client::emit(
            &Client::new(&args.url),
            &event.to_json(),
            token.as_deref(),
            args.format,
        )),
        Command::Pricing {
            command: PricingCommand::Status(args),
        } => Ok(client::run(
            &Client::new(&args.url),
            Verb::PricingStatus,
            args.format,
        )),
        Command::Statusline { url, agent } => Ok(client::claude::run_statusline(&url, &agent)),
        Command::Hook {
            kind: cli::HookKind::ClaudeCode,
            url,
            agent,
        } => Ok(client::claude::run_hook(&url, &agent)),
        Command::Setup {
            agent,
            url,
            route,
            write,
            file,
        } => client::setup::run(agent, &url, route.as_deref(), write, file.as_deref()),
        Command::Run { config } => {
            init_logging();
            // Parse the config before binding anything: a bad file never half-starts a daemon.
            let config = cli::load_config(config.as_deref())?;
            runtime()?.block_on(costmeter::daemon::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec {
            config,
            target,
            command,
        } => {
            init_logging();
            let config = cli::load_config(config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let command = costmeter::daemon::ExecCommand {
                argv: command,
                target,
            };
            let status = runtime.block_on(costmeter::daemon::exec(config, command))?;
            Ok(ExitCode::from(status))
        }
    }
}

/// Two workers: the sidecar shares a small machine with the agent it meters.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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
