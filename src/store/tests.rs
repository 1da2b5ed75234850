//! The store on a real SQLite file: exactly once, compaction, foreign files.

use super::*;
use crate::ingest::event::validate;
use crate::pricing::Confidence;

fn usage(id: &str, input: u64) -> PricedEvent {
    let value = serde_json::json!({
        "type": "llm_usage", "event_id": id, "agent": "a", "model": "m",
        "input_tokens": input, "output_tokens": 1, "cache_read_tokens": 1
    });
    PricedEvent {
        event: validate(&value, 0).expect("valid"),
        source: "http",
        cost: Some(Cost {
            usd: 0.5,
            confidence: Confidence::Priced,
        }),
    }
}

#[test]
fn duplicates_are_refused_within_and_across_batches_and_reopens() {
    let dir = tempfile_dir();
    let path = dir.join("s.db");
    let mut store = Store::open(&path).expect("open");
    assert_eq!(
        store
            .commit(
                &[usage("e1", 10), usage("e1", 10), usage("e2", 5)],
                &[],
                &[],
                0
            )
            .expect("commit"),
        vec![true, false, true]
    );
    drop(store);
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(
        store
            .commit(&[usage("e2", 5)], &[], &[], 0)
            .expect("commit"),
        vec![false]
    );
    let totals = store.totals().expect("totals");
    assert_eq!(totals.usage.len(), 1);
    assert_eq!(totals.usage[0].uncached_input_tokens, 13);
    assert_eq!(totals.usage[0].cache_read_tokens, 2);
    assert!((totals.usage[0].cost_usd - 1.0).abs() < 1e-12);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn compaction_keeps_totals() {
    let dir = tempfile_dir();
    let mut store = Store::open(&dir.join("s.db")).expect("open");
    store
        .commit(
            &[usage("e1", 10), usage("e2", 20)],
            &[ResourceRow {
                ts_ms: 5,
                target: "t".into(),
                cpu_seconds: 1.5,
                read_bytes: 1,
                written_bytes: 2,
                rss_bytes: 3,
                peak_rss_bytes: 4,
                baseline: None,
            }],
            &[],
            0,
        )
        .expect("commit");
    let before = store.totals().expect("totals");
    assert_eq!(store.compact(86_400_000).expect("compact"), 3);
    assert_eq!(store.event_count().expect("count"), 0);
    let after = store.totals().expect("totals");
    assert_eq!(before.usage, after.usage);
    assert_eq!(before.resources, after.resources);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_foreign_database_is_refused_untouched() {
    let dir = tempfile_dir();
    let path = dir.join("other.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch("CREATE TABLE notes (x TEXT)")
        .expect("create");
    drop(conn);
    let error = Store::open(&path).err().expect("refused");
    assert!(
        error.to_string().contains("is not a costmeter store"),
        "{error}"
    );
    std::fs::write(
        dir.join("garbage.db"),
        b"this is not sqlite at all, just text......",
    )
    .expect("write");
    assert!(Store::open(&dir.join("garbage.db")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "costmeter-store-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}
