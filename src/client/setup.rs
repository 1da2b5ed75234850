//! `costmeter setup AGENT`: the settings that wire an agent to this daemon, as the agent's own
//! docs name them — the proxy's base URL when the daemon's proxy is on, its OTLP endpoint and
//! exporters otherwise, and for Claude Code the statusline and the hook. Printed, or with
//! `--write` merged into the agent's settings file after a backup (`FILE.costmeter-backup`):
//! keys costmeter does not set are kept; a missing file is created.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The agents `setup` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    ClaudeCode,
    Codex,
    GeminiCli,
    Opencode,
    Otel,
}

/// How the agent reaches costmeter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Calls go through the proxy at this daemon.
    Proxy,
    /// The agent exports OpenTelemetry to this daemon.
    Otlp,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' is not valid {kind}: {why}; it was left as it is")]
    Parse {
        path: PathBuf,
        kind: &'static str,
        why: String,
    },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no settings file costmeter can write; set the variables printed above")]
    NoFile(&'static str),
}

/// What to set for one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The agent's settings file and the keys to merge into it (JSON, or TOML for Codex).
    pub file: Option<(PathBuf, Value)>,
    /// Environment variables to export, for agents (or routes) a file cannot carry.
    pub env: Vec<(String, String)>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The settings for `agent` reaching the daemon at `url` by `route`. Pure but for `$HOME`.
pub fn settings(agent: Agent, url: &str, route: &Route, file: Option<&Path>) -> Settings {
    let url = url.trim_end_matches('/');
    let otlp = format!("{url}/v1/otlp");
    let path = |default: PathBuf| Some(file.map_or(default, Path::to_path_buf));
    let otel_env = || {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), otlp.clone()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
                "http/protobuf".to_string(),
            ),
        ]
    };
    match agent {
        Agent::ClaudeCode => {
            let env = match route {
                Route::Proxy => json!({"ANTHROPIC_BASE_URL": format!("{url}/proxy/anthropic")}),
                Route::Otlp => json!({
                    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
                    "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_LOGS_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
                }),
            };
            let hook = json!([{"matcher": "*", "hooks": [{"type": "command",
                "command": format!("costmeter hook claude-code --url {url}")}]}]);
            let prompt_hook = json!([{"hooks": [{"type": "command",
                "command": format!("costmeter hook claude-code --url {url}")}]}]);
            Settings {
                file: path(home().join(".claude/settings.json")).map(|p| {
                    (
                        p,
                        json!({
                            "env": env,
                            "statusLine": {"type": "command",
                                "command": format!("costmeter statusline --url {url}")},
                            "hooks": {"PreToolUse": hook, "UserPromptSubmit": prompt_hook},
                        }),
                    )
                }),
                env: Vec::new(),
            }
        }
        Agent::Codex => {
            let keys = match route {
                Route::Proxy => json!({
                    "model_provider": "costmeter",
                    "model_providers": {"costmeter": {
                        "name": "OpenAI through costmeter",
                        "base_url": format!("{url}/proxy/openai/v1"),
                        "env_key": "OPENAI_API_KEY",
                        "wire_api": "responses",
                    }},
                }),
                Route::Otlp => json!({"otel": {
                    "exporter": {"otlp-http": {"endpoint": format!("{otlp}/v1/logs"), "protocol": "binary"}},
                    "trace_exporter": {"otlp-http": {"endpoint": format!("{otlp}/v1/traces"), "protocol": "binary"}},
                }}),
            };
            Settings {
                file: path(home().join(".codex/config.toml")).map(|p| (p, keys)),
                env: Vec::new(),
            }
        }
        Agent::GeminiCli => match route {
            // Gemini CLI takes its base URL from the environment only.
            Route::Proxy => Settings {
                file: None,
                env: vec![(
                    "GOOGLE_GEMINI_BASE_URL".into(),
                    format!("{url}/proxy/gemini"),
                )],
            },
            Route::Otlp => Settings {
                file: path(home().join(".gemini/settings.json")).map(|p| {
                    (
                        p,
                        json!({"telemetry": {"enabled": true, "target": "local",
                        "otlpEndpoint": otlp, "otlpProtocol": "http", "logPrompts": false}}),
                    )
                }),
                env: Vec::new(),
            },
        },
        Agent::Opencode => match route {
            Route::Proxy => Settings {
                file: path(home().join(".config/opencode/opencode.json")).map(|p| {
                    (
                        p,
                        json!({"provider": {
                            "anthropic": {"options": {"baseURL": format!("{url}/proxy/anthropic/v1")}},
                            "openai": {"options": {"baseURL": format!("{url}/proxy/openai/v1")}},
                        }}),
                    )
                }),
                env: Vec::new(),
            },
            Route::Otlp => Settings {
                file: None,
                env: otel_env(),
            },
        },
        Agent::Otel => Settings {
            file: None,
            env: otel_env(),
        },
    }
}

/// Merges `keys` into `into`: objects key by key (recursively); hook lists get costmeter's
/// entry unless one with the same command is there; anything else is replaced.
fn merge(into: &mut Value, keys: &Value) {
    match (into, keys) {
        (Value::Object(into), Value::Object(keys)) => {
            for (key, value) in keys {
                match into.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(keys)) => {
            for entry in keys {
                if !into.contains(entry) {
                    into.push(entry.clone());
                }
            }
        }
        (into, keys) => *into = keys.clone(),
    }
}

fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}

/// The settings file's text with `keys` merged in.
pub fn merged_text(
    path: &Path,
    existing: Option<&str>,
    keys: &Value,
) -> Result<String, SetupError> {
    let parse_error = |kind, why: String| SetupError::Parse {
        path: path.to_path_buf(),
        kind,
        why,
    };
    if is_toml(path) {
        let mut table: Value = match existing {
            Some(text) => {
                let parsed: toml::Table =
                    toml::from_str(text).map_err(|e| parse_error("TOML", e.to_string()))?;
                serde_json::to_value(parsed).map_err(|e| parse_error("TOML", e.to_string()))?
            }
            None => json!({}),
        };
        merge(&mut table, keys);
        let table: toml::Table =
            serde_json::from_value(table).map_err(|e| parse_error("TOML", e.to_string()))?;
        return toml::to_string_pretty(&table).map_err(|e| parse_error("TOML", e.to_string()));
    }
    let mut value: Value = match existing {
        Some(text) if !text.trim().is_empty() => {
            serde_json::from_str(text).map_err(|e| parse_error("JSON", e.to_string()))?
        }
        _ => json!({}),
    };
    merge(&mut value, keys);
    serde_json::to_string_pretty(&value)
        .map(|t| t + "\n")
        .map_err(|e| parse_error("JSON", e.to_string()))
}

/// Writes the merged settings: the old file is kept as `FILE.costmeter-backup`, the new one
/// is written whole to a temporary file beside it and renamed over.
pub fn write(path: &Path, keys: &Value) -> Result<Option<PathBuf>, SetupError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(SetupError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let text = merged_text(path, existing.as_deref(), keys)?;
    let write_error = |source| SetupError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let backup = match &existing {
        Some(old) => {
            let mut name = path.as_os_str().to_os_string();
            name.push(".costmeter-backup");
            let backup = PathBuf::from(name);
            crate::files::write_atomic(&backup, old.as_bytes()).map_err(write_error)?;
            Some(backup)
        }
        None => None,
    };
    crate::files::write_atomic(path, text.as_bytes()).map_err(write_error)?;
    Ok(backup)
}

/// The settings as a person copies them.
pub fn describe(settings: &Settings) -> Result<String, SetupError> {
    let mut out = String::new();
    if let Some((path, keys)) = &settings.file {
        out.push_str(&format!("# merge into {}\n", path.display()));
        out.push_str(&merged_text(path, None, keys)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    for (name, value) in &settings.env {
        out.push_str(&format!("export {name}={value}\n"));
    }
    Ok(out)
}

/// `costmeter setup`: asks the daemon whether its proxy is on (unless `--route` says), then
/// prints or writes the settings.
pub fn run(
    agent: Agent,
    url: &str,
    route: Option<&str>,
    write_file: bool,
    file: Option<&Path>,
) -> anyhow::Result<std::process::ExitCode> {
    let route = match route {
        Some("proxy") => Route::Proxy,
        Some(_) => Route::Otlp,
        None => {
            let client = super::Client::new(url);
            let status: crate::wire::Status = client.get_as("/v1/status").map_err(|e| {
                anyhow::anyhow!("{e}; start costmeter first, or say --route proxy or --route otlp")
            })?;
            if status.proxy.is_empty() {
                Route::Otlp
            } else {
                Route::Proxy
            }
        }
    };
    let settings = settings(agent, url, &route, file);
    if !write_file {
        print!("{}", describe(&settings)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for (name, value) in &settings.env {
        println!("export {name}={value}");
    }
    let Some((path, keys)) = &settings.file else {
        let name = match agent {
            Agent::GeminiCli => "gemini-cli (with the proxy)",
            Agent::Opencode => "opencode (with OTLP)",
            _ => "this agent",
        };
        return Err(SetupError::NoFile(name).into());
    };
    let backup = write(path, keys)?;
    match backup {
        Some(backup) => println!(
            "merged into {} (the old file is {})",
            path.display(),
            backup.display()
        ),
        None => println!("wrote {}", path.display()),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_keys_and_does_not_repeat_the_hook() {
        let keys = settings(
            Agent::ClaudeCode,
            "http://127.0.0.1:8000",
            &Route::Proxy,
            Some(Path::new("s.json")),
        )
        .file
        .expect("a file")
        .1;
        let existing = r#"{"model": "opus", "env": {"FOO": "1"}, "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "lint"}]}]}}"#;
        let once = merged_text(Path::new("s.json"), Some(existing), &keys).expect("merged");
        let twice = merged_text(Path::new("s.json"), Some(&once), &keys).expect("merged");
        assert_eq!(once, twice, "merging again changes nothing");
        let value: Value = serde_json::from_str(&twice).expect("json");
        assert_eq!(value["model"], "opus");
        assert_eq!(value["env"]["FOO"], "1");
        assert_eq!(
            value["env"]["ANTHROPIC_BASE_URL"],
            "http://127.0.0.1:8000/proxy/anthropic"
        );
        assert_eq!(
            value["hooks"]["PreToolUse"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            value["statusLine"]["command"],
            "costmeter statusline --url http://127.0.0.1:8000"
        );
    }

    #[test]
    fn codex_settings_are_toml_and_keep_its_other_tables() {
        let keys = settings(
            Agent::Codex,
            "http://127.0.0.1:8000",
            &Route::Otlp,
            Some(Path::new("config.toml")),
        )
        .file
        .expect("a file")
        .1;
        let text = merged_text(
            Path::new("config.toml"),
            Some("model = \"gpt-5.2\"\n[projects.\"/src\"]\ntrust_level = \"trusted\"\n"),
            &keys,
        )
        .expect("merged");
        let table: toml::Table = toml::from_str(&text).expect("TOML");
        assert_eq!(table["model"].as_str(), Some("gpt-5.2"));
        assert_eq!(
            table["otel"]["exporter"]["otlp-http"]["endpoint"].as_str(),
            Some("http://127.0.0.1:8000/v1/otlp/v1/logs")
        );
        assert!(table["projects"]["/src"]["trust_level"].is_str());
    }
}
