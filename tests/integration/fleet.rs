//! Fleet budgets on a real `redis-server`: several daemons share one budget's total, a crossing
//! on one stops the agents of the others, an outage loses nothing and counts nothing twice, and
//! proxied calls from many sidecars never spend past the fleet's limit at the provider.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, RedisServer, scratch_dir, wait_for};

const SETTLE: Duration = Duration::from_secs(30);

/// `[fleet]` and one fleet budget over every agent's USD this month.
fn fleet_config(redis: &RedisServer, instance: &str, limit: f64, on_exceed: &str) -> String {
    format!(
        "[fleet]\nredis_url = \"{}\"\ninstance = \"{instance}\"\n\
         [[budget]]\nname = \"team-usd\"\nresource = \"usd\"\nlimit = {limit}\nwindow = \"month\"\n\
         fleet = true\non_exceed = \"{on_exceed}\"\n[enforcement]\ngrace = \"5s\"\n",
        redis.url()
    )
}

fn usage(id: &str, cost: f64) -> Value {
    json!({"type": "llm_usage", "event_id": id, "agent": "coder", "model": "gpt-5",
           "input_tokens": 10, "output_tokens": 0, "cost_usd": cost})
}

/// Waits until `daemon` reports `used` for the fleet budget (exactly: the costs below are
/// multiples of 1/1024, which floating point sums without rounding).
#[track_caller]
fn wait_used(daemon: &Daemon, used: f64) -> Value {
    wait_for(
        &format!("the fleet budget's used to be {used}"),
        SETTLE,
        || {
            let budget = daemon.budget("team-usd");
            (budget["used"].as_f64() == Some(used)).then_some(budget)
        },
    )
}

/// The Redis key of this month's window of the fleet budget, once a push made it.
#[track_caller]
fn window_key(redis: &RedisServer) -> String {
    let keys: Vec<String> = wait_for("the fleet budget's window in Redis", SETTLE, || {
        let keys: Vec<String> = redis
            .keys("costmeter:b:team-usd:*")
            .into_iter()
            .filter(|k| !k.ends_with(":res"))
            .collect();
        (!keys.is_empty()).then_some(keys)
    });
    assert_eq!(keys.len(), 1, "one window: {keys:?}");
    keys[0].clone()
}

/// An exec daemon whose agent records SIGTERM in `marker` and exits.
fn exec_sidecar(config: &str, marker: &std::path::Path) -> Daemon {
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; while :; do sleep 0.05; done",
        marker.display()
    );
    let daemon = Daemon::builder()
        .config(config)
        .exec(&["sh", "-c", &script])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    daemon
}

#[test]
fn usage_on_three_sidecars_moves_one_total_and_a_crossing_on_one_stops_every_agent() {
    let scratch = scratch_dir();
    let Some(redis) = RedisServer::start(scratch.path()) else {
        return;
    };
    let markers: Vec<_> = (0..3)
        .map(|i| scratch.path().join(format!("agent-{i}-got-term")))
        .collect();
    let mut sidecars: Vec<Daemon> = (0..3)
        .map(|i| {
            exec_sidecar(
                &fleet_config(&redis, &format!("side-{i}"), 1.0, "soft_kill"),
                &markers[i],
            )
        })
        .collect();

    // 0.25 + 0.25 + 0.375: every sidecar sees the sum, not its own part.
    for (i, cost) in [0.25, 0.25, 0.375].into_iter().enumerate() {
        let answer = sidecars[i].post_events(&usage(&format!("spread-{i}"), cost));
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    for sidecar in &sidecars {
        let budget = wait_used(sidecar, 0.875);
        assert_eq!(budget["fleet"], true, "{budget}");
        assert_eq!(budget["state"], "ok", "{budget}");
        // Its series say whose total it is: the fleet's, the same on every sidecar.
        let used = sidecar.scrape().value(
            "haios_budget_used",
            &[("budget", "team-usd"), ("fleet", "costmeter")],
        );
        assert_eq!(used, Some(0.875));
    }
    let key = window_key(&redis);
    assert_eq!(redis.hash_number(&key, "used"), 0.875);
    // No agent was stopped below the limit.
    assert!(markers.iter().all(|m| !m.exists()));

    // Sidecar 0 crosses the limit: the agents of sidecars 1 and 2 stop too, each exec exits 86.
    sidecars[0].post_events(&usage("crossing", 0.25));
    for (i, sidecar) in sidecars.iter_mut().enumerate() {
        let status = sidecar.wait_exit(SETTLE);
        assert_eq!(status.code(), Some(86), "sidecar {i}: {status}");
        assert!(markers[i].exists(), "agent {i} got SIGTERM");
        assert!(
            sidecar.log_count("team-usd") > 0,
            "sidecar {i} names the fleet budget: {:?}",
            sidecar.logs()
        );
    }
    assert_eq!(redis.hash_number(&key, "used"), 1.125);
}

#[test]
fn redis_killed_mid_stream_then_restarted_counts_every_acknowledged_event_exactly_once() {
    let scratch = scratch_dir();
    let Some(mut redis) = RedisServer::start(scratch.path()) else {
        return;
    };
    let sidecars: Vec<Daemon> = (0..3)
        .map(|i| {
            Daemon::start(&fleet_config(
                &redis,
                &format!("side-{i}"),
                1_000_000.0,
                "alert",
            ))
        })
        .collect();
    let cost = |sidecar: usize, n: usize| ((sidecar + 1) * (n % 7 + 1)) as f64 / 1024.0;
    let post_round = |round: std::ops::Range<usize>| {
        std::thread::scope(|scope| {
            for (i, sidecar) in sidecars.iter().enumerate() {
                let round = round.clone();
                scope.spawn(move || {
                    for batch in round.collect::<Vec<_>>().chunks(10) {
                        let events: Vec<Value> = batch
                            .iter()
                            .map(|&n| usage(&format!("s{i}-e{n}"), cost(i, n)))
                            .collect();
                        let answer = sidecar.post_events(&Value::Array(events));
                        assert_eq!(answer["accepted"], batch.len(), "{answer}");
                    }
                });
            }
        });
    };
    let expected = |events: usize, sidecar: usize| (0..events).map(|n| cost(sidecar, n)).sum();
    let all = |events: usize| (0..3).map(|i| expected(events, i)).sum::<f64>();

    post_round(0..150);
    redis.kill();
    // Usage keeps being acknowledged while Redis is away.
    post_round(150..300);
    for sidecar in &sidecars {
        wait_for("readiness to name the fleet as degraded", SETTLE, || {
            let (status, _, body) = sidecar.get("/readyz", None);
            (status == 503 && body.contains("fleet")).then_some(())
        });
        sidecar.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 0.0);
        sidecar.wait_metric("haios_fleet_backlog_events", &[], SETTLE, |v| v > 0.0);
        // What this sidecar acknowledged still counts here.
        assert!(sidecar.budget("team-usd")["used"].as_f64().expect("used") > 0.0);
    }

    redis.restart();
    let total = all(300);
    for sidecar in &sidecars {
        wait_used(sidecar, total);
        sidecar.wait_metric("haios_fleet_backlog_events", &[], SETTLE, |v| v == 0.0);
        sidecar.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 1.0);
        sidecar.wait_ready();
    }
    let key = window_key(&redis);
    assert_eq!(redis.hash_number(&key, "used"), total);
    // Each sidecar's part is exactly what it acknowledged.
    let mut parts: Vec<f64> = {
        let mut conn = redis.client().get_connection().expect("connect");
        let fields: std::collections::HashMap<String, f64> = redis::cmd("HGETALL")
            .arg(&key)
            .query(&mut conn)
            .expect("HGETALL");
        fields
            .into_iter()
            .filter(|(field, _)| field.starts_with("u:"))
            .map(|(_, v)| v)
            .collect()
    };
    parts.sort_by(f64::total_cmp);
    let mut acknowledged: Vec<f64> = (0..3).map(|i| expected(300, i)).collect();
    acknowledged.sort_by(f64::total_cmp);
    assert_eq!(parts, acknowledged);
}

#[test]
fn a_sidecar_restarted_with_an_unpushed_backlog_pushes_it_once() {
    let scratch = scratch_dir();
    let Some(mut redis) = RedisServer::start(scratch.path()) else {
        return;
    };
    redis.kill();
    let daemon = Daemon::start(&fleet_config(&redis, "side-0", 1_000_000.0, "alert"));
    let events: Vec<Value> = (0..40)
        .map(|n| usage(&format!("backlog-{n}"), (n + 1) as f64 / 256.0))
        .collect();
    let total: f64 = (0..40).map(|n| (n + 1) as f64 / 256.0).sum();
    assert_eq!(daemon.post_events(&Value::Array(events))["accepted"], 40);
    daemon.wait_metric("haios_fleet_backlog_events", &[], SETTLE, |v| v == 40.0);
    // The sidecar stops with its backlog; Redis comes back while it is down.
    let daemon = daemon.restart(libc::SIGTERM);
    redis.restart();
    wait_used(&daemon, total);
    let key = window_key(&redis);
    wait_for("Redis to count the backlog", SETTLE, || {
        (redis.hash_number(&key, "used") == total).then_some(())
    });

    // Restarted again, it pushes only what is new.
    let daemon = daemon.restart(libc::SIGTERM);
    assert_eq!(daemon.post_events(&usage("after", 0.5))["accepted"], 1);
    wait_used(&daemon, total + 0.5);
    wait_for("Redis to count the new event", SETTLE, || {
        (redis.hash_number(&key, "used") == total + 0.5).then_some(())
    });
    daemon.wait_metric("haios_fleet_backlog_events", &[], SETTLE, |v| v == 0.0);
    assert_eq!(redis.hash_number(&key, "used"), total + 0.5);
}

const SPREAD_CALLS: &str = r#"
import concurrent.futures, json, sys
import anthropic

clients = [anthropic.Anthropic(base_url=base + "/proxy/anthropic", api_key="sk-test",
                               default_headers={"x-standin-events": "400", "x-costmeter-agent": "coder"})
           for base in sys.argv[1:]]

def call(i):
    try:
        clients[i % len(clients)].messages.create(
            model="claude-sonnet-4-5", max_tokens=100,
            messages=[{"role": "user", "content": "write call %d at length" % i}])
        return {"ok": True, "sidecar": i % len(clients)}
    except anthropic.APIStatusError as e:
        return {"ok": False, "status": e.status_code, "sidecar": i % len(clients),
                "budget": e.response.headers.get("x-costmeter-budget"), "message": str(e)}

with concurrent.futures.ThreadPoolExecutor(36) as pool:
    print(json.dumps(list(pool.map(call, range(36)))))
"#;

#[test]
fn concurrent_calls_through_three_sidecars_never_spend_past_the_fleet_budget() {
    let Some(python) = crate::util::sdk_python() else {
        return;
    };
    let scratch = scratch_dir();
    let Some(redis) = RedisServer::start(scratch.path()) else {
        return;
    };
    let standin = crate::util::StandIn::start(scratch.path(), None);
    let limit = 0.02;
    let sidecars: Vec<Daemon> = (0..3)
        .map(|i| {
            Daemon::start(&format!(
                "[proxy]\nenabled = true\n[[proxy.upstream]]\nname = \"anthropic\"\n\
                 provider = \"anthropic\"\nbase_url = \"{}\"\n{}",
                standin.url,
                fleet_config(&redis, &format!("side-{i}"), limit, "soft_kill")
            ))
        })
        .collect();
    let bases: Vec<String> = sidecars.iter().map(|s| s.url("")).collect();
    let args: Vec<&str> = bases.iter().map(String::as_str).collect();
    let results = crate::util::run_python(&python, "the spread calls", SPREAD_CALLS, &args);
    let results = results.as_array().expect("a list");
    let admitted = results.iter().filter(|r| r["ok"] == true).count();
    let refused: Vec<&Value> = results.iter().filter(|r| r["ok"] == false).collect();
    let calls = standin.calls();
    let spent = crate::admission::priced(&calls);
    eprintln!(
        "36 calls over 3 sidecars against a ${limit} fleet budget: {admitted} admitted, {} refused, ${spent:.6} billed",
        refused.len()
    );
    assert!(
        spent <= limit,
        "the provider billed ${spent} against a ${limit} fleet budget"
    );
    assert_eq!(
        calls.len(),
        admitted,
        "refused calls never reach the provider"
    );
    // At least as many as fit at their worst case were admitted, and not all 36 fit.
    crate::admission::assert_admitted_what_fits(admitted, limit);
    assert!(!refused.is_empty(), "36 calls do not all fit");
    for refusal in &refused {
        assert_eq!(refusal["status"], 402, "{refusal}");
        assert_eq!(refusal["budget"], "team-usd", "{refusal}");
    }
    // Every sidecar settles on what the provider billed, and the fleet holds nothing open.
    let key = window_key(&redis);
    for sidecar in &sidecars {
        wait_for("the sidecar to see the fleet's spend", SETTLE, || {
            let budget = sidecar.budget("team-usd");
            let used = budget["used"].as_f64()?;
            ((used - spent).abs() < 1e-9 && budget["reserved"] == 0.0).then_some(())
        });
    }
    wait_for("the fleet's reservations to end", SETTLE, || {
        let mut conn = redis.client().get_connection().ok()?;
        let open: u64 = redis::cmd("HLEN")
            .arg(format!("{key}:res"))
            .query(&mut conn)
            .ok()?;
        (open == 0).then_some(())
    });
    assert!((redis.hash_number(&key, "used") - spent).abs() < 1e-9);
}

#[test]
fn with_redis_away_one_sidecar_admits_within_its_share_and_a_refusing_one_admits_nothing() {
    let Some(python) = crate::util::sdk_python() else {
        return;
    };
    let scratch = scratch_dir();
    let Some(mut redis) = RedisServer::start(scratch.path()) else {
        return;
    };
    let standin = crate::util::StandIn::start(scratch.path(), None);
    let limit = 0.02;
    let sidecar = |instance: &str, policy: &str| {
        Daemon::start(&format!(
            "[proxy]\nenabled = true\n[[proxy.upstream]]\nname = \"anthropic\"\n\
             provider = \"anthropic\"\nbase_url = \"{}\"\n{}",
            standin.url,
            fleet_config(&redis, instance, limit, "soft_kill").replace(
                "[fleet]\n",
                &format!("[fleet]\non_fleet_unavailable = \"{policy}\"\n")
            )
        ))
    };
    let sharing = sidecar("sharing", "local");
    let refusing = sidecar("refusing", "refuse");
    refusing.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 1.0);
    // A push from the sharing sidecar after the refusing one is alive: both count as alive.
    let spent_before = 1.0 / 1024.0;
    sharing.post_events(&usage("before", spent_before));
    wait_used(&refusing, spent_before);

    redis.kill();
    for sidecar in [&sharing, &refusing] {
        sidecar.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 0.0);
    }
    let (code, answer) = crate::verbs::doctor(&sharing.url(""));
    assert_eq!(code, 3, "doctor is red: {answer}");
    let fleet = crate::verbs::finding(&answer, "fleet");
    assert_eq!(fleet["status"], "red", "{answer}");
    assert!(
        fleet["fix"]
            .as_str()
            .is_some_and(|f| f.contains("redis_url")),
        "{answer}"
    );
    let results = crate::util::run_python(
        &python,
        "calls with Redis away",
        SPREAD_CALLS,
        &[&sharing.url(""), &refusing.url("")],
    );
    let results = results.as_array().expect("a list");
    let through = |sidecar: u64, ok: bool| {
        results
            .iter()
            .filter(|r| r["sidecar"] == sidecar && r["ok"] == ok)
            .count()
    };
    let spent = crate::admission::priced(&standin.calls());
    // The share: (limit − what the fleet had used and held) ÷ the sidecars alive.
    let share = (limit - spent_before) / 2.0;
    eprintln!(
        "Redis away: the sharing sidecar admitted {} of 18 (${spent:.6} billed, share ${share:.6}), the refusing one {}",
        through(0, true),
        through(1, true)
    );
    assert_eq!(through(1, true), 0, "the refusing sidecar admits nothing");
    assert!(spent <= share, "${spent} billed past the share ${share}");
    // The sharing sidecar admits what fits its share.
    crate::admission::assert_admitted_what_fits(through(0, true), share);
    for refusal in results.iter().filter(|r| r["ok"] == false) {
        assert_eq!(refusal["status"], 402, "{refusal}");
        assert_eq!(refusal["budget"], "team-usd", "{refusal}");
        // Each says why: the share, or the policy that refuses while Redis is away.
        let says = if refusal["sidecar"] == 0 {
            "admits only within its share"
        } else {
            "on_fleet_unavailable = \"refuse\""
        };
        let message = refusal["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{refusal}");
    }

    // Redis back: the fleet counts what the sharing sidecar spent meanwhile, exactly once.
    redis.restart();
    let key = window_key(&redis);
    wait_for("the outage's spend to reach Redis", SETTLE, || {
        ((redis.hash_number(&key, "used") - (spent_before + spent)).abs() < 1e-9).then_some(())
    });
}

#[test]
fn over_rediss_with_a_password_file_two_sidecars_share_one_total_and_a_wrong_password_is_degraded()
{
    let scratch = scratch_dir();
    let ca = crate::util::test_ca();
    let Some(redis) = RedisServer::start_tls(scratch.path(), &ca, "s3cret-fleet") else {
        return;
    };
    let sidecar = |password: &str| {
        let file = scratch
            .path()
            .join(format!("redis-password-{}", crate::util::free_port()));
        std::fs::write(&file, format!("{password}\n")).expect("write the password file");
        Daemon::start(&format!(
            "[tls]\nca_file = \"{}\"\n{}",
            ca.ca.display(),
            fleet_config(&redis, "tls", 10.0, "alert").replace(
                "[fleet]\n",
                &format!("[fleet]\npassword_file = \"{}\"\n", file.display())
            )
        ))
    };
    let one = sidecar("s3cret-fleet");
    let two = sidecar("s3cret-fleet");
    one.post_events(&usage("tls-1", 0.5));
    two.post_events(&usage("tls-2", 0.25));
    for daemon in [&one, &two] {
        wait_used(daemon, 0.75);
        daemon.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 1.0);
    }
    let wrong = sidecar("not-the-password");
    wrong.wait_metric("haios_fleet_up", &[], SETTLE, |v| v == 0.0);
    let (status, _, ready) = wrong.get("/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("fleet"), "{ready}");
    assert!(
        !ready.contains("not-the-password")
            && !wrong.logs().iter().any(|l| l.contains("not-the-password")),
        "the password is never shown"
    );
}
