//! Reading the process table from `/proc` and finding a target's process tree in it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use procfs::process::Process;
use regex::Regex;

use super::tree::Observed;

/// One row of the process table: what tree discovery and accounting need.
#[derive(Debug, Clone)]
pub struct ProcRow {
    pub pid: i32,
    pub ppid: i32,
    pub start: u64,
    pub own_ticks: u64,
    pub reaped_ticks: u64,
    pub rss_bytes: u64,
    pub comm: String,
    /// Exited, not yet reaped: it runs nothing and cannot be stopped.
    pub zombie: bool,
}

/// A snapshot of every process on the host, taken once and shared by all targets due together.
#[derive(Debug, Default)]
pub struct ProcTable {
    pub rows: HashMap<i32, ProcRow>,
    children: HashMap<i32, Vec<i32>>,
}

impl ProcTable {
    /// Reads `/proc/*/stat`. Processes that exit while being read are skipped.
    pub fn scan() -> ProcTable {
        let mut table = ProcTable::default();
        let Ok(processes) = procfs::process::all_processes() else {
            return table;
        };
        for process in processes.flatten() {
            if let Some(row) = read_row(&process) {
                table.insert(row);
            }
        }
        table
    }

    fn insert(&mut self, row: ProcRow) {
        self.children.entry(row.ppid).or_default().push(row.pid);
        self.rows.insert(row.pid, row);
    }

    /// The roots and, with `children`, every descendant of them, each once.
    pub fn tree(&self, roots: &[i32], children: bool) -> Vec<&ProcRow> {
        let mut seen = HashSet::new();
        let mut stack: Vec<i32> = roots.iter().rev().copied().collect();
        let mut members = Vec::new();
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            let Some(row) = self.rows.get(&pid) else {
                continue;
            };
            members.push(row);
            if children {
                stack.extend(self.children.get(&pid).into_iter().flatten().copied());
            }
        }
        members
    }

    /// Processes matching an `exe`/`cmdline` selector. Results are cached by (pid, start time)
    /// because reading `exe` and `cmdline` of every process every second is the expensive part.
    pub fn matching(
        &self,
        exe: Option<&str>,
        cmdline: Option<&Regex>,
        cache: &mut HashMap<(i32, u64), bool>,
    ) -> Vec<i32> {
        let own_pid = std::process::id();
        let mut fresh = HashMap::with_capacity(cache.len());
        let mut matched = Vec::new();
        for row in self.rows.values() {
            let key = (row.pid, row.start);
            let is_match = match cache.get(&key) {
                Some(known) => *known,
                None => {
                    u32::try_from(row.pid).is_ok_and(|pid| pid != own_pid)
                        && process_matches(row, exe, cmdline)
                }
            };
            fresh.insert(key, is_match);
            if is_match {
                matched.push(row.pid);
            }
        }
        *cache = fresh;
        matched.sort_unstable();
        matched
    }
}

fn read_row(process: &Process) -> Option<ProcRow> {
    let stat = process.stat().ok()?;
    Some(ProcRow {
        pid: stat.pid,
        ppid: stat.ppid,
        start: stat.starttime,
        own_ticks: stat.utime + stat.stime,
        reaped_ticks: u64::try_from(stat.cutime.max(0) + stat.cstime.max(0)).unwrap_or(0),
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        zombie: stat.state == 'Z',
        comm: stat.comm,
    })
}

fn process_matches(row: &ProcRow, exe: Option<&str>, cmdline: Option<&Regex>) -> bool {
    let Ok(process) = Process::new(row.pid) else {
        return false;
    };
    if let Some(wanted) = exe {
        let exe_name = process
            .exe()
            .ok()
            .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()));
        let name_matches = exe_name.as_deref() == Some(wanted)
            // `comm` is the kernel's 15-byte name; it is what is left for kernel threads and
            // processes whose exe link we may not read.
            || row.comm == wanted
            || (row.comm.len() == 15 && wanted.starts_with(&row.comm));
        if !name_matches {
            return false;
        }
    }
    if let Some(pattern) = cmdline {
        let Ok(args) = process.cmdline() else {
            return false;
        };
        if args.is_empty() || !pattern.is_match(&args.join(" ")) {
            return false;
        }
    }
    true
}

/// Disk bytes of one process, reaped children included. `None` when `/proc/PID/io` is not
/// readable (another user's process without the capability).
pub fn read_io(pid: i32) -> Option<(u64, u64)> {
    let io = Process::new(pid).ok()?.io().ok()?;
    Some((io.read_bytes, io.write_bytes))
}

/// The accounting view of tree members, with their disk counters read now.
pub fn observe(members: &[&ProcRow]) -> Vec<Observed> {
    members
        .iter()
        .map(|row| {
            let (read_bytes, written_bytes) = read_io(row.pid).unwrap_or((0, 0));
            Observed {
                pid: row.pid,
                ppid: row.ppid,
                start: row.start,
                own_ticks: row.own_ticks,
                reaped_ticks: row.reaped_ticks,
                read_bytes,
                written_bytes,
            }
        })
        .collect()
}

/// Most bytes of a pid file read: a pid and a newline fit many times over.
const PID_FILE_MAX: usize = 64;

/// Reads a pid file: one decimal pid, surrounding whitespace allowed. The file is opened
/// without following a link and without blocking (a fifo or a device never stalls the
/// sampler), must be a regular file, is read at most [`PID_FILE_MAX`] bytes, and its owner is
/// taken from the open descriptor, so no link or swap between check and read can lend it
/// another file's owner.
pub fn read_pid_file(path: &Path) -> Result<i32, String> {
    use rustix::fs::{Mode, OFlags};
    let say = |what: String| format!("pid file '{}': {what}", path.display());
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|error| match error {
        rustix::io::Errno::LOOP => {
            say("is a symbolic link; costmeter does not follow links to pid files".into())
        }
        other => say(format!("cannot open: {other}")),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|error| say(format!("cannot stat: {error}")))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(say(
            "is not a regular file (a fifo, device or directory is never read)".into(),
        ));
    }
    let mut buffer = [0u8; PID_FILE_MAX];
    let mut filled = 0;
    while filled < buffer.len() {
        match rustix::io::read(&fd, &mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(say(format!("cannot read: {error}"))),
        }
    }
    let text = String::from_utf8_lossy(&buffer[..filled]);
    let trimmed = text.trim();
    let pid = match trimmed.parse::<i32>() {
        Ok(pid) if pid > 1 && filled < PID_FILE_MAX => pid,
        _ => {
            return Err(format!(
                "pid file '{}' holds '{}', not a process id above 1",
                path.display(),
                trimmed.chars().take(40).collect::<String>()
            ));
        }
    };
    check_pid_file_owner(path, stat.st_uid, pid)?;
    Ok(pid)
}

/// A pid file written by an unprivileged user may only name that user's processes (root's
/// may name any): otherwise anyone who can write the file could have costmeter meter, and
/// soft-kill, someone else's process. The rule systemd applies to `PIDFile=`.
fn check_pid_file_owner(path: &Path, file_owner: u32, pid: i32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(process) = std::fs::metadata(format!("/proc/{pid}")) else {
        // Gone or never there: the caller finds no process and says so.
        return Ok(());
    };
    if file_owner == 0 || file_owner == process.uid() {
        return Ok(());
    }
    Err(format!(
        "pid file '{}' (owned by uid {file_owner}) names pid {pid}, a process of uid {}: refused as an unrelated process, neither metered nor signalled; fix the pid file or have the agent's user write it",
        path.display(),
        process.uid()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: i32, ppid: i32) -> ProcRow {
        ProcRow {
            pid,
            ppid,
            start: 1,
            own_ticks: 0,
            reaped_ticks: 0,
            rss_bytes: 0,
            comm: String::new(),
            zombie: false,
        }
    }

    #[test]
    fn tree_walks_descendants_once_even_when_roots_overlap() {
        let mut table = ProcTable::default();
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1)] {
            table.insert(row(pid, ppid));
        }
        let mut pids: Vec<i32> = table.tree(&[10, 12], true).iter().map(|r| r.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![10, 11, 12, 13]);
        assert_eq!(table.tree(&[10], false).len(), 1);
        assert!(table.tree(&[99], true).is_empty());
    }

    #[test]
    fn scan_sees_this_test_process() {
        let table = ProcTable::scan();
        let me = i32::try_from(std::process::id()).unwrap_or_default();
        assert!(table.rows.contains_key(&me));
        assert!(table.rows[&me].rss_bytes > 0);
    }

    #[test]
    fn a_pid_file_that_is_a_link_a_fifo_or_a_device_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("costmeter-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let real = dir.join("real.pid");
        std::fs::write(&real, "4242\n").expect("write");
        let link = dir.join("link.pid");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let error = read_pid_file(&link).expect_err("a link is refused");
        assert!(error.contains("symbolic link"), "{error}");
        let fifo = dir.join("fifo.pid");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // Would block forever on a plain open; refused at once instead.
        let error = read_pid_file(&fifo).expect_err("a fifo is refused");
        assert!(error.contains("not a regular file"), "{error}");
        let error = read_pid_file(Path::new("/dev/zero")).expect_err("a device is refused");
        assert!(error.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn pid_file_errors_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("costmeter-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("agent.pid");
        std::fs::write(&file, "  4242\n").expect("write");
        assert_eq!(read_pid_file(&file), Ok(4242));
        std::fs::write(&file, "garbage").expect("write");
        let error = read_pid_file(&file).expect_err("garbage is refused");
        assert!(error.contains("holds 'garbage'"), "{error}");
        assert!(read_pid_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
