//! Enforcement: the soft-kill of a target's process tree.
//!
//! `signal` (and SIGCONT, so a stopped process can act on it) goes to every process of the
//! tree, then after `grace` SIGKILL goes to whatever is left, including descendants born
//! meanwhile. Signals travel through pidfds: a pidfd opened for a pid whose start time matches
//! what was seen refers to that very process, and `pidfd_send_signal` refuses a process that
//! has exited, so a recycled pid is never hit. A target root whose start time differs from the
//! one recorded at discovery is refused outright. pid 1, costmeter and its ancestors are never
//! signalled. Runs on its own thread; every action is reported back to the ledger.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;

pub use crate::identity::{Book, Identity, IdentityBook};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::{EnforcementConfig, Selector, TargetConfig};
use crate::sampler::cgroup::{CgroupFiles, mounts};
use crate::sampler::proc::ProcTable;

/// An order to stop a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillOrder {
    pub target: String,
    /// Why: a budget name or an alert name.
    pub reason: String,
}

/// What was done for one order.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    pub target: String,
    pub reason: String,
    pub signal: String,
    /// Processes the polite signal reached.
    pub signalled: usize,
    /// Processes still there after the grace and SIGKILLed.
    pub killed: usize,
    /// Processes left alone, and why.
    pub refused: Vec<String>,
    pub dry_run: bool,
}

pub enum EnforcerInput {
    Kill(KillOrder),
    Targets(Vec<TargetConfig>),
}

pub struct Enforcer {
    config: EnforcementConfig,
    targets: HashMap<String, TargetConfig>,
    book: IdentityBook,
    /// pid 1, costmeter and its ancestors.
    protected: HashSet<i32>,
}

/// pid 1, this process and every ancestor of it.
fn protected_pids() -> HashSet<i32> {
    let mut protected = HashSet::from([1, own_pid()]);
    let mut pid = own_pid();
    for _ in 0..64 {
        let Some(parent) = procfs::process::Process::new(pid)
            .ok()
            .and_then(|p| p.stat().ok())
            .map(|s| s.ppid)
        else {
            break;
        };
        if parent <= 1 || !protected.insert(parent) {
            break;
        }
        pid = parent;
    }
    protected
}

pub fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(0)
}

fn start_of(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

/// An open handle on one process, proven to be the one that was seen.
struct Handle {
    identity: Identity,
    pidfd: OwnedFd,
}

impl Handle {
    /// Opens a pidfd and checks the start time after opening: if it matches, the pidfd
    /// refers to the process that was seen, not to a successor with a recycled pid.
    fn open(identity: Identity) -> Result<Handle, String> {
        let pid = Pid::from_raw(identity.pid)
            .ok_or_else(|| format!("pid {} is not valid", identity.pid))?;
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| {
            format!(
                "pid {}: cannot open a pidfd ({e}); not signalled",
                identity.pid
            )
        })?;
        match start_of(identity.pid) {
            Some(start) if start == identity.start => Ok(Handle { identity, pidfd }),
            Some(_) => Err(format!(
                "pid {} now belongs to another process (start time changed); not signalled",
                identity.pid
            )),
            None => Err(format!(
                "pid {} exited before it was signalled",
                identity.pid
            )),
        }
    }

    fn signal(&self, signal: Signal) -> bool {
        rustix::process::pidfd_send_signal(self.pidfd.as_fd(), signal).is_ok()
    }
}

impl Enforcer {
    pub fn new(
        config: EnforcementConfig,
        targets: &[TargetConfig],
        book: IdentityBook,
    ) -> Enforcer {
        Enforcer {
            config,
            targets: targets
                .iter()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
            book,
            protected: protected_pids(),
        }
    }

    /// The target's roots, found without a scan of /proc: the recorded identities that still
    /// hold, the direct children of costmeter in exec mode, the pids of a cgroup.
    fn roots(&self, target: &TargetConfig) -> Vec<Identity> {
        let identify = |pid: i32| start_of(pid).map(|start| Identity { pid, start });
        match &target.selector {
            Selector::ExecChildren => {
                let own = own_pid();
                std::fs::read_to_string(format!("/proc/{own}/task/{own}/children"))
                    .map(|text| {
                        text.split_whitespace()
                            .filter_map(|p| p.parse().ok())
                            .filter_map(identify)
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Selector::Cgroup(path) => CgroupFiles::locate(path, &mounts())
                .pids()
                .into_iter()
                .filter_map(identify)
                .collect(),
            _ => self
                .book
                .read()
                .map(|book| book.get(&target.name).cloned().unwrap_or_default())
                .unwrap_or_default()
                .into_iter()
                .filter(|root| start_of(root.pid) == Some(root.start))
                .collect(),
        }
    }

    /// The target's processes now, each with the identity to check before signalling.
    fn members(&self, target: &TargetConfig, refused: &mut Vec<String>) -> Vec<Identity> {
        let table = ProcTable::scan();
        let identity = |pid: i32| {
            table.rows.get(&pid).map(|row| Identity {
                pid,
                start: row.start,
            })
        };
        let mut members: Vec<Identity> = match &target.selector {
            Selector::Cgroup(path) => {
                let files = CgroupFiles::locate(path, &mounts());
                files.pids().into_iter().filter_map(identity).collect()
            }
            Selector::ExecChildren => table
                .tree(&[own_pid()], true)
                .into_iter()
                .filter(|row| row.pid != own_pid())
                .map(|row| Identity {
                    pid: row.pid,
                    start: row.start,
                })
                .collect(),
            _ => {
                let recorded = self
                    .book
                    .read()
                    .map(|book| book.get(&target.name).cloned().unwrap_or_default())
                    .unwrap_or_default();
                let mut roots = Vec::new();
                for root in recorded {
                    match table.rows.get(&root.pid) {
                        Some(row) if row.start == root.start => roots.push(root.pid),
                        Some(_) => refused.push(format!(
                            "pid {} now belongs to another process (start time changed since discovery); not signalled",
                            root.pid
                        )),
                        None => {}
                    }
                }
                let mut members: Vec<Identity> = table
                    .tree(&roots, target.children)
                    .into_iter()
                    .map(|row| Identity {
                        pid: row.pid,
                        start: row.start,
                    })
                    .collect();
                if target.children {
                    // Members of the last sample that were orphaned since, if still the same
                    // processes (same start time).
                    let seen: HashSet<i32> = members.iter().map(|m| m.pid).collect();
                    let sampled: Vec<Identity> = self
                        .book
                        .read()
                        .map(|book| book.members(&target.name).to_vec())
                        .unwrap_or_default();
                    members.extend(sampled.into_iter().filter(|m| {
                        !seen.contains(&m.pid)
                            && table
                                .rows
                                .get(&m.pid)
                                .is_some_and(|row| row.start == m.start)
                    }));
                }
                members
            }
        };
        // An exited, unreaped child is no process to stop: signalling it "succeeds" and would
        // be recorded as a SIGKILL of a survivor.
        members.retain(|m| table.rows.get(&m.pid).is_none_or(|row| !row.zombie));
        members.retain(|m| {
            let keep = !self.protected.contains(&m.pid);
            if !keep {
                refused.push(format!(
                    "pid {} is pid 1, costmeter or its ancestor; never signalled",
                    m.pid
                ));
            }
            keep
        });
        members
    }

    /// Carries out one order: polite signal, grace, SIGKILL. Blocks for up to the grace.
    pub fn enforce(&self, order: &KillOrder) -> KillReport {
        let mut report = KillReport {
            target: order.target.clone(),
            reason: order.reason.clone(),
            signal: self.config.signal_name.clone(),
            signalled: 0,
            killed: 0,
            refused: Vec::new(),
            dry_run: self.config.dry_run,
        };
        let Some(target) = self.targets.get(&order.target) else {
            report
                .refused
                .push(format!("'{}' is not a configured target", order.target));
            return report;
        };
        // The roots first: they are known without scanning /proc, and the agent's own handler
        // usually lives there. Then everything below them, found by a scan.
        let mut roots = self.roots(target);
        roots.retain(|m| !self.protected.contains(&m.pid));
        if self.config.dry_run {
            let mut members = roots;
            let seen: HashSet<i32> = members.iter().map(|m| m.pid).collect();
            members.extend(
                self.members(target, &mut report.refused)
                    .into_iter()
                    .filter(|m| !seen.contains(&m.pid)),
            );
            report.signalled = members.len();
            warn!(target_name = %order.target, reason = %order.reason, signal = %self.config.signal_name, pids = ?members.iter().map(|m| m.pid).collect::<Vec<_>>(), "dry run: would soft-kill the target");
            return report;
        }
        let polite = Signal::from_named_raw(self.config.signal).unwrap_or(Signal::TERM);
        let mut handles = Vec::new();
        let signal_all =
            |members: Vec<Identity>, handles: &mut Vec<Handle>, report: &mut KillReport| {
                for member in members {
                    match Handle::open(member) {
                        Ok(handle) => {
                            if handle.signal(polite) {
                                let _ = handle.signal(Signal::CONT);
                                report.signalled += 1;
                                handles.push(handle);
                            }
                        }
                        Err(why) => report.refused.push(why),
                    }
                }
            };
        // The tree is taken before the roots are signalled: a root that exits at once orphans
        // its children, which a scan after the signal no longer finds below it (and the next
        // sample may already have replaced what the sampler last published). Entries of the
        // snapshot are checked by start time when their pidfd is opened, so none is stale.
        let snapshot = self.members(target, &mut report.refused);
        let mut seen: HashSet<i32> = roots.iter().map(|m| m.pid).collect();
        signal_all(roots, &mut handles, &mut report);
        let rest: Vec<Identity> = snapshot
            .into_iter()
            .chain(self.members(target, &mut Vec::new()))
            .filter(|m| seen.insert(m.pid))
            .collect();
        signal_all(rest, &mut handles, &mut report);
        info!(target_name = %order.target, reason = %order.reason, signal = %self.config.signal_name, signalled = report.signalled, "soft-kill: signal sent");

        // Until the grace is over, processes that join the tree meanwhile get the polite
        // signal too, and the rest of the grace; then SIGKILL for whatever is left, including
        // anything born in the last moments.
        let deadline = Instant::now() + self.config.grace;
        let mut known: HashSet<i32> = handles.iter().map(|h| h.identity.pid).collect();
        // Whether the grace ran out with something left; when everything exited in time, the
        // tree had its last look in the loop, and nothing is SIGKILLed (a process seen only
        // now, mid-exit, would be recorded as a survivor it never was).
        let mut outlived = false;
        loop {
            handles = wait_for_exit(handles, deadline, LATE_COMER_SCAN);
            if polite == Signal::KILL || Instant::now() >= deadline {
                outlived = polite != Signal::KILL;
                break;
            }
            let late: Vec<Identity> = self
                .members(target, &mut Vec::new())
                .into_iter()
                .filter(|m| known.insert(m.pid))
                .collect();
            if handles.is_empty() && late.is_empty() {
                break;
            }
            let before = report.signalled;
            signal_all(late, &mut handles, &mut report);
            if report.signalled > before {
                info!(target_name = %order.target, late = report.signalled - before, "soft-kill: processes that joined the tree got the signal and the rest of the grace");
            }
        }
        let mut last_round: Vec<Handle> = handles;
        if outlived {
            for member in self.members(target, &mut Vec::new()) {
                if !known.contains(&member.pid)
                    && let Ok(handle) = Handle::open(member)
                {
                    last_round.push(handle);
                }
            }
        }
        for handle in &last_round {
            if handle.signal(Signal::KILL) {
                report.killed += 1;
            }
        }
        if let Selector::Cgroup(path) = &target.selector {
            kill_cgroup(&CgroupFiles::locate(path, &mounts()));
        }
        if report.killed > 0 {
            warn!(target_name = %order.target, killed = report.killed, "soft-kill: SIGKILL sent to processes that outlived the grace");
        }
        report
    }
}

/// How often the tree is scanned for late-comers while the grace runs.
const LATE_COMER_SCAN: Duration = Duration::from_millis(50);

/// SIGKILLs every process in a cgroup through v2 `cgroup.kill`, where the kernel offers it;
/// returns whether it did.
fn kill_cgroup(files: &CgroupFiles) -> bool {
    files
        .kill_file()
        .is_some_and(|kill| std::fs::write(kill, "1").is_ok())
}

/// Waits until every process has exited, `deadline` passed or `slice` went by; returns those
/// still running.
fn wait_for_exit(mut handles: Vec<Handle>, deadline: Instant, slice: Duration) -> Vec<Handle> {
    let deadline = deadline.min(Instant::now() + slice);
    while !handles.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let exited: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = handles
                .iter()
                .map(|h| PollFd::new(&h.pidfd, PollFlags::IN))
                .collect();
            if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
                break;
            }
            fds.iter().map(|fd| !fd.revents().is_empty()).collect()
        };
        let mut index = 0;
        handles.retain(|_| {
            let gone = exited[index];
            index += 1;
            !gone
        });
    }
    handles
}

/// Runs the enforcer on its own thread; `on_report` receives the outcome of every order.
pub fn spawn(
    mut enforcer: Enforcer,
    mut on_report: impl FnMut(KillReport) + Send + 'static,
) -> std::io::Result<mpsc::Sender<EnforcerInput>> {
    let (sender, inbox) = mpsc::channel::<EnforcerInput>();
    std::thread::Builder::new()
        .name("costmeter-enforcer".into())
        .spawn(move || {
            while let Ok(input) = inbox.recv() {
                match input {
                    EnforcerInput::Targets(targets) => {
                        enforcer.targets = targets.into_iter().map(|t| (t.name.clone(), t)).collect();
                    }
                    EnforcerInput::Kill(order) => {
                        let report = enforcer.enforce(&order);
                        for why in &report.refused {
                            error!(target_name = %report.target, refused = %why, "soft-kill refused for a process");
                        }
                        on_report(report);
                    }
                }
            }
        })?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    fn config(grace_ms: u64) -> EnforcementConfig {
        EnforcementConfig {
            signal: 15,
            signal_name: "SIGTERM".into(),
            grace: Duration::from_millis(grace_ms),
            dry_run: false,
            webhook: None,
        }
    }

    fn pid_target(name: &str, pid: i32) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            selector: Selector::Pid(pid),
            children: true,
            sample_interval: Duration::from_secs(1),
            silent_after: None,
        }
    }

    #[test]
    fn a_root_whose_start_time_changed_is_refused_and_left_alive() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let start = start_of(pid).expect("start time");
        let book: IdentityBook = Arc::default();
        // The book says the target started at another time: a recycled pid, as far as
        // costmeter can tell.
        book.write().expect("book").insert(
            "agent".into(),
            vec![Identity {
                pid,
                start: start + 1,
            }],
        );
        let enforcer = Enforcer::new(config(100), &[pid_target("agent", pid)], book);
        let report = enforcer.enforce(&KillOrder {
            target: "agent".into(),
            reason: "test".into(),
        });
        assert_eq!(report.signalled, 0);
        assert!(
            report
                .refused
                .iter()
                .any(|r| r.contains("start time changed")),
            "{report:?}"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the process is still alive"
        );
        child.kill().ok();
        child.wait().ok();
    }

    #[test]
    fn costmeter_itself_and_its_ancestors_are_never_signalled() {
        let protected = protected_pids();
        assert!(protected.contains(&1) && protected.contains(&own_pid()));
        let book: IdentityBook = Arc::default();
        let me = Identity {
            pid: own_pid(),
            start: start_of(own_pid()).expect("own start"),
        };
        book.write().expect("book").insert("self".into(), vec![me]);
        let mut target = pid_target("self", own_pid());
        target.children = false;
        let enforcer = Enforcer::new(config(10), &[target], book);
        let report = enforcer.enforce(&KillOrder {
            target: "self".into(),
            reason: "test".into(),
        });
        assert_eq!(report.signalled, 0);
        assert!(report.refused.iter().any(|r| r.contains("never signalled")));
    }
}
