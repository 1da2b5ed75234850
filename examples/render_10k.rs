//! `/metrics` render time at 10,000 series, side by side with a bare `prometheus-client`
//! registry of the same size encoded by the library alone, in one run.
//!
//! costmeter's registry gets 2,000 agent × model pairs (100 agents × 20 models) of usage: four
//! token kinds and one USD series each, 10,000 series, plus the rest of the taxonomy as it is
//! at start. The bare registry is one counter family with 10,000 label sets of the same shape.
//! Each is rendered ROUNDS times in both formats; medians and p99 are printed with the ratio.
//!
//! `cargo run --release --example render_10k [ROUNDS=200]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use costmeter::metrics::exposition::{Format, render};
use costmeter::metrics::{Metrics, SpendLabels, TokenKind, TokenLabels};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BareLabels {
    agent: String,
    model: String,
    kind: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn time(rounds: usize, mut work: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        bytes = work();
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), bytes)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let metrics = Metrics::new("haios", 1000, 5000);
    let kinds = [
        TokenKind::input,
        TokenKind::cache_read,
        TokenKind::cache_write,
        TokenKind::output,
    ];
    let bare_family = Family::<BareLabels, Counter>::default();
    for agent in 0..100 {
        for model in 0..20 {
            let (agent, model) = (format!("agent-{agent}"), format!("model-{model}"));
            for kind in kinds {
                metrics
                    .tokens_total
                    .get_or_create(&TokenLabels {
                        agent: agent.clone(),
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(1234, None, None);
            }
            metrics
                .usd_spend_total
                .get_or_create(&SpendLabels {
                    agent: agent.clone(),
                    model: model.clone(),
                })
                .0
                .inc_by(0.125, None, None);
            for kind in ["input", "cache_read", "cache_write", "output", "usd"] {
                bare_family
                    .get_or_create(&BareLabels {
                        agent: agent.clone(),
                        model: model.clone(),
                        kind: kind.to_string(),
                    })
                    .inc_by(1234);
            }
        }
    }
    let mut bare = Registry::default();
    bare.register("haios_tokens", "tokens", bare_family);
    let bare_text = || {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &bare);
        out.len()
    };
    let (bare_p50, bare_p99, bare_bytes) = time(rounds, bare_text);
    let (om_p50, om_p99, om_bytes) = time(rounds, || {
        render(metrics.registry(), Format::OpenMetrics).len()
    });
    let (text_p50, text_p99, text_bytes) = time(rounds, || {
        render(metrics.registry(), Format::PrometheusText).len()
    });
    println!("rounds: {rounds}");
    println!(
        "bare prometheus-client, 10,000 series: p50 {:.2} ms, p99 {:.2} ms ({bare_bytes} bytes)",
        ms(bare_p50),
        ms(bare_p99)
    );
    println!(
        "costmeter OpenMetrics: p50 {:.2} ms, p99 {:.2} ms ({om_bytes} bytes), ratio p50 {:.2}",
        ms(om_p50),
        ms(om_p99),
        ms(om_p50) / ms(bare_p50)
    );
    println!(
        "costmeter text 0.0.4: p50 {:.2} ms, p99 {:.2} ms ({text_bytes} bytes), ratio p50 {:.2}",
        ms(text_p50),
        ms(text_p99),
        ms(text_p50) / ms(bare_p50)
    );
}
