//! Client verbs: `status`, `budgets`, `runs`, `report`, `pricing status`, `emit`, `doctor`.
//! They talk to a running daemon over its HTTP API, never to the store, and read its answers
//! into the same `wire` structs the server wrote them from. `--format json` prints the API's
//! JSON (stable, documented in README, no colour); `table` fits an 80-column terminal and uses
//! colour only on a terminal without `NO_COLOR`.
//!
//! - this file: the HTTP client, its errors, the shared table helpers;
//! - [`verbs`]: what each verb asks and how its answer is drawn;
//! - [`doctor`]: the health check.

use std::io::IsTerminal;
use std::process::ExitCode;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, Color, ContentArrangement, Table};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{ErrorBody, EventsAnswer};

pub mod claude;
mod doctor;
pub mod setup;
mod verbs;
pub use doctor::{EXIT_DOCTOR_RED, diagnose, doctor};
pub use verbs::{Verb, runs_query};

/// Exit status when the daemon cannot be reached or answers with an error.
pub const EXIT_UNREACHABLE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach costmeter at {url}: {reason} (is `costmeter run` up? pass --url)")]
    Unreachable { url: String, reason: String },
    #[error("costmeter answered {status} for {url}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
}

/// A small HTTP client for one daemon.
pub struct Client {
    base: String,
    http: ureq::Agent,
}

impl Client {
    /// A client whose every request gives up after `timeout`.
    pub fn with_timeout(base: &str, timeout: std::time::Duration) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .build()
                .into(),
        }
    }

    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(30)))
                .build()
                .into(),
        }
    }

    /// GETs a path; the body as text, or why not. On a terminal, a request that takes a
    /// while shows how long it has been waiting.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let _progress = Progress::start();
        let url = format!("{}{}", self.base, path);
        let (status, body) = answered(self.http.get(&url).call(), &url)?;
        if status >= 400 && status != 402 {
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or(body);
            return Err(ClientError::Refused {
                url,
                status,
                message,
            });
        }
        Ok(body)
    }

    /// POSTs one event; the daemon's answer.
    pub fn post_event(
        &self,
        event: &Value,
        token: Option<&str>,
    ) -> Result<EventsAnswer, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let mut request = self
            .http
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let (status, body) = answered(request.send(event.to_string()), &url)?;
        let refused = |message: String| ClientError::Refused {
            url: url.clone(),
            status,
            message,
        };
        if let Ok(answer) = serde_json::from_str::<EventsAnswer>(&body) {
            return match answer.rejected.first() {
                Some(first) if status != 202 => Err(refused(first.error.clone())),
                _ if status != 202 => Err(refused(body)),
                _ => Ok(answer),
            };
        }
        Err(refused(
            serde_json::from_str::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or(body),
        ))
    }

    /// GETs a path and reads the answer as `T`; a body that is not one is an error naming
    /// the path.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let text = self.get_text(path)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Refused {
            url: format!("{}{}", self.base, path),
            status: 200,
            message: format!("not the answer this costmeter expects: {e}"),
        })
    }
}

/// The status and body of an answer, or why there was none.
fn answered(
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> Result<(u16, String), ClientError> {
    let mut response = sent.map_err(|e| ClientError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let status = response.status().as_u16();
    Ok((
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    ))
}

/// Elapsed-time progress on stderr while a request is slow; only on a terminal, removed when
/// dropped.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// How long a request may take before progress shows.
    const AFTER: std::time::Duration = std::time::Duration::from_millis(300);

    fn start() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let started = std::time::Instant::now();
            if stopped.recv_timeout(Self::AFTER).is_ok() {
                return;
            }
            loop {
                eprint!(
                    "\rwaiting for costmeter… {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                match stopped.recv_timeout(std::time::Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            eprint!("\r{:40}\r", "");
        });
        Progress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(80)
        .set_header(header.iter().map(Cell::new));
    if !colour() {
        table.force_no_tty();
    }
    table
}

fn state_cell(state: &str) -> Cell {
    let cell = Cell::new(state);
    if !colour() {
        return cell;
    }
    match state {
        "exceeded" | "failure" | "timeout" => cell.fg(Color::Red),
        "warning" | "cancelled" => cell.fg(Color::Yellow),
        "ok" | "success" => cell.fg(Color::Green),
        _ => cell,
    }
}

/// A number for people: whole numbers without decimals, others to four places.
pub(crate) fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.4}")
    }
}

/// An optional number for people; `-` when absent.
fn maybe(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), number)
}

/// A bar of 20 cells for a ratio: used / limit.
fn bar(ratio: f64) -> String {
    let filled = ((ratio.clamp(0.0, 1.0)) * 20.0).round() as usize;
    format!(
        "{}{} {:>4.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        ratio * 100.0
    )
}

/// Text for a terminal table: control characters (escape sequences, newlines an agent put in
/// an error summary) become spaces, so nothing reported can drive the terminal.
fn text(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Optional text for a terminal table; `-` when absent.
fn text_or(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_string(), text)
}

/// Runs one verb: prints its answer and returns the exit status.
pub fn run(client: &Client, verb: Verb, format: Format) -> ExitCode {
    match verb.execute(client, format) {
        Ok(output) => {
            print!("{output}");
            if !output.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("costmeter: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// `costmeter emit`: posts the event and prints the daemon's answer.
pub fn emit(client: &Client, event: &Value, token: Option<&str>, format: Format) -> ExitCode {
    match client.post_event(event, token) {
        Ok(answer) => {
            match format {
                Format::Json => println!("{}", serde_json::to_string(&answer).unwrap_or_default()),
                Format::Table if answer.duplicates == 1 => {
                    println!("duplicate: already recorded, nothing changed")
                }
                Format::Table => println!("accepted"),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("costmeter: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_with_the_ratio_and_stop_at_the_limit() {
        assert_eq!(bar(0.5), "##########..........   50%");
        assert_eq!(bar(1.7), "####################  170%");
    }

    #[test]
    fn numbers_and_text_are_for_people_and_safe_on_a_terminal() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.12345), "0.1235");
        assert_eq!(maybe(None), "-");
        assert_eq!(text("a\u{1b}[31mb\nc"), "a [31mb c");
    }
}
