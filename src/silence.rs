//! Silent telemetry: a target whose processes keep working while no usage arrives from any
//! source. An agent whose exporter is misconfigured (the wrong endpoint, a logs-only export, a
//! rejected batch) spends at the provider with nothing counted here; its CPU says it is busy.
//! Pure: the clock comes in as an argument.

use std::collections::HashMap;

/// Busy: at least this share of a core, on average since the last usage arrived.
pub const BUSY_CORES: f64 = 0.05;

/// Per target, what it did since the last usage.
#[derive(Debug, Default)]
pub struct Silence {
    targets: HashMap<String, Quiet>,
}

#[derive(Debug, Clone, Copy)]
struct Quiet {
    since_ms: i64,
    cpu_seconds: f64,
}

impl Silence {
    /// Usage arrived (any source, any agent): every target's quiet starts over.
    pub fn usage(&mut self, now_ms: i64) {
        for quiet in self.targets.values_mut() {
            *quiet = Quiet {
                since_ms: now_ms,
                cpu_seconds: 0.0,
            };
        }
    }

    /// A reading of `target` with `cpu_seconds` used since the previous one. Returns how long
    /// it has been busy without usage, once that reaches `after_ms` (else 0): silent telemetry.
    pub fn reading(
        &mut self,
        target: &str,
        cpu_seconds: f64,
        after_ms: Option<i64>,
        now_ms: i64,
    ) -> f64 {
        let Some(after_ms) = after_ms else {
            self.targets.remove(target);
            return 0.0;
        };
        let quiet = self.targets.entry(target.to_string()).or_insert(Quiet {
            since_ms: now_ms,
            cpu_seconds: 0.0,
        });
        quiet.cpu_seconds += cpu_seconds.max(0.0);
        let quiet_ms = now_ms - quiet.since_ms;
        let busy = quiet_ms > 0 && quiet.cpu_seconds / (quiet_ms as f64 / 1000.0) >= BUSY_CORES;
        if quiet_ms >= after_ms && busy {
            quiet_ms as f64 / 1000.0
        } else {
            0.0
        }
    }

    pub fn forget(&mut self, target: &str) {
        self.targets.remove(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_428_000_000;
    const MINUTE: i64 = 60_000;

    #[test]
    fn a_busy_target_with_no_usage_for_the_set_time_is_silent_until_usage_arrives() {
        let mut silence = Silence::default();
        let after = Some(10 * MINUTE);
        // A core's tenth each second-long sample... counted per minute here.
        let mut now = NOW;
        assert_eq!(silence.reading("agent", 0.0, after, now), 0.0);
        for _ in 0..9 {
            now += MINUTE;
            assert_eq!(silence.reading("agent", 6.0, after, now), 0.0, "not yet");
        }
        now += MINUTE;
        assert_eq!(silence.reading("agent", 6.0, after, now), 600.0);
        silence.usage(now);
        now += MINUTE;
        assert_eq!(silence.reading("agent", 6.0, after, now), 0.0, "heard from");
    }

    #[test]
    fn an_idle_target_is_never_silent_and_the_check_can_be_off() {
        let mut silence = Silence::default();
        let after = Some(MINUTE);
        silence.reading("idle", 0.0, after, NOW);
        // 1 % of a core over an hour: waiting on the user, not spending.
        assert_eq!(silence.reading("idle", 36.0, after, NOW + 60 * MINUTE), 0.0);
        silence.reading("busy", 0.0, None, NOW);
        assert_eq!(
            silence.reading("busy", 3_600.0, None, NOW + 60 * MINUTE),
            0.0
        );
    }
}
