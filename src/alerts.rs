//! Alertmanager's webhook payload (version 4) and what costmeter does about each alert: a
//! firing alert labelled `costmeter_action="soft_kill"` and `target="…"` stops that target if
//! it is one of this sidecar's; every other alert is ignored with the reason. Pure, so the
//! HTTP handler only carries the orders out.

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

/// What becomes of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub alert: String,
    pub target: Option<String>,
    pub fingerprint: Option<String>,
    /// `Ok(order)` to stop the target, `Err(reason)` when the alert is ignored.
    pub action: Result<KillOrder, String>,
}

/// Reads a payload and decides for each alert; the error says why the body is not one.
pub fn decide(body: &[u8], targets: &[String]) -> Result<Vec<Decision>, String> {
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
            let action = match (&alert.status[..], wants_kill, &target) {
                ("firing", true, Some(target)) if targets.contains(target) => Ok(KillOrder {
                    target: target.clone(),
                    reason: format!("alert '{name}'"),
                }),
                ("firing", true, Some(target)) => {
                    Err(format!("target '{target}' is not one of this sidecar's"))
                }
                ("firing", true, None) => Err("no target label".to_string()),
                ("firing", false, _) => Err("no costmeter_action=\"soft_kill\" label".to_string()),
                _ => Err(format!("status is {}", alert.status)),
            };
            Decision {
                alert: name,
                target,
                fingerprint: alert.fingerprint,
                action,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_firing_soft_kill_alerts_for_own_targets_become_orders() {
        let body = br#"{"version":"4","alerts":[
            {"status":"firing","labels":{"alertname":"Over","costmeter_action":"soft_kill","target":"agent"},"fingerprint":"f1"},
            {"status":"firing","labels":{"alertname":"Other","costmeter_action":"soft_kill","target":"elsewhere"}},
            {"status":"resolved","labels":{"alertname":"Over","costmeter_action":"soft_kill","target":"agent"}},
            {"status":"firing","labels":{"alertname":"Info"}}
        ]}"#;
        let decisions = decide(body, &["agent".to_string()]).expect("parses");
        assert_eq!(decisions.len(), 4);
        assert_eq!(
            decisions[0].action,
            Ok(KillOrder {
                target: "agent".into(),
                reason: "alert 'Over'".into()
            })
        );
        assert_eq!(
            decisions[1].action,
            Err("target 'elsewhere' is not one of this sidecar's".into())
        );
        assert_eq!(decisions[2].action, Err("status is resolved".into()));
        assert!(decisions[3].action.is_err());
        assert!(decide(b"[1,2]", &[]).is_err_and(|e| e.contains("version 4")));
    }
}
