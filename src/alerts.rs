//! Alertmanager's webhook payload (version 4) and what costmeter does about each alert: a
//! firing alert labelled `costmeter_action="soft_kill"` and `target="…"` stops that target if
//! it is one of this sidecar's (and, when it carries `instance`, names this sidecar), and holds
//! it stopped until the alert resolves; every other alert is ignored with the reason. Pure, so
//! the HTTP handler only carries the orders out.

use std::collections::HashMap;

use crate::enforce::KillOrder;

/// The payload; fields costmeter does not use are ignored.
#[derive(Debug, serde::Deserialize)]
struct Payload {
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Debug, serde::Deserialize)]
struct Alert {
    status: String,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// What costmeter does about an alert it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Firing: stop the target now and hold it stopped (a restarted agent is stopped again)
    /// until the alert resolves.
    Hold(KillOrder),
    /// Resolved: the hold this alert set ends.
    Release,
}

/// What becomes of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub alert: String,
    pub target: Option<String>,
    pub fingerprint: Option<String>,
    /// What identifies the alert across notifications: its fingerprint, else its name and
    /// target.
    pub key: String,
    /// `Ok(action)` to act, `Err(reason)` when the alert is ignored.
    pub action: Result<Action, String>,
}

/// This sidecar, as alerts name it.
pub struct Sidecar<'a> {
    /// Its targets.
    pub targets: &'a [String],
    /// The names it answers to in an alert's `instance` label ([fleet] instance).
    pub instances: &'a [String],
}

/// Reads a payload and decides for each alert; the error says why the body is not one. An
/// alert that carries `instance` acts only on the sidecar it names: a per-sidecar rule's alert,
/// sent to a receiver that lists every sidecar, stops that sidecar's agent only. A fleet rule
/// aggregates `instance` away and acts on all.
pub fn decide(body: &[u8], sidecar: &Sidecar<'_>) -> Result<Vec<Decision>, String> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|problem| format!("not an Alertmanager webhook payload (version 4): {problem}"))?;
    Ok(payload
        .alerts
        .into_iter()
        .map(|alert| {
            let name = alert
                .labels
                .get("alertname")
                .cloned()
                .unwrap_or_else(|| "unnamed alert".into());
            let wants_kill =
                alert.labels.get("costmeter_action").map(String::as_str) == Some("soft_kill");
            let target = alert.labels.get("target").cloned();
            let elsewhere = alert
                .labels
                .get("instance")
                .filter(|i| !sidecar.instances.contains(i));
            let action = match (&alert.status[..], wants_kill, &target) {
                (_, true, Some(_)) if elsewhere.is_some() => Err(format!(
                    "instance '{}' is not this sidecar (it answers to {}; set [fleet] instance)",
                    elsewhere.map(String::as_str).unwrap_or_default(),
                    sidecar.instances.join(", ")
                )),
                ("firing", true, Some(target)) if sidecar.targets.contains(target) => {
                    Ok(Action::Hold(KillOrder {
                        target: target.clone(),
                        reason: format!("alert '{name}' firing"),
                    }))
                }
                ("resolved", true, Some(target)) if sidecar.targets.contains(target) => {
                    Ok(Action::Release)
                }
                (_, true, Some(target)) if !sidecar.targets.contains(target) => {
                    Err(format!("target '{target}' is not one of this sidecar's"))
                }
                (_, true, None) => Err("no target label".to_string()),
                (_, false, _) => Err("no costmeter_action=\"soft_kill\" label".to_string()),
                _ => Err(format!("status is {}", alert.status)),
            };
            let key = alert
                .fingerprint
                .clone()
                .unwrap_or_else(|| format!("{name}/{}", target.as_deref().unwrap_or_default()));
            Decision {
                alert: name,
                target,
                fingerprint: alert.fingerprint,
                key,
                action,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_alerts_hold_own_targets_and_resolved_ones_release_them() {
        let body = br#"{"version":"4","alerts":[
            {"status":"firing","labels":{"alertname":"Over","costmeter_action":"soft_kill","target":"agent"},"fingerprint":"f1"},
            {"status":"firing","labels":{"alertname":"Other","costmeter_action":"soft_kill","target":"elsewhere"}},
            {"status":"resolved","labels":{"alertname":"Over","costmeter_action":"soft_kill","target":"agent"},"fingerprint":"f1"},
            {"status":"firing","labels":{"alertname":"Info"}},
            {"status":"firing","labels":{"alertname":"Local","costmeter_action":"soft_kill","target":"agent","instance":"host-b:8000"}},
            {"status":"firing","labels":{"alertname":"Mine","costmeter_action":"soft_kill","target":"agent","instance":"host-a:8000"}}
        ]}"#;
        let sidecar = Sidecar {
            targets: &["agent".to_string()],
            instances: &["host-a:8000".to_string()],
        };
        let decisions = decide(body, &sidecar).expect("parses");
        assert_eq!(decisions.len(), 6);
        assert_eq!(
            decisions[0].action,
            Ok(Action::Hold(KillOrder {
                target: "agent".into(),
                reason: "alert 'Over' firing".into()
            }))
        );
        assert_eq!(decisions[0].key, "f1");
        assert_eq!(
            decisions[1].action,
            Err("target 'elsewhere' is not one of this sidecar's".into())
        );
        assert_eq!(decisions[2].action, Ok(Action::Release));
        assert_eq!(decisions[2].key, decisions[0].key, "one alert, one key");
        assert!(decisions[3].action.is_err());
        assert!(
            decisions[4]
                .action
                .as_ref()
                .is_err_and(|e| e.contains("instance 'host-b:8000' is not this sidecar")),
            "{:?}",
            decisions[4].action
        );
        assert!(matches!(decisions[5].action, Ok(Action::Hold(_))));
        assert!(decide(b"[1,2]", &sidecar).is_err_and(|e| e.contains("version 4")));
    }
}
