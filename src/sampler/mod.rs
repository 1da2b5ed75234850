//! The sampler: finds each target's processes every interval and reports what they used.
//!
//! It runs on one OS thread of its own (reading `/proc` is blocking file IO) and sends
//! [`TargetReading`]s to whatever sink `main` wires in — the ledger. Targets due at the same
//! instant share one scan of the process table.

pub mod cgroup;
pub mod proc;
pub mod tree;

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::{Selector, TargetConfig};
use crate::identity::{Identity, IdentityBook};
use cgroup::CgroupFiles;
use proc::ProcTable;
use tree::TreeAccount;

/// What one target used since its previous reading, and its state now.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetReading {
    pub target: String,
    /// Whether the target's processes (or cgroup) were found.
    pub up: bool,
    /// CPU seconds used since the previous reading, reaped children included.
    pub cpu_seconds: f64,
    /// Storage bytes read since the previous reading.
    pub read_bytes: u64,
    /// Storage bytes written since the previous reading.
    pub written_bytes: u64,
    /// Resident memory of the whole tree now.
    pub rss_bytes: u64,
    /// Highest tree RSS seen (or the kernel's cgroup peak).
    pub peak_rss_bytes: u64,
    pub processes: u64,
    /// The target's selector, described; a stored baseline applies only to the same one.
    pub selector: String,
    /// What has been counted so far, stored with the deltas so a restart resumes from it.
    pub baseline: Option<Baseline>,
    /// `[[target]] silent_after`, in ms: the ledger judges silent telemetry with it.
    pub silent_after_ms: Option<i64>,
}

/// The accounting state a target resumes from after a restart of the sidecar.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    Tree(Vec<tree::Observed>),
    Cgroup(cgroup::CgroupReading),
}

/// Baselines read back from the store: target name → (selector description, baseline JSON).
pub type StoredBaselines = HashMap<String, (String, String)>;

/// State kept per target between samples.
struct TargetState {
    config: TargetConfig,
    account: TreeAccount,
    match_cache: HashMap<(i32, u64), bool>,
    cgroup: Option<CgroupState>,
    peak_rss: u64,
    next_due: Instant,
    /// Last reported reachability and reason, so a missing target is logged once, not every tick.
    last_up: Option<bool>,
    /// A cgroup reading from before a restart, used as the first "previous" reading.
    restored_cgroup: Option<cgroup::CgroupReading>,
    /// For `pid` targets: the process first seen under that pid.
    pinned: Option<Identity>,
}

struct CgroupState {
    files: CgroupFiles,
    previous: Option<cgroup::CgroupReading>,
}

/// Samples a set of targets. Owns all sampling state; driven by [`spawn`] or directly in tests.
pub struct Sampler {
    targets: Vec<TargetState>,
    ticks_per_second: f64,
    book: IdentityBook,
}

impl Sampler {
    pub fn new(targets: Vec<TargetConfig>) -> Sampler {
        Sampler::resume(targets, &StoredBaselines::new(), IdentityBook::default())
    }

    /// A sampler that continues from stored baselines where a target's selector is unchanged.
    pub fn resume(
        targets: Vec<TargetConfig>,
        stored: &StoredBaselines,
        book: IdentityBook,
    ) -> Sampler {
        let mut sampler = Sampler {
            targets: Vec::new(),
            ticks_per_second: procfs::ticks_per_second() as f64,
            book,
        };
        sampler.reconfigure(targets);
        for state in &mut sampler.targets {
            let Some((selector, json)) = stored.get(&state.config.name) else {
                continue;
            };
            if *selector != describe(&state.config) {
                continue;
            }
            match serde_json::from_str::<Baseline>(json) {
                Ok(Baseline::Tree(processes)) => state.account = TreeAccount::restore(processes),
                Ok(Baseline::Cgroup(reading)) => state.restored_cgroup = Some(reading),
                Err(error) => {
                    warn!(target_name = %state.config.name, %error, "stored baseline unreadable; counting the target afresh")
                }
            }
        }
        sampler
    }

    /// Applies a new target list. Targets whose name and selector did not change keep their
    /// accounting state, so nothing is counted twice across a reload.
    pub fn reconfigure(&mut self, targets: Vec<TargetConfig>) {
        let mut old: HashMap<String, TargetState> = self
            .targets
            .drain(..)
            .map(|state| (state.config.name.clone(), state))
            .collect();
        let now = Instant::now();
        for config in targets {
            let state = match old.remove(&config.name) {
                Some(mut state) if same_selector(&state.config, &config) => {
                    state.next_due = state.next_due.min(now + config.sample_interval);
                    state.config = config;
                    state
                }
                _ => TargetState {
                    cgroup: None,
                    account: TreeAccount::new(),
                    match_cache: HashMap::new(),
                    peak_rss: 0,
                    next_due: now,
                    last_up: None,
                    restored_cgroup: None,
                    pinned: None,
                    config,
                },
            };
            self.targets.push(state);
        }
    }

    /// When the next target is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.targets.iter().map(|t| t.next_due).min()
    }

    /// Samples every target due at `now`.
    pub fn sample_due(&mut self, now: Instant) -> Vec<TargetReading> {
        let due: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.targets[i].next_due <= now)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let needs_table = due
            .iter()
            .any(|&i| !matches!(self.targets[i].config.selector, Selector::Cgroup(_)));
        let table = if needs_table {
            ProcTable::scan()
        } else {
            ProcTable::default()
        };
        let ticks = self.ticks_per_second;
        let book = self.book.clone();
        due.into_iter()
            .map(|i| {
                let state = &mut self.targets[i];
                // Stay on the schedule; after a stall, resume from now rather than catching up.
                state.next_due += state.config.sample_interval;
                if state.next_due <= now {
                    state.next_due = now + state.config.sample_interval;
                }
                sample_target(state, &table, ticks, &book)
            })
            .collect()
    }
}

fn same_selector(a: &TargetConfig, b: &TargetConfig) -> bool {
    describe(a) == describe(b)
}

/// The selector and tree mode of a target, as one string stored with its baseline.
pub fn describe(target: &TargetConfig) -> String {
    format!(
        "{} children={}",
        target.selector.describe(),
        target.children
    )
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(0)
}

/// Checks the roots against the identity recorded at discovery and publishes them for the
/// enforcer. A `pid` target is the process first seen under that pid: a successor that got
/// the same pid is somebody else, so the target is reported down and never signalled.
fn pin_identity(
    state: &mut TargetState,
    roots: Vec<i32>,
    table: &ProcTable,
    book: &IdentityBook,
) -> Result<Vec<i32>, String> {
    let identities: Vec<Identity> = roots
        .iter()
        .filter_map(|pid| {
            table.rows.get(pid).map(|row| Identity {
                pid: *pid,
                start: row.start,
            })
        })
        .collect();
    if let Selector::Pid(pid) = state.config.selector {
        match (state.pinned, identities.first()) {
            (Some(pinned), Some(now)) if pinned.start != now.start => {
                return Err(format!(
                    "pid {pid} now belongs to another process (its start time changed); the configured process is gone"
                ));
            }
            (None, Some(now)) => state.pinned = Some(*now),
            _ => {}
        }
    }
    if !identities.is_empty()
        && let Ok(mut book) = book.write()
    {
        book.insert(state.config.name.clone(), identities);
    }
    Ok(roots)
}

fn sample_target(
    state: &mut TargetState,
    table: &ProcTable,
    ticks_per_second: f64,
    book: &IdentityBook,
) -> TargetReading {
    let name = state.config.name.clone();
    let selector = state.config.selector.clone();
    let (reading, problem) = match &selector {
        Selector::Cgroup(path) => sample_cgroup(state, path.clone()),
        selector => {
            let own = own_pid();
            let roots = match selector {
                Selector::Pid(pid) => Ok(vec![*pid]),
                Selector::PidFile(path) => proc::read_pid_file(path).map(|pid| vec![pid]),
                Selector::OwnProcess | Selector::ExecChildren => Ok(vec![own]),
                Selector::Match { exe, cmdline } => {
                    Ok(table.matching(exe.as_deref(), cmdline.as_ref(), &mut state.match_cache))
                }
                Selector::Cgroup(_) => Ok(Vec::new()),
            };
            let roots = roots.and_then(|roots| pin_identity(state, roots, table, book));
            match roots {
                Ok(roots) => {
                    let exec = matches!(selector, Selector::ExecChildren);
                    let members = table.tree(&roots, state.config.children);
                    // Only trees the enforcer walks are published. An empty tree (the root
                    // just died) keeps the last one: its orphans are what the enforcer still
                    // needs to find.
                    if state.config.children
                        && !members.is_empty()
                        && let Ok(mut book) = book.write()
                    {
                        book.set_members(
                            &name,
                            members
                                .iter()
                                .map(|row| crate::identity::Identity {
                                    pid: row.pid,
                                    start: row.start,
                                })
                                .collect(),
                        );
                    }
                    let mut observed = proc::observe(&members);
                    for process in &mut observed {
                        if !state.config.children {
                            // Only the selected processes: their reaped children are not theirs.
                            process.reaped_ticks = 0;
                        }
                        if exec && process.pid == own {
                            // In exec mode costmeter is the tree's reaper: what it reaped counts,
                            // its own CPU and I/O (the store) do not.
                            process.own_ticks = 0;
                            process.read_bytes = 0;
                            process.written_bytes = 0;
                        }
                    }
                    let increment = state.account.observe(&observed);
                    let agents: Vec<&&proc::ProcRow> =
                        members.iter().filter(|m| !(exec && m.pid == own)).collect();
                    let rss: u64 = agents.iter().map(|m| m.rss_bytes).sum();
                    state.peak_rss = state.peak_rss.max(rss);
                    let problem = agents
                        .is_empty()
                        .then(|| format!("no process found for {}", selector.describe()));
                    (
                        TargetReading {
                            target: name.clone(),
                            up: !agents.is_empty(),
                            cpu_seconds: increment.cpu_ticks as f64 / ticks_per_second,
                            read_bytes: increment.read_bytes,
                            written_bytes: increment.written_bytes,
                            rss_bytes: rss,
                            peak_rss_bytes: state.peak_rss,
                            processes: agents.len() as u64,
                            selector: describe(&state.config),
                            baseline: Some(Baseline::Tree(state.account.baseline())),
                            silent_after_ms: None,
                        },
                        problem,
                    )
                }
                Err(problem) => (down(&name, &state.config, state.peak_rss), Some(problem)),
            }
        }
    };
    let mut reading = reading;
    reading.silent_after_ms = state
        .config
        .silent_after
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    debug!(target_name = %name, up = reading.up, processes = reading.processes, "sampled");
    if state.last_up != Some(reading.up) {
        match (&problem, reading.up) {
            (_, true) => info!(target_name = %name, processes = reading.processes, "target found"),
            (Some(problem), false) => {
                warn!(target_name = %name, %problem, "target not found; reporting target_up 0 until it appears")
            }
            (None, false) => warn!(target_name = %name, "target not found"),
        }
        state.last_up = Some(reading.up);
    }
    reading
}

fn down(name: &str, config: &TargetConfig, peak: u64) -> TargetReading {
    TargetReading {
        selector: describe(config),
        baseline: None,
        target: name.to_string(),
        up: false,
        cpu_seconds: 0.0,
        read_bytes: 0,
        written_bytes: 0,
        rss_bytes: 0,
        peak_rss_bytes: peak,
        processes: 0,
        silent_after_ms: None,
    }
}

fn sample_cgroup(
    state: &mut TargetState,
    path: std::path::PathBuf,
) -> (TargetReading, Option<String>) {
    let name = state.config.name.clone();
    let restored = state.restored_cgroup.take();
    let cgroup = state.cgroup.get_or_insert_with(|| CgroupState {
        files: CgroupFiles::locate(&path, &cgroup::mounts()),
        previous: restored,
    });
    if !cgroup.files.exists() {
        // It may be created later: look again next time.
        state.cgroup = None;
        return (
            down(&name, &state.config, state.peak_rss),
            Some(format!(
                "cgroup '{}' not found under any cgroup mount",
                path.display()
            )),
        );
    }
    let Some(now) = cgroup.files.read() else {
        state.cgroup = None;
        return (
            down(&name, &state.config, state.peak_rss),
            Some(format!("cgroup '{}' vanished", path.display())),
        );
    };
    // Kernel counters only grow; a drop means the cgroup was recreated, so count it afresh.
    let grown = |now: f64, before: Option<f64>| match before {
        Some(before) if now >= before => now - before,
        _ => now,
    };
    let grown_u = |now: u64, before: Option<u64>| match before {
        Some(before) if now >= before => now - before,
        _ => now,
    };
    let before = cgroup.previous;
    let reading = TargetReading {
        target: name,
        up: true,
        cpu_seconds: grown(now.cpu_seconds, before.map(|b| b.cpu_seconds)),
        read_bytes: grown_u(now.read_bytes, before.map(|b| b.read_bytes)),
        written_bytes: grown_u(now.written_bytes, before.map(|b| b.written_bytes)),
        rss_bytes: now.memory_bytes,
        peak_rss_bytes: {
            state.peak_rss = state
                .peak_rss
                .max(now.memory_bytes)
                .max(now.memory_peak_bytes.unwrap_or(0));
            state.peak_rss
        },
        processes: now.processes,
        selector: describe(&state.config),
        baseline: Some(Baseline::Cgroup(now)),
        silent_after_ms: None,
    };
    cgroup.previous = Some(now);
    (reading, None)
}

/// Control messages for a running sampler thread.
enum Control {
    Reconfigure(Vec<TargetConfig>),
    /// Sample every target now; answer once the readings went to the sink.
    Flush(mpsc::Sender<()>),
}

/// Handle to the sampler thread; dropping it stops the thread.
pub struct SamplerHandle {
    control: mpsc::Sender<Control>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SamplerHandle {
    /// Hands a new target list to the running sampler (after a config reload).
    pub fn reconfigure(&self, targets: Vec<TargetConfig>) {
        // A closed channel means the thread is gone; shutdown reports that.
        let _ = self.control.send(Control::Reconfigure(targets));
    }

    /// Samples every target at once and waits until the readings are handed on, so the last
    /// moments of a process that just exited are counted before shutdown.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.control.send(Control::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        let (replacement, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.control, replacement));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `sampler` on its own thread, handing every reading to `sink`.
pub fn spawn(
    mut sampler: Sampler,
    mut sink: impl FnMut(TargetReading) + Send + 'static,
) -> std::io::Result<SamplerHandle> {
    let (control, inbox) = mpsc::channel::<Control>();
    let thread = thread::Builder::new()
        .name("costmeter-sampler".into())
        .spawn(move || {
            loop {
                let now = Instant::now();
                for reading in sampler.sample_due(now) {
                    sink(reading);
                }
                let wait = sampler.next_due().map_or(Duration::from_secs(3600), |due| {
                    due.saturating_duration_since(Instant::now())
                });
                match inbox.recv_timeout(wait) {
                    Ok(Control::Reconfigure(targets)) => sampler.reconfigure(targets),
                    Ok(Control::Flush(done)) => {
                        let now = Instant::now();
                        for state in &mut sampler.targets {
                            state.next_due = now;
                        }
                        for reading in sampler.sample_due(now) {
                            sink(reading);
                        }
                        let _ = done.send(());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
    Ok(SamplerHandle {
        control,
        thread: Some(thread),
    })
}
