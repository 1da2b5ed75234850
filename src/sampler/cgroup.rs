//! Cgroup targets: the kernel already sums a cgroup's usage, reaped processes included, so a
//! cgroup target reads its counters instead of walking processes.
//!
//! Both hierarchies are supported, per file: cgroup v2 (`cpu.stat`, `memory.current`,
//! `memory.peak`, `io.stat`) and v1 (`cpuacct.usage`, `memory.usage_in_bytes`,
//! `memory.max_usage_in_bytes`, `blkio.throttle.io_service_bytes`). Hybrid hosts mount some
//! controllers on v1 and an empty v2 tree; each figure is read from wherever it exists.

use std::path::{Path, PathBuf};

/// Where each figure of one cgroup lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFiles {
    cpu: Option<CpuFile>,
    memory_current: Option<PathBuf>,
    memory_peak: Option<PathBuf>,
    io: Option<IoFile>,
    procs: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CpuFile {
    /// v2 `cpu.stat`, `usage_usec` line.
    Stat(PathBuf),
    /// v1 `cpuacct.usage`, nanoseconds.
    Usage(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IoFile {
    /// v2 `io.stat`: `MAJ:MIN rbytes=… wbytes=…` per device.
    Stat(PathBuf),
    /// v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N` lines.
    Blkio(PathBuf),
}

/// A reading of a cgroup's counters; absent figures are those the host does not provide.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgroupReading {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: Option<u64>,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub processes: u64,
}

/// A cgroup mount: its mount point and whether it is v2 or which v1 controllers it carries.
#[derive(Debug, Clone)]
pub struct Mount {
    pub point: PathBuf,
    pub unified: bool,
    pub controllers: Vec<String>,
}

/// The cgroup mounts of this host, from `/proc/self/mountinfo`.
pub fn mounts() -> Vec<Mount> {
    let Ok(me) = procfs::process::Process::myself() else {
        return Vec::new();
    };
    let Ok(infos) = me.mountinfo() else {
        return Vec::new();
    };
    infos
        .into_iter()
        .filter_map(|info| {
            let fs_type = info.fs_type.as_str();
            match fs_type {
                "cgroup2" => Some(Mount {
                    point: info.mount_point,
                    unified: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    point: info.mount_point,
                    unified: false,
                    controllers: info.super_options.keys().cloned().collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

impl CgroupFiles {
    /// Finds the files of `cgroup`: an absolute directory under a cgroup mount, or a cgroup path
    /// as `/proc/PID/cgroup` prints it (relative to each hierarchy's root).
    pub fn locate(cgroup: &Path, mounts: &[Mount]) -> CgroupFiles {
        let relative = mounts
            .iter()
            .filter(|m| cgroup.starts_with(&m.point))
            .max_by_key(|m| m.point.as_os_str().len())
            .and_then(|m| cgroup.strip_prefix(&m.point).ok())
            .map_or_else(
                || cgroup.strip_prefix("/").unwrap_or(cgroup).to_path_buf(),
                Path::to_path_buf,
            );
        let existing = |mount: &Mount, file: &str| {
            let path = mount.point.join(&relative).join(file);
            path.is_file().then_some(path)
        };
        let unified: Vec<&Mount> = mounts.iter().filter(|m| m.unified).collect();
        let find_v2 = |file: &str| unified.iter().find_map(|m| existing(m, file));
        let find_v1 = |controller: &str, file: &str| {
            mounts
                .iter()
                .filter(|m| !m.unified && m.controllers.iter().any(|c| c == controller))
                .find_map(|m| existing(m, file))
        };

        // A v2 memory or io file exists only where that controller is enabled on v2, so finding
        // it there is the sign to prefer v2 for that figure.
        CgroupFiles {
            cpu: find_v2("cpu.stat")
                .map(CpuFile::Stat)
                .or_else(|| find_v1("cpuacct", "cpuacct.usage").map(CpuFile::Usage)),
            memory_current: find_v2("memory.current")
                .or_else(|| find_v1("memory", "memory.usage_in_bytes")),
            memory_peak: find_v2("memory.peak")
                .or_else(|| find_v1("memory", "memory.max_usage_in_bytes")),
            io: find_v2("io.stat")
                .map(IoFile::Stat)
                .or_else(|| find_v1("blkio", "blkio.throttle.io_service_bytes").map(IoFile::Blkio)),
            procs: find_v2("cgroup.procs")
                .or_else(|| find_v1("memory", "cgroup.procs"))
                .or_else(|| find_v1("cpuacct", "cgroup.procs"))
                .or_else(|| find_v1("pids", "cgroup.procs")),
        }
    }

    /// Whether the cgroup was found at all.
    pub fn exists(&self) -> bool {
        self.procs.is_some() || self.cpu.is_some() || self.memory_current.is_some()
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        self.procs
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The v2 `cgroup.kill` file, where the kernel offers it (the enforcer writes it).
    pub fn kill_file(&self) -> Option<std::path::PathBuf> {
        self.procs
            .as_ref()
            .and_then(|procs| procs.parent())
            .map(|dir| dir.join("cgroup.kill"))
            .filter(|kill| kill.is_file())
    }

    /// Reads every figure; `None` when the cgroup is gone.
    pub fn read(&self) -> Option<CgroupReading> {
        let procs = std::fs::read_to_string(self.procs.as_ref()?).ok()?;
        let mut reading = CgroupReading {
            processes: procs.lines().filter(|l| !l.trim().is_empty()).count() as u64,
            ..CgroupReading::default()
        };
        reading.cpu_seconds = match &self.cpu {
            Some(CpuFile::Stat(path)) => {
                read_keyed(path, "usage_usec").map_or(0.0, |us| us as f64 / 1e6)
            }
            Some(CpuFile::Usage(path)) => read_number(path).map_or(0.0, |ns| ns as f64 / 1e9),
            None => 0.0,
        };
        reading.memory_bytes = self
            .memory_current
            .as_deref()
            .and_then(read_number)
            .unwrap_or(0);
        reading.memory_peak_bytes = self.memory_peak.as_deref().and_then(read_number);
        (reading.read_bytes, reading.written_bytes) = match &self.io {
            Some(IoFile::Stat(path)) => std::fs::read_to_string(path)
                .map(|text| parse_io_stat(&text))
                .unwrap_or((0, 0)),
            Some(IoFile::Blkio(path)) => std::fs::read_to_string(path)
                .map(|text| parse_blkio(&text))
                .unwrap_or((0, 0)),
            None => (0, 0),
        };
        Some(reading)
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sums `rbytes` and `wbytes` over all devices of a v2 `io.stat`.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut read = 0;
    let mut written = 0;
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            read += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            written += v.parse::<u64>().unwrap_or(0);
        }
    }
    (read, written)
}

/// Sums `Read` and `Write` over all devices of a v1 `blkio.throttle.io_service_bytes`.
pub fn parse_blkio(text: &str) -> (u64, u64) {
    let mut read = 0;
    let mut written = 0;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let value = value.parse::<u64>().unwrap_or(0);
        match op {
            "Read" => read += value,
            "Write" => written += value,
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=100 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n\
                    253:1 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(text), (105, 2007));
    }

    #[test]
    fn blkio_sums_read_and_write_lines() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n\
                    8:16 Read 1\n8:16 Write 2\nTotal 12291\n";
        assert_eq!(parse_blkio(text), (4097, 8194));
    }

    #[test]
    fn locate_reads_v1_and_v2_trees_side_by_side() {
        let root = std::env::temp_dir().join(format!("costmeter-cg-{}", std::process::id()));
        let v2 = root.join("unified/agent");
        let cpuacct = root.join("cpuacct/agent");
        let memory = root.join("memory/agent");
        for dir in [&v2, &cpuacct, &memory] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(v2.join("cgroup.procs"), "12\n13\n").expect("write");
        std::fs::write(v2.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").expect("write");
        std::fs::write(cpuacct.join("cpuacct.usage"), "999000000000\n").expect("write");
        std::fs::write(memory.join("memory.usage_in_bytes"), "4096\n").expect("write");
        std::fs::write(memory.join("memory.max_usage_in_bytes"), "8192\n").expect("write");
        let mounts = vec![
            Mount {
                point: root.join("unified"),
                unified: true,
                controllers: vec![],
            },
            Mount {
                point: root.join("cpuacct"),
                unified: false,
                controllers: vec!["cpuacct".into()],
            },
            Mount {
                point: root.join("memory"),
                unified: false,
                controllers: vec!["memory".into()],
            },
        ];
        let files = CgroupFiles::locate(Path::new("/agent"), &mounts);
        let reading = files.read().expect("cgroup exists");
        assert_eq!(reading.processes, 2);
        assert!(
            (reading.cpu_seconds - 2.5).abs() < 1e-9,
            "v2 cpu.stat wins over v1"
        );
        assert_eq!(reading.memory_bytes, 4096, "memory falls back to v1");
        assert_eq!(reading.memory_peak_bytes, Some(8192));
        // An absolute path under a v1 mount finds the same cgroup in the other hierarchies.
        assert_eq!(CgroupFiles::locate(&memory, &mounts), files);
        assert!(!CgroupFiles::locate(Path::new("/missing"), &mounts).exists());
        std::fs::remove_dir_all(&root).ok();
    }
}
