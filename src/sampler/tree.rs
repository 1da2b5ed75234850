//! Turns successive snapshots of a process tree into counter increments that never go down and
//! miss nothing the kernel accounted.
//!
//! A sampler that sums the CPU of the processes it sees alive misses every child that lived less
//! than one interval. The kernel does not: when a process is reaped, its CPU time (and that of its
//! own reaped children) is added to the reaper's `cutime`/`cstime`, and its I/O to the reaper's
//! `/proc/PID/io`. So the tree's true usage is the sum over live members of own + reaped usage,
//! provided reaping happens inside the tree (costmeter makes itself a subreaper in `exec` mode).
//!
//! Counting that sum naively double-counts: a child we already counted while alive shows up again
//! in its parent's reaped figure once it exits. [`TreeAccount`] therefore remembers what it has
//! counted for every process and, when one vanishes, subtracts that from the jump in its parent's
//! reaped figure. Everything here is pure, so the arithmetic is tested without processes.

use std::collections::HashMap;

/// One process as read from `/proc` at one instant. Times are in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    pub pid: i32,
    pub ppid: i32,
    /// Start time since boot, in ticks: tells a recycled pid from the process we knew.
    pub start: u64,
    /// utime + stime of the process itself.
    pub own_ticks: u64,
    /// cutime + cstime: everything its reaped descendants used.
    pub reaped_ticks: u64,
    /// Bytes read from storage, including reaped children.
    pub read_bytes: u64,
    /// Bytes written to storage, including reaped children.
    pub written_bytes: u64,
}

/// What a tree used since the previous observation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Increment {
    pub cpu_ticks: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// Usage already counted for a process (itself plus what it had reaped).
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    ticks: u64,
    read: u64,
    written: u64,
}

/// Per-target memory of what has been counted. Counters built on it only ever grow.
#[derive(Debug, Default)]
pub struct TreeAccount {
    previous: HashMap<i32, Observed>,
    /// Per live process: what was counted for children that vanished before its reaped figure
    /// showed them. `/proc` is read one process after another, so a parent can be read just
    /// before it reaps a child that is gone by the time the child's turn comes; the parent's
    /// figure then grows one snapshot later, and is not counted again then. With how many
    /// snapshots it has waited: a child reaped elsewhere never shows up, so credit expires.
    credit: HashMap<i32, (Counted, u32)>,
}

/// Snapshots a credit waits for its parent's reaped figure to grow before it is dropped.
const CREDIT_SNAPSHOTS: u32 = 20;

impl TreeAccount {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts a new snapshot of the tree's live members and returns what was used since the
    /// last one. A process seen for the first time contributes everything it has used so far.
    pub fn observe(&mut self, now: &[Observed]) -> Increment {
        let current: HashMap<i32, &Observed> = now.iter().map(|p| (p.pid, p)).collect();
        let is_same = |old: &Observed| current.get(&old.pid).is_some_and(|p| p.start == old.start);

        // Processes that vanished since the last snapshot, grouped under their last parent.
        let vanished: HashMap<i32, &Observed> = self
            .previous
            .values()
            .filter(|old| !is_same(old))
            .map(|old| (old.pid, old))
            .collect();
        let mut vanished_children: HashMap<i32, Vec<i32>> = HashMap::new();
        for old in vanished.values() {
            vanished_children.entry(old.ppid).or_default().push(old.pid);
        }

        // What was counted for each vanished process that a live parent may have reaped: its
        // own figures plus those of vanished children it may have reaped in turn.
        let mut reaped_by_live: HashMap<i32, Counted> = HashMap::new();
        for old in vanished.values() {
            let parent_alive = self.previous.get(&old.ppid).is_some_and(&is_same);
            if parent_alive {
                let counted =
                    counted_subtree(old.pid, &vanished, &vanished_children, &self.credit, 0);
                let entry = reaped_by_live.entry(old.ppid).or_default();
                entry.ticks += counted.ticks;
                entry.read += counted.read;
                entry.written += counted.written;
            }
        }

        let mut increment = Increment::default();
        let mut credit = HashMap::new();
        for p in now {
            match self.previous.get(&p.pid).filter(|old| old.start == p.start) {
                None => {
                    increment.cpu_ticks += p.own_ticks + p.reaped_ticks;
                    increment.read_bytes += p.read_bytes;
                    increment.written_bytes += p.written_bytes;
                }
                Some(old) => {
                    let vanished_now = reaped_by_live.get(&p.pid).copied().unwrap_or_default();
                    let (waiting, age) = self.credit.get(&p.pid).copied().unwrap_or_default();
                    let already = Counted {
                        ticks: vanished_now.ticks + waiting.ticks,
                        read: vanished_now.read + waiting.read,
                        written: vanished_now.written + waiting.written,
                    };
                    let reaped_growth = p.reaped_ticks.saturating_sub(old.reaped_ticks);
                    let read_growth = p.read_bytes.saturating_sub(old.read_bytes);
                    let written_growth = p.written_bytes.saturating_sub(old.written_bytes);
                    increment.cpu_ticks += p.own_ticks.saturating_sub(old.own_ticks)
                        + reaped_growth.saturating_sub(already.ticks);
                    increment.read_bytes += read_growth.saturating_sub(already.read);
                    increment.written_bytes += written_growth.saturating_sub(already.written);
                    // What the parent's figures did not show yet waits for the next snapshots.
                    let left = Counted {
                        ticks: already.ticks.saturating_sub(reaped_growth),
                        read: already.read.saturating_sub(read_growth),
                        written: already.written.saturating_sub(written_growth),
                    };
                    let fresh = vanished_now.ticks + vanished_now.read + vanished_now.written > 0;
                    let age = if fresh { 0 } else { age + 1 };
                    if left.ticks + left.read + left.written > 0 && age < CREDIT_SNAPSHOTS {
                        credit.insert(p.pid, (left, age));
                    }
                }
            }
        }

        self.previous = now.iter().map(|p| (p.pid, *p)).collect();
        self.credit = credit;
        increment
    }

    /// What has been counted so far, to be stored beside the counted deltas.
    pub fn baseline(&self) -> Vec<Observed> {
        let mut processes: Vec<Observed> = self.previous.values().copied().collect();
        processes.sort_unstable_by_key(|p| p.pid);
        processes
    }

    /// Resumes from a stored baseline: processes still alive are counted from there on, not
    /// from their start, so a restarted sidecar does not count them twice.
    pub fn restore(baseline: Vec<Observed>) -> TreeAccount {
        TreeAccount {
            previous: baseline.into_iter().map(|p| (p.pid, p)).collect(),
            credit: HashMap::new(),
        }
    }
}

/// Deepest chain of vanished processes followed; pid reuse could otherwise build a cycle.
const MAX_VANISHED_DEPTH: usize = 64;

/// What was counted for vanished process `pid` and the vanished processes below it, including
/// children of theirs that vanished earlier and were waiting (credit) to show in their figures.
fn counted_subtree(
    pid: i32,
    vanished: &HashMap<i32, &Observed>,
    children: &HashMap<i32, Vec<i32>>,
    credit: &HashMap<i32, (Counted, u32)>,
    depth: usize,
) -> Counted {
    let Some(process) = vanished.get(&pid) else {
        return Counted::default();
    };
    let waiting = credit.get(&pid).map(|(c, _)| *c).unwrap_or_default();
    let mut counted = Counted {
        ticks: process.own_ticks + process.reaped_ticks + waiting.ticks,
        read: process.read_bytes + waiting.read,
        written: process.written_bytes + waiting.written,
    };
    if depth < MAX_VANISHED_DEPTH {
        for child in children.get(&pid).into_iter().flatten() {
            let below = counted_subtree(*child, vanished, children, credit, depth + 1);
            counted.ticks += below.ticks;
            counted.read += below.read;
            counted.written += below.written;
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, ppid: i32, own: u64, reaped: u64) -> Observed {
        Observed {
            pid,
            ppid,
            start: u64::try_from(pid).unwrap_or_default(),
            own_ticks: own,
            reaped_ticks: reaped,
            read_bytes: 0,
            written_bytes: own * 10,
        }
    }

    #[test]
    fn first_snapshot_counts_everything_used_so_far() {
        let mut account = TreeAccount::new();
        let inc = account.observe(&[proc(10, 1, 5, 7), proc(11, 10, 3, 0)]);
        assert_eq!(inc.cpu_ticks, 15);
        assert_eq!(inc.written_bytes, 80);
    }

    #[test]
    fn a_reaped_child_is_not_counted_twice() {
        let mut account = TreeAccount::new();
        account.observe(&[proc(10, 1, 5, 0), proc(11, 10, 3, 0)]);
        // The child ran 2 more ticks, exited and was reaped: the parent's reaped figure grows by
        // the child's final 5 ticks, 3 of which were already counted.
        let inc = account.observe(&[proc(10, 1, 6, 5)]);
        assert_eq!(inc.cpu_ticks, 1 + 2);
    }

    #[test]
    fn a_child_gone_before_its_turn_in_a_snapshot_is_not_counted_again_when_its_parent_shows_it() {
        // root 1 → timeout 2 → busy 3. Snapshot 2 read timeout just before it reaped busy, and
        // busy was gone by its turn; timeout's reaped figure grows only in snapshot 3, where
        // timeout itself is gone and root shows both.
        let mut account = TreeAccount::new();
        let first = account.observe(&[proc(1, 0, 0, 0), proc(2, 1, 1, 0), proc(3, 2, 100, 0)]);
        assert_eq!(first.cpu_ticks, 101);
        let second = account.observe(&[proc(1, 0, 0, 0), proc(2, 1, 1, 0)]);
        assert_eq!(second.cpu_ticks, 0);
        let third = account.observe(&[proc(1, 0, 0, 101)]);
        assert_eq!(
            third.cpu_ticks, 0,
            "busy's 100 ticks were counted once, while it ran"
        );
        // The same when the parent lives on and shows the child a snapshot late.
        let mut account = TreeAccount::new();
        account.observe(&[proc(1, 0, 0, 0), proc(3, 1, 50, 0)]);
        assert_eq!(account.observe(&[proc(1, 0, 0, 0)]).cpu_ticks, 0);
        assert_eq!(account.observe(&[proc(1, 0, 0, 60)]).cpu_ticks, 10);
    }

    #[test]
    fn a_child_born_and_reaped_between_samples_is_counted() {
        let mut account = TreeAccount::new();
        account.observe(&[proc(10, 1, 5, 0)]);
        let inc = account.observe(&[proc(10, 1, 5, 40)]);
        assert_eq!(inc.cpu_ticks, 40);
    }

    #[test]
    fn a_vanished_chain_is_subtracted_once_from_the_live_ancestor() {
        let mut account = TreeAccount::new();
        account.observe(&[proc(10, 1, 1, 0), proc(11, 10, 2, 0), proc(12, 11, 4, 0)]);
        // 12 ran 1 more tick and was reaped by 11, which ran 1 more and was reaped by 10.
        // 10's reaped figure: 11's own 3 + 12's 5 = 8; 6 of those were counted before.
        let inc = account.observe(&[proc(10, 1, 1, 8)]);
        assert_eq!(inc.cpu_ticks, 2);
    }

    #[test]
    fn a_child_reaped_outside_the_tree_never_makes_the_counter_go_down() {
        let mut account = TreeAccount::new();
        account.observe(&[proc(10, 1, 5, 0), proc(11, 10, 30, 0)]);
        // 11 vanished but 10 did not reap it (orphaned to init): nothing grows, nothing shrinks.
        let inc = account.observe(&[proc(10, 1, 6, 0)]);
        assert_eq!(inc.cpu_ticks, 1);
    }

    #[test]
    fn a_recycled_pid_is_a_new_process() {
        let mut account = TreeAccount::new();
        account.observe(&[proc(10, 1, 50, 0)]);
        let mut reborn = proc(10, 1, 2, 0);
        reborn.start = 999;
        assert_eq!(account.observe(&[reborn]).cpu_ticks, 2);
    }

    #[test]
    fn sum_of_increments_equals_kernel_total_for_a_random_tree_history() {
        // A parent forks children that each run a while and are reaped by it; whatever the
        // sampling points, the increments add up to the kernel's final figure.
        for seed in 0..200u64 {
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = |n: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % n
            };
            let mut account = TreeAccount::new();
            let mut parent = proc(10, 1, 0, 0);
            let mut children: Vec<Observed> = Vec::new();
            let mut next_pid = 100;
            let mut total = 0;
            for _step in 0..50 {
                parent.own_ticks += next(3);
                for child in &mut children {
                    child.own_ticks += next(5);
                    child.written_bytes = child.own_ticks * 10;
                }
                if next(2) == 0 {
                    children.push(proc(next_pid, 10, next(4), 0));
                    next_pid += 1;
                }
                if !children.is_empty() && next(3) == 0 {
                    let gone =
                        children.remove(usize::try_from(next(children.len() as u64)).unwrap_or(0));
                    parent.reaped_ticks += gone.own_ticks;
                }
                if next(3) == 0 {
                    let mut snapshot = vec![parent];
                    snapshot.extend(children.iter().copied());
                    total += account.observe(&snapshot).cpu_ticks;
                }
            }
            let mut snapshot = vec![parent];
            snapshot.extend(children.iter().copied());
            total += account.observe(&snapshot).cpu_ticks;
            let kernel: u64 = snapshot.iter().map(|p| p.own_ticks + p.reaped_ticks).sum();
            assert_eq!(total, kernel, "seed {seed}");
        }
    }
}
