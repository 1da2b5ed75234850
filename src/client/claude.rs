//! Claude Code's integration points: the statusline command (its JSON on stdin, one line out)
//! and the hook (PreToolUse / UserPromptSubmit JSON on stdin; exit 2 blocks, with the reason
//! on stderr, which Claude Code shows the model). Neither may ever break Claude Code: an
//! unreachable daemon is a short line, or an allowed call.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use super::{Client, ClientError};
use crate::admission::{HookVerdict, applies, hook_verdict};
use crate::budget::{BudgetStatus, Resource, State};
use crate::wire::{BudgetList, Status};

/// How long the verbs wait for the daemon: Claude Code runs the statusline on every update and
/// the hook before every tool call.
pub const DEADLINE: Duration = Duration::from_millis(400);

/// The parts of Claude Code's statusline JSON the line uses; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct StatuslineInput {
    #[serde(default)]
    pub model: Option<ModelInfo>,
    #[serde(default)]
    pub cost: Option<SessionCost>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelInfo {
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionCost {
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
}

/// The parts of a hook's JSON the hook uses.
#[derive(Debug, Default, Deserialize)]
pub struct HookInput {
    #[serde(default)]
    pub hook_event_name: Option<String>,
}

fn read_stdin<T: for<'de> Deserialize<'de> + Default>() -> T {
    let mut text = String::new();
    // A stdin that is not JSON (or is closed) is no reason to fail Claude Code.
    let _ = std::io::stdin().take(1 << 20).read_to_string(&mut text);
    serde_json::from_str(&text).unwrap_or_default()
}

fn amount(resource: Resource, value: f64) -> String {
    match resource {
        Resource::Usd => format!("${value:.2}"),
        Resource::Tokens if value >= 1e6 => format!("{:.1}M tok", value / 1e6),
        Resource::Tokens if value >= 1e3 => format!("{:.1}k tok", value / 1e3),
        Resource::Tokens => format!("{value:.0} tok"),
        _ => super::number(value),
    }
}

fn paint(text: &str, state: State, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match state {
        State::Ok => "32",
        State::Warning => "33",
        State::Exceeded => "31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The statusline: spend of the last 24 h, the tightest budget that applies to `agent`, and
/// Claude Code's own session cost. Pure.
pub fn statusline(
    status: &Status,
    budgets: &[BudgetStatus],
    agent: &str,
    input: &StatuslineInput,
    colour: bool,
) -> String {
    let mut parts = vec![format!(
        "costmeter {} 24h",
        amount(Resource::Usd, status.spend.last_24h.usd)
    )];
    let tightest = budgets
        .iter()
        .filter(|b| b.target.is_none() && b.resource.is_usage() && applies(b, Some(agent)))
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio));
    if let Some(b) = tightest {
        let text = format!(
            "{} {}/{} {:.0}%",
            b.name,
            amount(b.resource, b.used),
            amount(b.resource, b.limit),
            b.ratio * 100.0
        );
        parts.push(paint(&super::text(&text), b.state, colour));
    }
    if let Some(usd) = input.cost.as_ref().and_then(|c| c.total_cost_usd) {
        parts.push(format!("session {}", amount(Resource::Usd, usd)));
    }
    if let Some(model) = input.model.as_ref().and_then(|m| m.display_name.as_deref()) {
        parts.push(super::text(model));
    }
    parts.join(" · ")
}

fn fetch(client: &Client) -> Result<(Status, Vec<BudgetStatus>), ClientError> {
    let status: Status = client.get_as("/v1/status")?;
    let budgets: BudgetList = client.get_as("/v1/budgets")?;
    Ok((status, budgets.budgets))
}

/// `costmeter statusline`: always prints one line and exits 0.
pub fn run_statusline(url: &str, agent: &str) -> std::process::ExitCode {
    let input: StatuslineInput = read_stdin();
    let client = Client::with_timeout(url, DEADLINE);
    let colour = std::env::var_os("NO_COLOR").is_none();
    match fetch(&client) {
        Ok((status, budgets)) => {
            println!("{}", statusline(&status, &budgets, agent, &input, colour))
        }
        Err(_) => println!("costmeter unreachable"),
    }
    std::process::ExitCode::SUCCESS
}

/// What Claude Code reads from a hook's stdout on exit 0: a message shown to the user.
#[derive(Debug, serde::Serialize)]
struct HookOutput<'a> {
    #[serde(rename = "systemMessage")]
    system_message: &'a str,
}

/// `costmeter hook claude-code`: exit 0 to allow (with a warning message past `warn_at`),
/// exit 2 with the reason on stderr to block. An unreachable daemon allows: the soft-kill
/// stays the backstop.
pub fn run_hook(url: &str, agent: &str) -> std::process::ExitCode {
    let _input: HookInput = read_stdin();
    let client = Client::with_timeout(url, DEADLINE);
    let budgets = match client.get_as::<BudgetList>("/v1/budgets") {
        Ok(list) => list.budgets,
        Err(error) => {
            eprintln!("costmeter unreachable, not blocking: {error}");
            return std::process::ExitCode::SUCCESS;
        }
    };
    match hook_verdict(agent, &budgets) {
        HookVerdict::Allow => std::process::ExitCode::SUCCESS,
        HookVerdict::Warn(line) => {
            let output = HookOutput {
                system_message: &line,
            };
            println!("{}", serde_json::to_string(&output).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        HookVerdict::Block(reason) => {
            eprintln!("{reason}");
            std::process::ExitCode::from(2)
        }
    }
}
