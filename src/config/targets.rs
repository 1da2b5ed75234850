//! `[enforcement]` and each `[[target]]` checked, and the small value parsers they share.

use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use super::*;

pub(super) fn validate_enforcement(
    raw: RawEnforcement,
    locator: &mut Locator<'_>,
) -> EnforcementConfig {
    let (signal_name, signal) = match &raw.signal {
        None => ("SIGTERM".to_string(), 15),
        Some(s) => match SIGNALS
            .iter()
            .find(|(name, _)| *name == s.get_ref().as_str())
        {
            Some((name, number)) => (name.to_string(), *number),
            None => {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                locator.report(
                    s.span(),
                    format!(
                        "enforcement.signal: '{}' is not one of {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                );
                ("SIGTERM".to_string(), 15)
            }
        },
    };
    let grace = locator.duration(
        raw.grace.as_ref(),
        "enforcement.grace",
        Duration::ZERO,
        Duration::from_secs(3600),
        DEFAULT_GRACE,
    );
    let webhook = raw.webhook.as_ref().map(|w| {
        let url = w.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            locator.report(
                w.span(),
                format!("enforcement.webhook: '{url}' must be an http:// or https:// URL"),
            );
        }
        url.clone()
    });
    EnforcementConfig {
        signal,
        signal_name,
        grace,
        dry_run: raw.dry_run.unwrap_or(false),
        webhook,
    }
}

pub(super) fn validate_target(
    raw: Spanned<RawTarget>,
    locator: &mut Locator<'_>,
) -> Option<TargetConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = locator.problems.len();

    let name = match &raw.name {
        None => {
            locator.report(span.clone(), "target: 'name' is required");
            String::new()
        }
        Some(name) => {
            if name.get_ref().is_empty() || name.get_ref().chars().any(char::is_control) {
                locator.report(
                    name.span(),
                    "target.name: must be non-empty and free of control characters",
                );
            }
            name.get_ref().clone()
        }
    };

    let mut selectors = Vec::new();
    if let Some(pid) = &raw.pid {
        let value = *pid.get_ref();
        if !(2..=i64::from(i32::MAX)).contains(&value) {
            locator.report(
                pid.span(),
                format!("target.pid: {value} is not a process id (must be at least 2; pid 1 is never metered as a target)"),
            );
        }
        selectors.push(("pid", Selector::Pid(i32::try_from(value).unwrap_or(0))));
    }
    if let Some(path) = &raw.pid_file {
        if path.get_ref().is_empty() {
            locator.report(path.span(), "target.pid_file: must be a path");
        }
        selectors.push(("pid_file", Selector::PidFile(PathBuf::from(path.get_ref()))));
    }
    if let Some(matcher) = &raw.match_ {
        let exe = matcher.get_ref().exe.as_ref().map(|e| e.get_ref().clone());
        let cmdline = match &matcher.get_ref().cmdline {
            None => None,
            Some(pattern) => match Regex::new(pattern.get_ref()) {
                Ok(re) => Some(re),
                Err(error) => {
                    locator.report(
                        pattern.span(),
                        format!(
                            "target.match.cmdline: not a valid regex: {}",
                            // The regex crate draws a caret under the pattern; keep the verdict.
                            error.to_string().lines().last().unwrap_or_default().trim()
                        ),
                    );
                    None
                }
            },
        };
        if matcher.get_ref().exe.is_none() && matcher.get_ref().cmdline.is_none() {
            locator.report(
                matcher.span(),
                "target.match: give 'exe', 'cmdline' or both",
            );
        }
        selectors.push(("match", Selector::Match { exe, cmdline }));
    }
    if let Some(path) = &raw.cgroup {
        if !path.get_ref().starts_with('/') {
            locator.report(
                path.span(),
                format!(
                    "target.cgroup: '{}' must be absolute: a directory under /sys/fs/cgroup or a path as /proc/PID/cgroup shows it",
                    path.get_ref()
                ),
            );
        }
        selectors.push(("cgroup", Selector::Cgroup(PathBuf::from(path.get_ref()))));
    }
    if let Some(own) = &raw.own_process {
        if *own.get_ref() {
            selectors.push(("self", Selector::OwnProcess));
        } else {
            locator.report(
                own.span(),
                "target.self: only 'true' is meaningful; remove the key",
            );
        }
    }
    let selector = match selectors.len() {
        1 => selectors.pop().map(|(_, s)| s),
        0 => {
            locator.report(
                span.clone(),
                format!(
                    "target '{name}': give exactly one selector: pid, pid_file, match, cgroup or self"
                ),
            );
            None
        }
        _ => {
            let names: Vec<&str> = selectors.iter().map(|(n, _)| *n).collect();
            locator.report(
                span.clone(),
                format!(
                    "target '{name}': has {} selectors ({}); give exactly one",
                    names.len(),
                    names.join(", ")
                ),
            );
            None
        }
    };

    let sample_interval = locator.duration(
        raw.sample_interval.as_ref(),
        "target.sample_interval",
        MIN_SAMPLE_INTERVAL,
        Duration::MAX,
        DEFAULT_SAMPLE_INTERVAL,
    );

    let silent_after = locator.duration(
        raw.silent_after.as_ref(),
        "target.silent_after",
        Duration::ZERO,
        Duration::from_secs(30 * 86_400),
        super::DEFAULT_SILENT_AFTER,
    );
    let own = matches!(selector, Some(Selector::OwnProcess));

    if locator.problems.len() > before {
        return None;
    }
    Some(TargetConfig {
        name,
        selector: selector?,
        children: raw.children.unwrap_or(true),
        sample_interval,
        // "0s" turns the check off; costmeter itself reports no usage.
        silent_after: (!silent_after.is_zero() && !own).then_some(silent_after),
    })
}

/// Parses durations such as "500ms", "1s", "24h", "35d".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("'{text}' is not a duration such as \"500ms\", \"1s\", \"24h\" or \"7d\" ({error})")
    })
}

pub(super) fn is_metric_name_prefix(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
