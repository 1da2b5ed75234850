//! Shared test harness: a real `costmeter` daemon on a free port, real child processes, and
//! helpers that await conditions instead of sleeping.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A response's `Content-Type`, empty when absent.
fn content_type_of<B>(response: &ureq::http::Response<B>) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Path of the binary under test, built by cargo for this test run.
pub fn costmeter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_costmeter"))
}

/// An external program a test drives, found on PATH. Missing, the test skips with a message,
/// unless COSTMETER_REQUIRE_TOOLS is set (CI), where it fails.
pub fn require_tool(program: &'static str, install: &str) -> Option<&'static str> {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
            "{program} is required ({install})"
        );
        eprintln!("skipped: {program} not installed ({install})");
        return None;
    }
    Some(program)
}

/// A loopback port nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A stand-in daemon on loopback: each connection gets `answer(path)` as a JSON 200, after
/// `delay`. Returns its base URL.
pub fn stand_in(delay: Duration, answer: fn(&str) -> &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            std::thread::sleep(delay);
            let body = answer(&path);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A scratch directory on real disk (not tmpfs), so storage I/O is accounted.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("costmeter-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create scratch dir")
}

/// Polls `condition` every 20 ms until it returns `Some` or `timeout` passes.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running daemon. Killed (SIGKILL) on drop if still running.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    http: ureq::Agent,
    log_filter: String,
}

/// Builds a daemon config. `[server] listen` is always a free loopback port.
#[must_use]
pub struct DaemonBuilder {
    body: String,
    log_filter: String,
    exec: Vec<String>,
    /// RLIMIT_NOFILE (soft and hard) for the daemon, when set.
    fd_limit: Option<u64>,
    /// Variables set in the daemon's environment.
    env: Vec<(String, String)>,
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            body: String::new(),
            log_filter: "info".to_string(),
            exec: Vec::new(),
            fd_limit: None,
            env: Vec::new(),
        }
    }

    /// Starts a daemon with `body` as the config after the `[server]` table.
    #[track_caller]
    pub fn start(body: &str) -> Daemon {
        Daemon::builder().config(body).start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET, returning status, content type and body.
    pub fn get(&self, path: &str, accept: Option<&str>) -> (u16, String, String) {
        let mut request = self.http.get(self.url(path));
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let mut response = request.call().expect("HTTP request reaches the daemon");
        let status = response.status().as_u16();
        let content_type = content_type_of(&response);
        let body = response.body_mut().read_to_string().expect("body is text");
        (status, content_type, body)
    }

    /// POST a body; returns status and the body parsed as JSON (Null when it is not JSON).
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
        self.post_with(path, content_type, body, None)
    }

    /// POST with an optional bearer token.
    pub fn post_with(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("Content-Type", content_type);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.send(body).expect("HTTP request reaches the daemon");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST with any headers; returns status, content type and the raw body.
    pub fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut request = self.http.post(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).expect("HTTP request reaches the daemon");
        let status = response.status().as_u16();
        let content_type = content_type_of(&response);
        let body = response.body_mut().read_to_vec().unwrap_or_default();
        (status, content_type, body)
    }

    /// POST events as JSON, expecting a 202.
    #[track_caller]
    pub fn post_events(&self, events: &serde_json::Value) -> serde_json::Value {
        let (status, answer) = self.post(
            "/v1/events",
            "application/json",
            events.to_string().as_bytes(),
        );
        assert_eq!(status, 202, "{answer}");
        answer
    }

    /// Kills the daemon with `signal` and starts a new one on the same config and store.
    pub fn restart(mut self, signal: i32) -> Daemon {
        self.signal(signal);
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, scratch_dir());
        DaemonBuilder {
            body: String::new(),
            log_filter: self.log_filter.clone(),
            exec: Vec::new(),
            fd_limit: None,
            env: Vec::new(),
        }
        .spawn_in(dir, None)
    }

    /// The budget `name` as `GET /v1/budgets` shows it.
    #[track_caller]
    pub fn budget(&self, name: &str) -> serde_json::Value {
        let (_, _, body) = self.get("/v1/budgets", None);
        let budgets: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        budgets["budgets"]
            .as_array()
            .expect("budgets")
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no budget '{name}' in {budgets}"))
    }

    /// The Prometheus text exposition, parsed by an independent parser.
    pub fn scrape(&self) -> Scrape {
        let (status, _, body) = self.get("/metrics", None);
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Log lines so far (JSON, one per line).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits for the daemon to exit by itself (an `exec` whose command ended).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("costmeter to exit", timeout, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("daemon exits")
    }

    /// Waits until the daemon's readiness probe passes.
    pub fn wait_ready(&self) {
        wait_for("/readyz to pass", Duration::from_secs(10), || {
            (self.get("/readyz", None).0 == 200).then_some(())
        });
    }

    /// Polls the scrape until `series` (with `labels`) satisfies `check`; returns its value.
    #[track_caller]
    pub fn wait_metric(
        &self,
        series: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        check: impl Fn(f64) -> bool,
    ) -> f64 {
        let mut last = None;
        let found = {
            let deadline = Instant::now() + timeout;
            loop {
                let value = self.scrape().value(series, labels);
                if let Some(v) = value.filter(|v| check(*v)) {
                    break Some(v);
                }
                last = value;
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        found.unwrap_or_else(|| {
            panic!("{series}{labels:?} never satisfied the check within {timeout:?}; last value {last:?}")
        })
    }
}

impl DaemonBuilder {
    pub fn config(mut self, body: &str) -> Self {
        self.body.push_str(body);
        self
    }

    /// Runs `costmeter exec -- ARGS` instead of `costmeter run`.
    pub fn exec(mut self, args: &[&str]) -> Self {
        self.exec = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Sets a variable in the daemon's environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs the daemon under an open-file limit of `limit` (soft and hard).
    pub fn fd_limit(mut self, limit: u64) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// `COSTMETER_LOG` for the daemon, e.g. to see debug lines a test counts.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    /// Extra `[server]` keys go here, e.g. a token file.
    #[track_caller]
    pub fn start(self) -> Daemon {
        let dir = scratch_dir();
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", self.body);
        self.spawn_in(dir, Some(text))
    }

    #[track_caller]
    fn spawn_in(self, dir: tempfile::TempDir, config: Option<String>) -> Daemon {
        let config_path = dir.path().join("costmeter.toml");
        if let Some(text) = config {
            std::fs::write(&config_path, text).expect("write config");
        }
        let mut command = Command::new(costmeter_bin());
        if self.exec.is_empty() {
            command.arg("run").arg("--config").arg(&config_path);
        } else {
            command
                .arg("exec")
                .arg("--config")
                .arg(&config_path)
                .arg("--")
                .args(&self.exec);
        }
        if let Some(limit) = self.fd_limit {
            // SAFETY: setrlimit(2) between fork and exec, with a valid struct; async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .current_dir(dir.path())
            .env("COSTMETER_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn costmeter");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        let stderr_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = stderr_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let addr = wait_for(
            "the daemon to log its address",
            Duration::from_secs(20),
            || {
                let found = logs.lock().expect("log lock").iter().find_map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line).ok()?;
                    let fields = value.get("fields")?;
                    (fields.get("message")?.as_str()? == "listening")
                        .then(|| fields.get("addr")?.as_str()?.parse().ok())?
                });
                // An exec daemon whose command is quick may be gone already; that is only an
                // error if it never said where it listened.
                if found.is_none()
                    && stderr_closed.load(std::sync::atomic::Ordering::SeqCst)
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "costmeter exited early with {status}: {:?}",
                        logs.lock().map(|l| l.clone())
                    );
                }
                found
            },
        );
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Daemon {
            child,
            addr,
            dir,
            config_path,
            logs,
            http,
            log_filter: self.log_filter,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed scrape, keyed for easy look-ups.
pub struct Scrape {
    pub samples: Vec<prometheus_parse::Sample>,
    pub docs: HashMap<String, String>,
    pub text: String,
}

impl Scrape {
    #[track_caller]
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
        Scrape {
            samples: parsed.samples,
            docs: parsed.docs,
            text: text.to_string(),
        }
    }

    /// The value of `series` whose labels include all of `labels`.
    pub fn value(&self, series: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.metric == series && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }
}

/// A child process in its own process group, killed with its group on drop.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    /// Runs `script` under `sh -c` in a new process group.
    pub fn shell(script: &str) -> Workload {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        Workload { child }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Blocks until the workload prints `line` on stdout.
    pub fn wait_line(&mut self, line: &str) {
        let stdout = self.child.stdout.as_mut().expect("stdout piped");
        let mut reader = BufReader::new(stdout);
        let mut got = String::new();
        loop {
            got.clear();
            let n = reader.read_line(&mut got).expect("read workload stdout");
            assert!(n > 0, "workload exited before printing {line:?}");
            if got.trim_end() == line {
                return;
            }
        }
    }

    /// Kills the whole group and reaps the root, returning the kernel's CPU seconds for the
    /// root and every descendant it reaped (wait4's rusage).
    pub fn kill_and_rusage(self) -> f64 {
        let pid = self.pid();
        // SAFETY: signalling the process group we created; wait4 on our own child with a
        // zeroed rusage the kernel fills in.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            let reaped = libc::wait4(pid, &mut status, 0, &mut usage);
            assert_eq!(reaped, pid, "wait4 reaps the workload");
            let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            seconds(usage.ru_utime) + seconds(usage.ru_stime)
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: signalling the process group we created.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// POSTs a JSON body of `bytes` spaces over raw TCP, ignoring a write the daemon cut short
/// (it answers 413 and closes once the cap is passed); returns the status line.
pub fn post_oversize(daemon: &Daemon, path: &str, bytes: usize) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(daemon.addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write headers");
    let _ = stream.write_all(&vec![b' '; bytes]);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs Debian's headless Chromium with the flags this machine needs (no sandbox as root, no
/// background networking on a closed network) and a fresh profile; returns its output.
pub fn headless_chromium(browser: &str, profile: &Path, args: &[String]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Whether `pid` runs. A zombie is dead for this purpose: it runs nothing.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// The kernel's CPU figure for a live process and its reaped children, from /proc/PID/stat.
pub fn proc_cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = &stat[stat.rfind(')').expect("comm closes") + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14-17 of stat (utime, stime, cutime, cstime) are 11-14 after the comm.
    let ticks: f64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<f64>().expect("number"))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The `comm` of a live process, or None once it is gone.
pub fn proc_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

/// Versions of the official OpenTelemetry Python packages the OTLP tests drive costmeter with.
const OTEL_PYTHON_PACKAGES: &[&str] = &[
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
];

/// The providers' official Python SDKs the proxy tests drive costmeter with.
const SDK_PYTHON_PACKAGES: &[&str] =
    &["openai==3.57.0", "anthropic==2.15.0", "google-genai==3.6.1"];

/// The official SDKs with the GenAI instrumentations people add to them: the OpenTelemetry
/// project's openai-v2 (with the genai utilities it was released against) and OpenLLMetry's
/// anthropic, on the OpenTelemetry SDK and OTLP/HTTP exporter.
const GENAI_PYTHON_PACKAGES: &[&str] = &[
    "openai==3.57.0",
    "anthropic==2.15.0",
    "httpx==0.29.0",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
    "opentelemetry-instrumentation-openai-v2==2.4b0",
    "opentelemetry-util-genai==0.4b0",
    "opentelemetry-instrumentation-anthropic==0.62.4",
];

/// A Python with [`GENAI_PYTHON_PACKAGES`], as [`otel_python`].
pub fn genai_python() -> Option<PathBuf> {
    static PYTHON: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| python_venv("genai-venv", GENAI_PYTHON_PACKAGES))
        .clone()
}

/// A Python with the official OpenTelemetry SDK and OTLP/HTTP exporter, installed from PyPI
/// into a virtualenv under the target dir the first time a test asks. `None` (the test then
/// skips) when that cannot be done here, unless `COSTMETER_REQUIRE_TOOLS` is set.
pub fn otel_python() -> Option<PathBuf> {
    static PYTHON: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| python_venv("otel-venv", OTEL_PYTHON_PACKAGES))
        .clone()
}

/// A Python with the official `openai`, `anthropic` and `google-genai` SDKs, as
/// [`otel_python`].
pub fn sdk_python() -> Option<PathBuf> {
    static PYTHON: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| python_venv("sdk-venv", SDK_PYTHON_PACKAGES))
        .clone()
}

fn python_venv(name: &str, packages: &[&str]) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin/python");
    let marker = venv.join(format!("installed-{}", packages.join("+")));
    if marker.exists() {
        return Some(python);
    }
    let made = require_tool("python3", "apt-get install python3 python3-venv")
        .map(|python3| {
            Command::new(python3)
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(packages)
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .unwrap_or(false);
    if !made {
        assert!(
            std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
            "could not install {packages:?} from PyPI into {}",
            venv.display()
        );
        eprintln!("skipped: {packages:?} could not be installed");
        return None;
    }
    std::fs::write(&marker, "").ok();
    Some(python)
}

/// The Codex CLI as its users install it (`npm install @openai/codex`), pinned, into a folder
/// under the target dir the first time a test asks. `None` (the test then skips) when npm or
/// the registry is not there, unless `COSTMETER_REQUIRE_TOOLS` is set.
pub fn codex_cli() -> Option<PathBuf> {
    static CODEX: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CODEX
        .get_or_init(|| npm_cli("@openai/codex@0.171.0", "codex"))
        .clone()
}

/// Claude Code as its users install it (`npm install @anthropic-ai/claude-code`), as
/// [`codex_cli`].
pub fn claude_code_cli() -> Option<PathBuf> {
    static CLAUDE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CLAUDE
        .get_or_init(|| npm_cli("@anthropic-ai/claude-code@2.1.197", "claude"))
        .clone()
}

/// Gemini CLI as its users install it (`npm install @google/gemini-cli`), as [`codex_cli`].
pub fn gemini_cli() -> Option<PathBuf> {
    static GEMINI: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    GEMINI
        .get_or_init(|| npm_cli("@google/gemini-cli@0.61.0", "gemini"))
        .clone()
}

/// opencode as its users install it (`npm install opencode-ai`), as [`codex_cli`].
pub fn opencode_cli() -> Option<PathBuf> {
    static OPENCODE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    OPENCODE
        .get_or_init(|| npm_cli("opencode-ai@1.18.33", "opencode"))
        .clone()
}

fn npm_cli(package: &str, bin: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("npm-{}", package.replace(['@', '/'], "_")));
    let program = dir.join("node_modules/.bin").join(bin);
    let marker = dir.join("installed");
    if marker.exists() {
        return Some(program);
    }
    let made = require_tool("npm", "apt-get install npm").is_some_and(|npm| {
        std::fs::create_dir_all(&dir).is_ok()
            && Command::new(npm)
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg(package)
                .status()
                .is_ok_and(|s| s.success())
    });
    if !made {
        assert!(
            std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
            "could not install {package} from npm into {}",
            dir.display()
        );
        eprintln!("skipped: {package} could not be installed");
        return None;
    }
    std::fs::write(&marker, "").ok();
    Some(program)
}

/// Runs a Python script with `args`; it must succeed and print one JSON value, which is
/// returned. A failure shows the script's stderr under `what`.
#[track_caller]
pub fn run_python(python: &Path, what: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// The stand-in LLM provider (`tests/standin/provider.py`): Anthropic, OpenAI and Gemini wire
/// formats, whole and streamed, over TLS with `ca`'s server certificate when given. Every
/// answer's usage, as the provider reported it, is logged. Killed on drop.
pub struct StandIn {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl StandIn {
    pub fn start(dir: &Path, tls: Option<&TestCa>) -> StandIn {
        let port = free_port();
        let log = dir.join(format!("standin-{port}.jsonl"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/provider.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(port.to_string()).arg(&log);
        if let Some(ca) = tls {
            command.arg(&ca.cert).arg(&ca.key);
        }
        let child = spawn_ready(&mut command);
        let scheme = if tls.is_some() { "https" } else { "http" };
        StandIn {
            child,
            url: format!("{scheme}://localhost:{port}"),
            log,
        }
    }

    /// The answers given so far, one JSON object each.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        json_lines(&self.log)
    }
}

/// Starts a helper that prints `ready` on stdout once it listens; waits for that line.
fn spawn_ready(command: &mut Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("the helper says it is ready");
    assert_eq!(ready.trim(), "ready");
    child
}

/// A JSON-lines log, as far as it is written.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A timestamp at `time` (`HH:MM:SS`, optionally with a fraction) on yesterday's UTC date, fixed
/// for the whole test process: old enough that `since=1h` excludes it, and always within the
/// store's retention, however far the calendar moves from when the test was written.
pub fn at(time: &str) -> String {
    static DAY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let day = DAY.get_or_init(|| {
        let yesterday = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24))
            .expect("time");
        yesterday.strftime("%Y-%m-%d").to_string()
    });
    format!("{day}T{time}Z")
}

/// A private CA made at test time, and a server certificate it signed for `localhost` and
/// 127.0.0.1; all as PEM files in a folder of their own.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_ca() -> TestCa {
    let dir = scratch_dir();
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "costmeter test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    TestCa {
        ca: path("ca.pem", &ca.as_ref().pem()),
        cert: path("server.pem", &leaf.pem()),
        key: path("server.key", &leaf_key.serialize_pem()),
        dir,
    }
}

/// An https receiver in Python's standard library (an independent TLS peer), serving
/// `ca`'s server certificate: every POST is answered 200 and logged as one JSON line
/// (`path`, `content_type`, `bytes`, and the body when it is text). Killed on drop.
pub struct HttpsReceiver {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl HttpsReceiver {
    pub fn start(ca: &TestCa) -> HttpsReceiver {
        let port = free_port();
        let log = ca.dir.path().join(format!("received-{port}.jsonl"));
        let script = r#"
import http.server, json, ssl, sys
port, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        entry = {"path": self.path, "content_type": self.headers.get("Content-Type"), "bytes": len(body)}
        try:
            entry["body"] = body.decode()
        except UnicodeDecodeError:
            pass
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;
        let child = spawn_ready(
            Command::new("python3")
                .arg("-c")
                .arg(script)
                .arg(port.to_string())
                .arg(&ca.cert)
                .arg(&ca.key)
                .arg(&log),
        );
        HttpsReceiver {
            child,
            url: format!("https://localhost:{port}"),
            log,
        }
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        json_lines(&self.log)
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a streamed call to the proxy with raw HTTP/1.1 and reads until `until` arrived; the
/// connection is returned open (drop it to leave mid-stream).
pub fn open_stream(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
    until: &str,
) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut head = format!(
        "POST /proxy/anthropic/v1/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended before '{until}'");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

/// A real `redis-server` on a free loopback port, its append-only file (fsync'd on every
/// write) in `dir`, so a restart on the same port and folder keeps what it acknowledged.
/// Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// TLS only, with this server certificate and key (clients are not asked for one).
    tls: Option<(PathBuf, PathBuf)>,
    password: Option<String>,
}

impl RedisServer {
    /// None (the test skips) when redis-server is not installed, outside CI.
    pub fn start(dir: &Path) -> Option<RedisServer> {
        require_tool("redis-server", "apt-get install redis-server")?;
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            tls: None,
            password: None,
        };
        server.restart();
        Some(server)
    }

    /// A server that speaks only TLS, with `ca`'s certificate for localhost, and asks for
    /// `password`.
    pub fn start_tls(dir: &Path, ca: &TestCa, password: &str) -> Option<RedisServer> {
        require_tool("redis-server", "apt-get install redis-server")?;
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            tls: Some((ca.cert.clone(), ca.key.clone())),
            password: Some(password.to_string()),
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts it again (after `kill`) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            Some((cert, key)) => {
                command.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ]);
                command.arg("--tls-cert-file").arg(cert);
                command.arg("--tls-key-file").arg(key);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        if self.tls.is_some() {
            // The test's own client does not speak TLS: a listening port is the sign.
            wait_for("redis-server to listen", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
            });
            return;
        }
        wait_for(
            "redis-server to answer PING",
            Duration::from_secs(20),
            || {
                self.client()
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .ok()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
            },
        );
    }

    /// SIGKILL: an outage with no warning.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a redis URL")
    }

    /// A field of a hash, as a number (0 when absent).
    pub fn hash_number(&self, key: &str, field: &str) -> f64 {
        let mut conn = self.client().get_connection().expect("connect to redis");
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query::<Option<f64>>(&mut conn)
            .expect("HGET")
            .unwrap_or(0.0)
    }

    /// Keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.client().get_connection().expect("connect to redis");
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn)
            .expect("KEYS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
