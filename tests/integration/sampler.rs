//! The sampler against real process trees: CPU, memory, disk and presence, compared with what
//! the kernel accounts.

use std::time::Duration;

use crate::util::{Daemon, Workload, proc_comm, proc_cpu_seconds, scratch_dir, wait_for, write};

const SETTLE: Duration = Duration::from_secs(20);

fn pid_target(name: &str, pid: i32, interval: &str) -> String {
    format!("[[target]]\nname = \"{name}\"\npid = {pid}\nsample_interval = \"{interval}\"\n")
}

/// Busy loop for the given seconds in a child of its own, reaped by its parent.
fn busy(seconds: &str) -> String {
    format!("timeout {seconds} sh -c 'while :; do :; done'")
}

#[test]
fn cpu_of_a_tree_of_short_and_long_children_matches_the_kernel() {
    // Two children busy for 1.5 s in parallel, then 20 children of 50 ms each, most of which
    // live and die between two 1 s samples. A live-process sampler misses those.
    let script = format!(
        "{long} & {long} & wait; for i in $(seq 20); do {short}; done; echo done; exec sleep 600",
        long = busy("1.5"),
        short = busy("0.05"),
    );
    let mut tree = Workload::shell(&script);
    let daemon = Daemon::start(&pid_target("agent", tree.pid(), "1s"));
    tree.wait_line("done");
    let pid = tree.pid();
    wait_for("the root to exec sleep", SETTLE, || {
        (proc_comm(pid).as_deref() == Some("sleep")).then_some(())
    });
    let kernel_now = proc_cpu_seconds(pid);
    // How much CPU the busy children get depends on the machine's load; that they got some is
    // what matters here, the comparison below does the rest.
    assert!(kernel_now > 0.3, "the workload burnt CPU: {kernel_now}");

    let labels = [("target", "agent")];
    let metered = daemon.wait_metric("haios_cpu_seconds_total", &labels, SETTLE, |v| {
        v >= kernel_now * 0.99
    });
    let kernel = tree.kill_and_rusage();
    let ratio = metered / kernel;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "metered {metered:.3}s vs kernel {kernel:.3}s (ratio {ratio:.3})"
    );
}

#[test]
fn cpu_counter_never_drops_when_children_exit() {
    let script = format!(
        "{} & {} & wait; echo done; exec sleep 600",
        busy("0.8"),
        busy("0.8")
    );
    let mut tree = Workload::shell(&script);
    let daemon = Daemon::start(&pid_target("agent", tree.pid(), "100ms"));
    let labels = [("target", "agent")];
    daemon.wait_metric("haios_target_processes", &labels, SETTLE, |n| n >= 3.0);
    // Follow the counter from while the children run until they are reaped and only the
    // root, now `sleep`, is left and fully counted.
    let pid = tree.pid();
    let mut seen = Vec::new();
    wait_for(
        "the tree to shrink to its root and be fully counted",
        SETTLE,
        || {
            let scrape = daemon.scrape();
            let cpu = scrape
                .value("haios_cpu_seconds_total", &labels)
                .unwrap_or(0.0);
            seen.push(cpu);
            let only_root = scrape.value("haios_target_processes", &labels) == Some(1.0)
                && proc_comm(pid).as_deref() == Some("sleep");
            (only_root && cpu >= proc_cpu_seconds(pid) * 0.99).then_some(())
        },
    );
    tree.wait_line("done");
    assert!(
        seen.windows(2).all(|w| w[1] >= w[0]),
        "counter went down: {seen:?}"
    );
    let first = seen.first().copied().unwrap_or(0.0);
    let last = seen.last().copied().unwrap_or(0.0);
    assert!(
        last > first,
        "the children's last CPU was still counted after they exited: {seen:?}"
    );
}

#[test]
fn rss_of_a_child_holding_200_mib() {
    let mut holder = Workload::shell(
        "exec python3 -c \"import sys; b = b'\\x01' * (200 << 20); print('ready', flush=True); sys.stdin.read(); import time; time.sleep(600)\"",
    );
    let daemon = Daemon::start(&pid_target("agent", holder.pid(), "100ms"));
    holder.wait_line("ready");
    let labels = [("target", "agent")];
    let mib = 1024.0 * 1024.0;
    let rss = daemon.wait_metric("haios_memory_rss_bytes", &labels, SETTLE, |v| {
        v >= 190.0 * mib
    });
    assert!(rss < 400.0 * mib, "RSS is not double counted: {rss}");
    drop(holder);
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 0.0);
    let scrape = daemon.scrape();
    assert_eq!(scrape.value("haios_memory_rss_bytes", &labels), Some(0.0));
    let peak = scrape
        .value("haios_memory_peak_rss_bytes", &labels)
        .unwrap_or(0.0);
    assert!(peak >= 190.0 * mib, "peak survives the exit: {peak}");
}

#[test]
fn disk_bytes_of_a_child_writing_64_mib_with_fsync() {
    let dir = scratch_dir();
    let file = dir.path().join("blob");
    let script = format!(
        "dd if=/dev/zero of={} bs=1M count=64 conv=fsync status=none; echo done; exec sleep 600",
        file.display()
    );
    let mut writer = Workload::shell(&script);
    let daemon = Daemon::start(&pid_target("agent", writer.pid(), "100ms"));
    writer.wait_line("done");
    let written = daemon.wait_metric(
        "haios_disk_written_bytes_total",
        &[("target", "agent")],
        SETTLE,
        |v| v >= 64.0 * 1024.0 * 1024.0,
    );
    assert!(
        written < 3.0 * 64.0 * 1024.0 * 1024.0,
        "dd's bytes are not counted over and over: {written}"
    );
}

#[test]
fn a_missing_target_is_down_logged_once_and_found_when_it_appears() {
    let dir = scratch_dir();
    let pid_file = dir.path().join("agent.pid");
    let body = format!(
        "[[target]]\nname = \"agent\"\npid_file = \"{}\"\nsample_interval = \"20ms\"\n",
        pid_file.display()
    );
    let daemon = Daemon::builder()
        .config(&body)
        .log_filter("info,costmeter::sampler=debug")
        .start();
    let labels = [("target", "agent")];
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 0.0);
    wait_for("ten samples of the missing target", SETTLE, || {
        (daemon.log_count("\"sampled\"") >= 10).then_some(())
    });
    let sleeper = Workload::shell("exec sleep 600");
    write(&pid_file, &format!("{}\n", sleeper.pid()));
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 1.0);
    assert_eq!(
        daemon.log_count("target not found"),
        1,
        "logged once, not every sample"
    );
    assert_eq!(daemon.log_count("\"target found\""), 1);
}

#[test]
fn match_selector_finds_a_process_by_command_line() {
    let _sleeper = Workload::shell("exec sleep 600.4242");
    let daemon = Daemon::start(
        "[[target]]\nname = \"by-match\"\nmatch = { exe = \"sleep\", cmdline = \"600\\\\.4242\" }\nsample_interval = \"50ms\"\n",
    );
    let labels = [("target", "by-match")];
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 1.0);
    assert_eq!(
        daemon.scrape().value("haios_target_processes", &labels),
        Some(1.0)
    );
}

#[test]
fn the_sidecar_meters_itself_by_default() {
    let daemon = Daemon::start("");
    let labels = [("target", "costmeter")];
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 1.0);
    let rss = daemon
        .scrape()
        .value("haios_memory_rss_bytes", &labels)
        .unwrap_or(0.0);
    assert!(rss > 1_000_000.0, "its own RSS is seen: {rss}");
}

#[test]
fn a_v1_cgroup_target_reads_the_kernel_counters() {
    // The development machines mount cgroup v1 controllers; a root test can make a cgroup there.
    let name = format!("costmeter-test-{}", std::process::id());
    let cpuacct = std::path::Path::new("/sys/fs/cgroup/cpuacct").join(&name);
    let memory = std::path::Path::new("/sys/fs/cgroup/memory").join(&name);
    if std::fs::create_dir(&cpuacct).is_err() || std::fs::create_dir(&memory).is_err() {
        eprintln!(
            "skipped: cannot create a v1 cgroup here (not root, or no v1 cpuacct/memory mount)"
        );
        let _ = std::fs::remove_dir(&cpuacct);
        return;
    }
    // The workload waits until it finds itself in the cgroup, so all its CPU is charged there.
    let mut busy_child = Workload::shell(&format!(
        "until grep -q {name} /proc/self/cgroup; do sleep 0.01; done; {}; echo done; exec sleep 600",
        busy("1")
    ));
    for dir in [&cpuacct, &memory] {
        write(&dir.join("cgroup.procs"), &busy_child.pid().to_string());
    }
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"cg\"\ncgroup = \"/{name}\"\nsample_interval = \"100ms\"\n"
    ));
    let labels = [("target", "cg")];
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 1.0);
    busy_child.wait_line("done");
    let usage_ns: f64 = std::fs::read_to_string(cpuacct.join("cpuacct.usage"))
        .expect("read cpuacct.usage")
        .trim()
        .parse()
        .expect("a number");
    let kernel = usage_ns / 1e9;
    assert!(kernel > 0.05, "the busy child ran in the cgroup: {kernel}");
    let cpu = daemon.wait_metric("haios_cpu_seconds_total", &labels, SETTLE, |v| {
        v >= kernel * 0.99
    });
    assert!(
        cpu <= kernel * 1.01 + 0.01,
        "cpuacct.usage of the cgroup, not more: {cpu} vs {kernel}"
    );
    assert!(
        daemon
            .scrape()
            .value("haios_memory_rss_bytes", &labels)
            .unwrap_or(0.0)
            > 0.0
    );
    drop(busy_child);
    drop(daemon);
    for dir in [&cpuacct, &memory] {
        // The kernel removes an empty cgroup directory with rmdir.
        wait_for("the cgroup to empty", SETTLE, || {
            std::fs::remove_dir(dir).ok()
        });
    }
}

#[test]
fn a_busy_target_with_no_usage_arriving_is_silent_telemetry_until_usage_comes() {
    let busy = Workload::shell("while :; do :; done");
    let idle = Workload::shell("exec sleep 600");
    let silent_after = "silent_after = \"1s\"\n";
    let daemon = Daemon::start(&format!(
        "{}{silent_after}{}{silent_after}",
        pid_target("busy", busy.pid(), "200ms"),
        pid_target("idle", idle.pid(), "200ms"),
    ));
    let silent = daemon.wait_metric(
        "haios_target_silent_seconds",
        &[("target", "busy")],
        SETTLE,
        |v| v >= 1.0,
    );
    assert!(silent < 60.0, "{silent}");
    assert_eq!(
        daemon
            .scrape()
            .value("haios_target_silent_seconds", &[("target", "idle")]),
        Some(0.0),
        "an idle target is not silent"
    );
    let (_, answer) = crate::verbs::doctor(&daemon.url(""));
    let telemetry = crate::verbs::finding(&answer, "telemetry");
    assert_eq!(telemetry["status"], "yellow", "{answer}");
    assert!(
        telemetry["detail"]
            .as_str()
            .is_some_and(|d| d.contains("busy") && !d.contains("idle")),
        "{answer}"
    );
    // Usage arrives: not silent any more.
    daemon.post_events(
        &serde_json::json!({"type": "llm_usage", "agent": "coder", "model": "gpt-5",
        "input_tokens": 10, "output_tokens": 1}),
    );
    daemon.wait_metric(
        "haios_target_silent_seconds",
        &[("target", "busy")],
        SETTLE,
        |v| v == 0.0,
    );
}
