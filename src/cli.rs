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

// Parsed once at start; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// The health check: each finding green, yellow or red with its fix; exit 3 on red.
    Doctor(ClientArgs),
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
    /// Report an event from a shell script or hook: POSTs it to /v1/events.
    Emit {
        #[command(flatten)]
        client: ClientArgs,
        /// Bearer token for a daemon with server.token_file.
        #[arg(long, global = true, env = "COSTMETER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        event: EmitEvent,
    },
    /// The price table.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Claude Code's statusline: reads its JSON on stdin, prints one line (spend, the tightest
    /// budget, the session's cost). Never fails.
    Statusline {
        /// costmeter's address.
        #[arg(long, env = "COSTMETER_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// The agent whose budgets count.
        #[arg(long, env = "COSTMETER_AGENT", default_value = "claude-code")]
        agent: String,
    },
    /// An agent's hook: exit 0 to allow, 2 to block (the reason on stderr) when a hard budget
    /// of the agent is exceeded.
    Hook {
        /// The agent whose hook protocol is spoken.
        #[arg(value_enum)]
        kind: HookKind,
        /// costmeter's address.
        #[arg(long, env = "COSTMETER_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// The agent whose budgets count.
        #[arg(long, env = "COSTMETER_AGENT", default_value = "claude-code")]
        agent: String,
    },
    /// Print (or with --write, merge into the agent's settings file) what wires AGENT to this
    /// daemon: the proxy when it is on, OTLP otherwise.
    Setup {
        #[arg(value_enum)]
        agent: crate::client::setup::Agent,
        /// costmeter's address.
        #[arg(long, env = "COSTMETER_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// proxy or otlp; default: the proxy when the daemon has it on.
        #[arg(long, value_parser = ["proxy", "otlp"])]
        route: Option<String>,
        /// Merge into the agent's settings file (a backup is kept beside it).
        #[arg(long)]
        write: bool,
        /// The settings file, instead of the agent's default.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Validate a config file offline and print every problem found.
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
}

/// Agents whose hook protocol `costmeter hook` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    ClaudeCode,
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

/// Common fields of every emitted event.
#[derive(Debug, Clone, clap::Args)]
pub struct EmitCommon {
    /// Idempotency key: the same id twice is counted once.
    #[arg(long)]
    pub event_id: Option<String>,
    /// RFC 3339 time; default now.
    #[arg(long)]
    pub ts: Option<String>,
    #[arg(long)]
    pub trace_id: Option<String>,
    #[arg(long)]
    pub span_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EmitEvent {
    /// An llm_usage event; --input counts all input tokens, cached ones included.
    Usage {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        input: u64,
        #[arg(long)]
        output: u64,
        #[arg(long)]
        cache_read: Option<u64>,
        #[arg(long)]
        cache_write: Option<u64>,
        #[arg(long)]
        reasoning: Option<u64>,
        /// USD, when the caller knows the exact cost.
        #[arg(long)]
        cost: Option<f64>,
        #[arg(long)]
        task_id: Option<String>,
        #[arg(long)]
        run_id: Option<String>,
    },
    RunStart {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        run_id: String,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    RunEnd {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        run_id: String,
        /// success, failure, cancelled or timeout.
        #[arg(long)]
        result: String,
        #[arg(long)]
        failure_class: Option<String>,
        #[arg(long)]
        error_summary: Option<String>,
    },
    TaskStart {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        task_id: String,
        #[arg(long = "type")]
        task_type: String,
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    TaskEnd {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        task_id: String,
        #[arg(long = "type")]
        task_type: String,
        #[arg(long)]
        result: String,
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long)]
        failure_class: Option<String>,
        #[arg(long)]
        error_summary: Option<String>,
    },
    LockWait {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        lock: Option<String>,
    },
    FileWrite {
        #[command(flatten)]
        common: EmitCommon,
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        task_id: Option<String>,
        /// Only its SHA-256 is stored.
        #[arg(long)]
        path: Option<String>,
    },
}

impl EmitEvent {
    /// The event as `POST /v1/events` takes it; absent options are left out.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let (kind, common, fields): (&str, &EmitCommon, Value) = match self {
            EmitEvent::Usage {
                common,
                agent,
                model,
                provider,
                input,
                output,
                cache_read,
                cache_write,
                reasoning,
                cost,
                task_id,
                run_id,
            } => (
                "llm_usage",
                common,
                json!({"agent": agent, "model": model, "provider": provider, "input_tokens": input, "output_tokens": output,
                       "cache_read_tokens": cache_read, "cache_write_tokens": cache_write, "reasoning_tokens": reasoning,
                       "cost_usd": cost, "task_id": task_id, "run_id": run_id}),
            ),
            EmitEvent::RunStart {
                common,
                run_id,
                agent,
                name,
            } => (
                "run_start",
                common,
                json!({"run_id": run_id, "agent": agent, "name": name}),
            ),
            EmitEvent::RunEnd {
                common,
                run_id,
                result,
                failure_class,
                error_summary,
            } => (
                "run_end",
                common,
                json!({"run_id": run_id, "result": result, "failure_class": failure_class, "error_summary": error_summary}),
            ),
            EmitEvent::TaskStart {
                common,
                task_id,
                task_type,
                run_id,
                agent,
            } => (
                "task_start",
                common,
                json!({"task_id": task_id, "task_type": task_type, "run_id": run_id, "agent": agent}),
            ),
            EmitEvent::TaskEnd {
                common,
                task_id,
                task_type,
                result,
                run_id,
                failure_class,
                error_summary,
            } => (
                "task_end",
                common,
                json!({"task_id": task_id, "task_type": task_type, "result": result, "run_id": run_id,
                       "failure_class": failure_class, "error_summary": error_summary}),
            ),
            EmitEvent::LockWait {
                common,
                seconds,
                lock,
            } => (
                "lock_wait",
                common,
                json!({"seconds": seconds, "lock": lock}),
            ),
            EmitEvent::FileWrite {
                common,
                bytes,
                task_id,
                path,
            } => (
                "file_write",
                common,
                json!({"bytes": bytes, "task_id": task_id, "path": path}),
            ),
        };
        let mut event = Map::new();
        event.insert("type".into(), Value::from(kind));
        for (key, value) in [
            ("event_id", &common.event_id),
            ("ts", &common.ts),
            ("trace_id", &common.trace_id),
            ("span_id", &common.span_id),
        ] {
            if let Some(value) = value {
                event.insert(key.into(), Value::from(value.clone()));
            }
        }
        if let Value::Object(fields) = fields {
            event.extend(fields.into_iter().filter(|(_, v)| !v.is_null()));
        }
        Value::Object(event)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `emit` subcommand, with every flag it has, makes an event the schema accepts:
    /// a field renamed in `ingest::event` and not here fails this test.
    #[test]
    fn every_emitted_event_passes_the_one_schema() {
        let common = [
            "--event-id",
            "e-1",
            "--ts",
            "2026-11-23T10:00:00Z",
            "--trace-id",
            "0af7651916cd43dd8448eb211c80319c",
            "--span-id",
            "b7ad6b7169203331",
        ];
        let cases: [&[&str]; 7] = [
            &[
                "usage",
                "--agent",
                "a",
                "--model",
                "m",
                "--provider",
                "p",
                "--input",
                "10",
                "--output",
                "5",
                "--cache-read",
                "2",
                "--cache-write",
                "1",
                "--reasoning",
                "1",
                "--cost",
                "0.5",
                "--task-id",
                "t",
                "--run-id",
                "r",
            ],
            &["run-start", "--run-id", "r", "--agent", "a", "--name", "n"],
            &[
                "run-end",
                "--run-id",
                "r",
                "--result",
                "failure",
                "--failure-class",
                "tool",
                "--error-summary",
                "boom",
            ],
            &[
                "task-start",
                "--task-id",
                "t",
                "--type",
                "build",
                "--run-id",
                "r",
                "--agent",
                "a",
            ],
            &[
                "task-end",
                "--task-id",
                "t",
                "--type",
                "build",
                "--result",
                "success",
                "--run-id",
                "r",
                "--failure-class",
                "tool",
                "--error-summary",
                "x",
            ],
            &["lock-wait", "--seconds", "1.5", "--lock", "cargo"],
            &[
                "file-write",
                "--bytes",
                "10",
                "--task-id",
                "t",
                "--path",
                "src/x.rs",
            ],
        ];
        for case in cases {
            let args = ["costmeter", "emit"]
                .into_iter()
                .chain(case.iter().copied())
                .chain(common);
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            let Command::Emit { event, .. } = cli.command else {
                panic!("emit")
            };
            let json = event.to_json();
            crate::ingest::event::validate(&json, 0)
                .unwrap_or_else(|problem| panic!("{case:?} → {json}: {problem}"));
        }
    }
}
