//! Windows, states and transitions with an injected clock.

use super::engine::fmt_ms;
use super::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-23T10:00:00Z, a Monday.
const NOW: i64 = 1_795_428_000_000;

fn spec(name: &str, resource: Resource, limit: f64, window: Window) -> BudgetSpec {
    BudgetSpec {
        name: name.into(),
        resource,
        limit,
        window,
        scope: Scope::All,
        warn_at: 0.9,
        on_exceed: OnExceed::SoftKill,
        fleet: false,
    }
}

fn usd(amount: f64, ts_ms: i64) -> Charge<'static> {
    Charge {
        resource: Resource::Usd,
        amount,
        ts_ms,
        agent: Some("coder"),
        target: None,
    }
}

fn kinds(transitions: &[Transition]) -> Vec<TransitionKind> {
    transitions.iter().map(|t| t.kind).collect()
}

#[test]
fn a_back_dated_charge_lands_at_receipt() {
    let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 10.0, Window::Day)], NOW);
    // $20,000 stamped 1970: charged now, so today's budget sees it.
    budgets.charge(&usd(20_000.0, charge_time(0, NOW)), NOW);
    assert_eq!(
        kinds(&budgets.evaluate(NOW)).last(),
        Some(&TransitionKind::Exceeded)
    );
    assert_eq!(
        charge_time(NOW - 60_000, NOW),
        NOW - 60_000,
        "a late report keeps its ts"
    );
    assert_eq!(charge_time(NOW + DAY, NOW), NOW, "the future is now");
}

#[test]
fn exceeded_hard_budgets_hold_their_targets_and_soft_ones_do_not() {
    let mut cpu = spec("cpu", Resource::CpuSeconds, 1.0, Window::Lifetime);
    cpu.scope = Scope::Target("builder".into());
    let mut soft = spec("soft", Resource::Usd, 1.0, Window::Lifetime);
    soft.on_exceed = OnExceed::Alert;
    let hard = spec("hard", Resource::Usd, 5.0, Window::Lifetime);
    let mut budgets = Budgets::new(vec![cpu, soft, hard], NOW);
    let enforceable = vec!["agent".to_string(), "builder".to_string()];
    budgets.charge(&usd(2.0, NOW), NOW);
    budgets.evaluate(NOW);
    assert!(
        holds(&budgets.status(NOW), &enforceable).is_empty(),
        "only the soft budget is over"
    );
    budgets.charge(
        &Charge {
            resource: Resource::CpuSeconds,
            amount: 3.0,
            ts_ms: NOW,
            agent: None,
            target: Some("builder"),
        },
        NOW,
    );
    budgets.evaluate(NOW);
    let held = holds(&budgets.status(NOW), &enforceable);
    assert_eq!(
        held,
        vec![Hold {
            target: "builder".into(),
            budget: "cpu".into()
        }]
    );
    budgets.charge(&usd(4.0, NOW), NOW);
    // No transition is pending, yet the state holds: it is read, not announced.
    budgets.evaluate(NOW);
    assert!(budgets.evaluate(NOW).is_empty());
    let targets: Vec<String> = holds(&budgets.status(NOW), &enforceable)
        .into_iter()
        .map(|h| h.target)
        .collect();
    assert_eq!(targets, vec!["builder".to_string(), "agent".to_string()]);
}

#[test]
fn a_hold_ends_with_its_window() {
    let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 1.0, Window::Day)], NOW);
    let enforceable = vec!["agent".to_string()];
    budgets.charge(&usd(2.0, NOW), NOW);
    budgets.evaluate(NOW);
    assert_eq!(holds(&budgets.status(NOW), &enforceable).len(), 1);
    let tomorrow = NOW + DAY;
    budgets.evaluate(tomorrow);
    assert!(holds(&budgets.status(tomorrow), &enforceable).is_empty());
}

#[test]
fn an_excess_is_described_with_its_amounts_and_reset() {
    let mut budgets = Budgets::new(
        vec![
            spec("tokens", Resource::Tokens, 100_000.0, Window::Lifetime),
            spec("daily", Resource::Usd, 1.0, Window::Day),
        ],
        NOW,
    );
    for (resource, amount) in [(Resource::Tokens, 343_628.0), (Resource::Usd, 1.5)] {
        budgets.charge(
            &Charge {
                resource,
                amount,
                ts_ms: NOW,
                agent: None,
                target: None,
            },
            NOW,
        );
    }
    budgets.evaluate(NOW);
    let status = budgets.status(NOW);
    assert_eq!(
        status[0].describe_excess(),
        "budget 'tokens' is exceeded: 343628 tokens used of 100000 tokens; a lifetime budget does not reset: raise its limit"
    );
    assert_eq!(
        status[1].describe_excess(),
        "budget 'daily' is exceeded: $1.50 used of $1.00; the day window resets at 2026-11-24T00:00:00Z"
    );
}

#[test]
fn each_transition_fires_once() {
    let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
    budgets.charge(&usd(8.0, NOW), NOW);
    assert!(budgets.evaluate(NOW).is_empty());
    budgets.charge(&usd(1.0, NOW), NOW);
    assert_eq!(kinds(&budgets.evaluate(NOW)), vec![TransitionKind::Warning]);
    assert!(budgets.evaluate(NOW).is_empty(), "no repeat");
    budgets.charge(&usd(1.0, NOW), NOW);
    assert_eq!(
        kinds(&budgets.evaluate(NOW)),
        vec![TransitionKind::Exceeded]
    );
    budgets.charge(&usd(5.0, NOW), NOW);
    assert!(
        budgets.evaluate(NOW).is_empty(),
        "still exceeded, nothing new"
    );
}

#[test]
fn a_jump_past_the_limit_announces_warning_then_exceeded() {
    let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
    budgets.charge(&usd(50.0, NOW), NOW);
    assert_eq!(
        kinds(&budgets.evaluate(NOW)),
        vec![TransitionKind::Warning, TransitionKind::Exceeded]
    );
}

#[test]
fn a_calendar_day_resets_at_midnight_utc() {
    let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 10.0, Window::Day)], NOW);
    budgets.charge(&usd(12.0, NOW), NOW);
    assert_eq!(
        kinds(&budgets.evaluate(NOW)).last(),
        Some(&TransitionKind::Exceeded)
    );
    let status = &budgets.status(NOW)[0];
    assert_eq!(status.window_end.as_deref(), Some("2026-11-24T00:00:00Z"));
    let tomorrow = NOW + 14 * HOUR;
    assert_eq!(
        kinds(&budgets.evaluate(tomorrow)),
        vec![TransitionKind::Reset]
    );
    assert_eq!(budgets.status(tomorrow)[0].used, 0.0);
    // Usage dated yesterday does not charge today's window.
    budgets.charge(&usd(12.0, NOW), tomorrow);
    assert!(budgets.evaluate(tomorrow).is_empty());
}

#[test]
fn weeks_start_on_monday_and_months_on_the_first() {
    let (start, end) = Window::Week.calendar_bounds(NOW + 3 * DAY).expect("bounds");
    assert_eq!(fmt_ms(start).as_deref(), Some("2026-11-23T00:00:00Z"));
    assert_eq!(fmt_ms(end).as_deref(), Some("2026-11-30T00:00:00Z"));
    let (start, end) = Window::Month.calendar_bounds(NOW).expect("bounds");
    assert_eq!(fmt_ms(start).as_deref(), Some("2026-11-01T00:00:00Z"));
    assert_eq!(fmt_ms(end).as_deref(), Some("2026-12-01T00:00:00Z"));
}

#[test]
fn a_rolling_window_forgets_old_usage() {
    let window = Window::Rolling(Duration::from_secs(3600));
    let mut budgets = Budgets::new(vec![spec("hourly", Resource::Usd, 10.0, window)], NOW);
    budgets.charge(&usd(6.0, NOW), NOW);
    budgets.charge(&usd(5.0, NOW + HOUR / 2), NOW + HOUR / 2);
    assert_eq!(
        kinds(&budgets.evaluate(NOW + HOUR / 2)).last(),
        Some(&TransitionKind::Exceeded)
    );
    // An hour after the first charge only the second one is left.
    let later = NOW + HOUR + 60_000;
    assert_eq!(kinds(&budgets.evaluate(later)), vec![TransitionKind::Reset]);
    assert_eq!(budgets.status(later)[0].used, 5.0);
    // Usage older than the window never counts.
    budgets.charge(&usd(100.0, NOW - 2 * HOUR), later);
    assert_eq!(budgets.status(later)[0].used, 5.0);
}

#[test]
fn scopes_pick_their_agent_or_target() {
    let mut coder = spec("coder", Resource::Usd, 1.0, Window::Lifetime);
    coder.scope = Scope::Agent("coder".into());
    let mut other = spec("other", Resource::Usd, 1.0, Window::Lifetime);
    other.scope = Scope::Agent("reviewer".into());
    let mut cpu = spec("cpu", Resource::CpuSeconds, 1.0, Window::Lifetime);
    cpu.scope = Scope::Target("agent".into());
    let mut budgets = Budgets::new(vec![coder, other, cpu], NOW);
    budgets.charge(&usd(2.0, NOW), NOW);
    budgets.charge(
        &Charge {
            resource: Resource::CpuSeconds,
            amount: 2.0,
            ts_ms: NOW,
            agent: None,
            target: Some("elsewhere"),
        },
        NOW,
    );
    let fired: Vec<usize> = budgets.evaluate(NOW).iter().map(|t| t.budget).collect();
    assert_eq!(fired, vec![0, 0]);
}

#[test]
fn memory_compares_the_current_rss_and_comes_back_down() {
    let mut budgets = Budgets::new(
        vec![spec("mem", Resource::MemBytes, 100.0, Window::Lifetime)],
        NOW,
    );
    budgets.set_memory("a", 60.0);
    budgets.set_memory("b", 50.0);
    assert_eq!(
        kinds(&budgets.evaluate(NOW)).last(),
        Some(&TransitionKind::Exceeded)
    );
    budgets.set_memory("a", 10.0);
    assert_eq!(kinds(&budgets.evaluate(NOW)), vec![TransitionKind::Reset]);
}

#[test]
fn a_restored_state_does_not_fire_again() {
    let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
    budgets.restore_state("b", 0, State::Exceeded);
    budgets.charge(&usd(20.0, NOW), NOW);
    assert!(budgets.evaluate(NOW).is_empty());
}

#[test]
fn projection_appears_only_while_spending_below_the_limit() {
    let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
    assert_eq!(budgets.status(NOW)[0].projected_exhaustion_seconds, None);
    budgets.charge(&usd(1.0, NOW - 60_000), NOW);
    budgets.evaluate(NOW);
    let projected = budgets.status(NOW)[0]
        .projected_exhaustion_seconds
        .expect("spending");
    // $1 in the last five minutes, $9 left: 45 minutes at that pace.
    assert!((projected - 2700.0).abs() < 1.0, "{projected}");
}

#[test]
fn the_burn_rate_history_stays_small_whatever_the_event_rate() {
    let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 1e9, Window::Lifetime)], NOW);
    for i in 0..100_000 {
        budgets.charge(&usd(0.001, NOW - 120_000 + i % 3_000), NOW);
    }
    assert_eq!(budgets.tallies[0].recent.len(), 3, "one entry per second");
    budgets.evaluate(NOW);
    let projected = budgets.status(NOW)[0]
        .projected_exhaustion_seconds
        .expect("spending");
    // $100 in the last five minutes: a third of a dollar a second.
    assert!((projected - (1e9 - 100.0) * 3.0).abs() < 1e3, "{projected}");
}

fn fleet_spec(limit: f64) -> BudgetSpec {
    BudgetSpec {
        fleet: true,
        ..spec("team", Resource::Usd, limit, Window::Month)
    }
}

/// 2026-11-01T00:00:00Z: the month `NOW` falls in.
const NOVEMBER: i64 = 1_793_491_200_000;

fn fleet_total(window_start_ms: i64, used: f64, reserved: f64, mine: Option<f64>) -> FleetTotal {
    FleetTotal {
        window_start_ms,
        used,
        reserved,
        mine,
    }
}

fn used_of(budgets: &Budgets) -> f64 {
    budgets.status(NOW)[0].used
}

#[test]
fn a_fleet_budget_counts_the_fleets_total_and_this_sidecars_unpushed_part_once() {
    let mut budgets = Budgets::new(vec![fleet_spec(10.0)], NOW);
    budgets.charge(&usd(1.0, NOW), NOW);
    assert_eq!(used_of(&budgets), 1.0, "before Redis answers: local only");
    // Redis holds 4 (1 of it ours); then 0.5 more is charged here, not pushed yet.
    budgets.set_fleet("team", fleet_total(NOVEMBER, 4.0, 0.0, Some(1.0)));
    assert_eq!(used_of(&budgets), 4.0);
    budgets.charge(&usd(0.5, NOW), NOW);
    assert_eq!(used_of(&budgets), 4.5);
    // Another store's newer total carries no part of ours: ours stays what we last heard.
    budgets.set_fleet("team", fleet_total(NOVEMBER, 6.0, 0.0, None));
    assert_eq!(used_of(&budgets), 6.5);
    // Our push of the 0.5 lands: the fleet holds it now, counted once.
    budgets.set_fleet("team", fleet_total(NOVEMBER, 6.5, 0.0, Some(1.5)));
    assert_eq!(used_of(&budgets), 6.5);
    // An older message arriving late moves nothing back.
    budgets.set_fleet("team", fleet_total(NOVEMBER, 5.0, 0.0, Some(1.0)));
    assert_eq!(used_of(&budgets), 6.5);
    // Nor does a late message about last month's window.
    budgets.set_fleet(
        "team",
        fleet_total(NOVEMBER - 30 * DAY, 9.9, 0.0, Some(0.0)),
    );
    assert_eq!(used_of(&budgets), 6.5);
    // Crossing by the fleet's usage alone exceeds here too.
    budgets.set_fleet("team", fleet_total(NOVEMBER, 10.5, 0.0, Some(1.5)));
    assert_eq!(
        kinds(&budgets.evaluate(NOW)).last(),
        Some(&TransitionKind::Exceeded)
    );
}

#[test]
fn with_redis_away_admission_gets_a_share_of_what_the_fleet_had_left_or_nothing() {
    let mut budgets = Budgets::new(vec![fleet_spec(10.0)], NOW);
    budgets.charge(&usd(1.0, NOW), NOW);
    budgets.set_fleet("team", fleet_total(NOVEMBER, 4.0, 1.0, Some(1.0)));
    assert_eq!(budgets.room(0), 6.0, "up: the limit less the fleet's usage");
    budgets.set_reach(FleetReach::DownShare { instances: 4 });
    // (10 − 4 used − 1 reserved) ÷ 4 sidecars.
    assert_eq!(budgets.room(0), 1.25);
    // What this sidecar spent since comes out of its share.
    budgets.charge(&usd(0.75, NOW), NOW);
    assert_eq!(budgets.room(0), 0.5);
    budgets.set_reach(FleetReach::DownRefuse);
    assert_eq!(budgets.room(0), 0.0);
    budgets.set_reach(FleetReach::Up);
    assert_eq!(budgets.room(0), 10.0 - 4.75);
}
