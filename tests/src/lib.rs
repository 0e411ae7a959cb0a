//! Shared harness for the end-to-end tests: the REAL `switchyard` binary in a child process,
//! driven over its sockets and signals, plus helpers to run the stock-client scripts in
//! `tests/clients/`.
//!
//! A [`Broker`] gets its own temporary directory (config file, `data/`, working directory) and
//! ephemeral ports: the binary is started with `--config <tmp>/switchyard.toml
//! --data-dir <tmp>/data --amqp-listen 127.0.0.1:0 --stomp-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --aws-listen 127.0.0.1:0`
//! (and `--ws-stomp-listen`, `--ws-mqtt-listen`, `--http-listen`, all `127.0.0.1:0`), and the harness learns the ports from the
//! one line the binary prints on stdout when it is ready:
//!
//! ```text
//! switchyard ready {"amqp":"127.0.0.1:45678"}
//! ```
//!
//! The broker's log (its stderr) is echoed through `eprintln!`, so the test runner shows it only
//! for failing tests, and is kept for error messages ([`Broker::logs`]).
//!
//! Which binary: `$SWITCHYARD_BIN` if set, else `<target>/debug/switchyard`, where `<target>` is
//! `$CARGO_TARGET_DIR` or `<repo>/target`. If that file is missing or older than the sources, the
//! harness runs `cargo build -p switchyard-server --bin switchyard` once per test process
//! (cargo's own lock serialises concurrent test processes).
//!
//! Everything here panics with context on failure: it is test code, and a panic with the
//! broker's log is the most useful report.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// How long the binary may take to print its ready line (`SWITCHYARD_READY_TIMEOUT` seconds
/// overrides it, for soak runs whose recovery takes longer).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn ready_timeout() -> Duration {
    std::env::var("SWITCHYARD_READY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(READY_TIMEOUT, Duration::from_secs)
}

/// How long [`Broker::terminate`] waits for the process to exit: the binary's 10 s shutdown
/// grace period, plus flushing, plus slack for a loaded machine.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client script may run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Prefix of the binary's ready line; the rest is a JSON object `{listener: "ip:port"}`.
pub const READY_PREFIX: &str = "switchyard ready ";

/// Prefix of environment overrides understood by the binary (`SWITCHYARD_<SECTION>__<KEY>`).
const ENV_PREFIX: &str = "SWITCHYARD_";

/// Name of the broker executable.
const BIN_NAME: &str = "switchyard";

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { repo_root().join(dir) }
        }
        None => repo_root().join("target"),
    }
}

/// The broker binary to test, built first if needed (see the module docs).
pub fn switchyard_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SWITCHYARD_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "SWITCHYARD_BIN={} is not a file", bin.display());
            return bin;
        }
        let bin = target_dir().join("debug").join(format!("{BIN_NAME}{}", std::env::consts::EXE_SUFFIX));
        if needs_build(&bin) {
            build_binary();
        }
        assert!(bin.is_file(), "cargo build did not produce {}", bin.display());
        bin
    })
    .clone()
}

/// True when `bin` is missing or older than any source that goes into it.
fn needs_build(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = repo_root();
    let mut inputs = vec![root.join("src"), root.join("Cargo.toml"), root.join("Cargo.lock")];
    if let Ok(bridges) = std::fs::read_dir(root.join("bridges")) {
        for bridge in bridges.flatten() {
            inputs.push(bridge.path().join("src"));
            inputs.push(bridge.path().join("Cargo.toml"));
        }
    }
    inputs.iter().any(|p| newest_mtime(p).is_some_and(|t| t > built))
}

/// The newest modification time of a file or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest_mtime(&e.path())).max()
}

/// `cargo build -p switchyard-server --bin switchyard` in the repository.
fn build_binary() {
    eprintln!("[harness] building the switchyard binary");
    cargo_build("switchyard-server", BIN_NAME);
}

/// `cargo build -p <package> --bin <bin>` in the repository (debug profile; a no-op when the
/// binary is fresh); panics with cargo's output if it fails. Returns the binary's path.
pub fn cargo_build(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", Path::new(&cargo).display()));
    assert!(
        output.status.success(),
        "cargo build -p {package} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir().join("debug").join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// Why a broker did not start.
#[derive(Debug)]
pub enum StartError {
    /// The binary could not be run at all.
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The process exited before printing its ready line (e.g. a config error).
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Everything it wrote to stderr.
        log: String,
    },
    /// No ready line within [`READY_TIMEOUT`]; the process was killed.
    Timeout {
        /// Everything it wrote to stderr.
        log: String,
    },
    /// The ready line was not `switchyard ready {json}` with an `amqp` address.
    BadReadyLine {
        /// The line.
        line: String,
        /// What was wrong.
        problem: String,
        /// Everything it wrote to stderr.
        log: String,
    },
}

impl StartError {
    /// The broker's stderr up to the failure.
    pub fn log(&self) -> &str {
        match self {
            StartError::Spawn { .. } => "",
            StartError::Exited { log, .. } | StartError::Timeout { log } | StartError::BadReadyLine { log, .. } => log,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Spawn { bin, error } => write!(f, "cannot run {}: {error}", bin.display()),
            StartError::Exited { status, log } => {
                write!(f, "switchyard exited ({status}) before it was ready; its stderr:\n{log}")
            }
            StartError::Timeout { log } => {
                write!(f, "switchyard printed no ready line within {READY_TIMEOUT:?}; its stderr:\n{log}")
            }
            StartError::BadReadyLine { line, problem, log } => {
                write!(f, "bad ready line {line:?}: {problem}; stderr:\n{log}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// What the stdout reader thread reports.
enum StdoutEvent {
    Line(String),
    Eof,
}

/// One running process of the binary.
#[derive(Debug)]
struct Running {
    child: Child,
    /// Echoes and stores stderr; ends at EOF, i.e. once the process is gone.
    stderr_thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Waits up to `timeout` for the process to exit.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.join_stderr();
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => return None,
                Err(e) => panic!("waiting for switchyard (pid {}): {e}", self.child.id()),
            }
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) -> ExitStatus {
        // Already exited is fine: wait() below returns its status.
        let _ = self.child.kill();
        let status = self.child.wait().unwrap_or_else(|e| panic!("reaping switchyard: {e}"));
        self.join_stderr();
        status
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

/// A `switchyard` process with its own temporary directory and ephemeral ports.
///
/// Dropping it kills the process (SIGKILL) and deletes the directory.
#[derive(Debug)]
pub struct Broker {
    running: Option<Running>,
    /// Holds `switchyard.toml`, `data/`; the process's working directory. Kept across restarts.
    dir: TempDir,
    /// Extra environment for every start.
    env: Vec<(String, String)>,
    /// The broker's stderr lines, over all its runs.
    log: Arc<Mutex<Vec<String>>>,
    /// Address of the AMQP listener of the current run.
    pub amqp: SocketAddr,
    /// Address of the STOMP listener of the current run.
    pub stomp: SocketAddr,
    /// Address of the MQTT listener of the current run.
    pub mqtt: SocketAddr,
    /// Address of the STOMP-over-WebSocket listener of the current run (`ws_stomp`).
    pub ws_stomp: SocketAddr,
    /// Address of the MQTT-over-WebSocket listener of the current run (`ws_mqtt`).
    pub ws_mqtt: SocketAddr,
    /// Address of the main HTTP listener of the current run (`http`: /ws, /ws/live, /demo).
    pub http: SocketAddr,
    /// Every listener of the current run, by name, as printed on the ready line.
    pub listeners: BTreeMap<String, SocketAddr>,
}

impl Broker {
    /// Starts a broker with the default configuration. Panics (with its log) if it fails.
    pub fn start() -> Broker {
        Broker::start_with("", &[])
    }

    /// Starts a broker whose config file is `config_toml` (e.g. `"[amqp]\nheartbeat = 5\n"`)
    /// and whose environment has `env` added (e.g. `[("SWITCHYARD_AMQP__FRAME_MAX", "8192")]`).
    /// `--data-dir` and `--amqp-listen 127.0.0.1:0` are always passed and win over both.
    /// Panics (with the broker's log) if it does not become ready.
    pub fn start_with(config_toml: &str, env: &[(&str, &str)]) -> Broker {
        Broker::try_start_with(config_toml, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Broker::start_with`], but returns why it did not start (for tests of bad configs).
    pub fn try_start_with(config_toml: &str, env: &[(&str, &str)]) -> Result<Broker, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        std::fs::write(dir.path().join("switchyard.toml"), config_toml)
            .unwrap_or_else(|e| panic!("writing the test config: {e}"));
        let mut broker = Broker {
            running: None,
            dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: Arc::new(Mutex::new(Vec::new())),
            amqp: SocketAddr::from(([127, 0, 0, 1], 0)),
            stomp: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_stomp: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: BTreeMap::new(),
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// Starts the process and waits for its ready line.
    fn spawn(&mut self) -> Result<(), StartError> {
        let bin = switchyard_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--amqp-listen", "127.0.0.1:0", "--stomp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .args(["--aws-listen", "127.0.0.1:0"])
            .args([
                "--ws-stomp-listen",
                "127.0.0.1:0",
                "--ws-mqtt-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Overrides set in the developer's shell must not leak into tests.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with(ENV_PREFIX) && n.contains("__")) {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));

        let mut child = cmd.spawn().map_err(|error| StartError::Spawn { bin: bin.clone(), error })?;
        let pid = child.id();
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => (out, err),
            _ => panic!("child stdio was not piped"),
        };

        let log = Arc::clone(&self.log);
        let stderr_thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[switchyard {pid}] {line}");
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });

        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut ready = false;
            while let Some(Ok(line)) = lines.next() {
                if ready {
                    // Nothing but the ready line is expected on stdout; show it anyway.
                    println!("[switchyard {pid} stdout] {line}");
                } else {
                    ready = line.starts_with(READY_PREFIX);
                    if tx.send(StdoutEvent::Line(line)).is_err() {
                        break;
                    }
                }
            }
            let _ = tx.send(StdoutEvent::Eof);
        });

        let mut running = Running { child, stderr_thread: Some(stderr_thread) };
        let deadline = Instant::now() + ready_timeout();
        let line = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(StdoutEvent::Line(line)) if line.starts_with(READY_PREFIX) => break line,
                Ok(StdoutEvent::Line(line)) => println!("[switchyard {pid} stdout] {line}"),
                Ok(StdoutEvent::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    let status = running.wait_timeout(Duration::from_secs(5)).unwrap_or_else(|| running.kill());
                    return Err(StartError::Exited { status, log: self.logs() });
                }
                Err(RecvTimeoutError::Timeout) => {
                    running.kill();
                    return Err(StartError::Timeout { log: self.logs() });
                }
            }
        };

        match parse_ready_line(&line) {
            Ok(listeners) => match listeners.get("amqp") {
                Some(amqp) => {
                    self.amqp = *amqp;
                    self.stomp = listeners.get("stomp").copied().unwrap_or(self.stomp);
                    self.mqtt = listeners.get("mqtt").copied().unwrap_or(self.mqtt);
                    self.ws_stomp = listeners.get("ws_stomp").copied().unwrap_or(self.ws_stomp);
                    self.ws_mqtt = listeners.get("ws_mqtt").copied().unwrap_or(self.ws_mqtt);
                    self.http = listeners.get("http").copied().unwrap_or(self.http);
                    self.listeners = listeners;
                    self.running = Some(running);
                    Ok(())
                }
                None => {
                    running.kill();
                    Err(StartError::BadReadyLine { line, problem: "no \"amqp\" listener".into(), log: self.logs() })
                }
            },
            Err(problem) => {
                running.kill();
                Err(StartError::BadReadyLine { line, problem, log: self.logs() })
            }
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2F`: the default user on the default vhost.
    pub fn amqp_url(&self) -> String {
        self.amqp_url_for("guest", "guest", "/")
    }

    /// An AMQP URL for `user`/`password` on `vhost`, percent-encoded as the URI spec says.
    pub fn amqp_url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        format!(
            "amqp://{}:{}@{}:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.amqp.ip(),
            self.amqp.port(),
            percent_encode(vhost)
        )
    }

    /// The temporary directory: working directory of the process, holds the config file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory passed with `--data-dir` (kept across [`Broker::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file passed with `--config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.toml")
    }

    /// The process id of the current run, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// The broker process's resident set in KiB (`VmRSS` from `/proc/<pid>/status`).
    /// Panics if it is not running.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid().expect("broker running"))
    }

    /// Everything the broker wrote to stderr so far, over all its runs.
    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends a signal by name (`"TERM"`, `"INT"`, `"KILL"`, ...) to the running process.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().unwrap_or_else(|| panic!("switchyard is not running"));
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$0\" \"$1\"", name, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        assert!(status.success(), "kill -s {name} {pid} failed: {status}");
    }

    /// SIGKILL: the crash case. Waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill();
        }
    }

    /// SIGTERM, then waits (up to [`EXIT_TIMEOUT`]) for the process to exit and returns its
    /// status. Panics, after a SIGKILL, if it does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal` and waits as [`Broker::terminate`] does.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let mut running = self.running.take().unwrap_or_else(|| panic!("switchyard is not running"));
        match running.wait_timeout(EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                running.kill();
                panic!("switchyard did not exit within {EXIT_TIMEOUT:?} of SIG{signal}; its log:\n{}", self.logs());
            }
        }
    }

    /// Stops the broker if it runs (SIGTERM; it must exit successfully), then starts it again
    /// on the same data directory and config; the ports change. Panics if it does not restart.
    pub fn restart(&mut self) {
        if self.running.is_some() {
            let status = self.terminate();
            assert!(status.success(), "switchyard exited with {status} on SIGTERM; log:\n{}", self.logs());
        }
        self.spawn().unwrap_or_else(|e| panic!("restarting switchyard: {e}"));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses `switchyard ready {"name":"ip:port",...}`.
pub fn parse_ready_line(line: &str) -> Result<BTreeMap<String, SocketAddr>, String> {
    let json = line.strip_prefix(READY_PREFIX).ok_or_else(|| format!("does not start with {READY_PREFIX:?}"))?;
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON object of strings: {e}"))?;
    map.into_iter()
        .map(|(name, addr)| {
            let parsed = addr.parse().map_err(|e| format!("listener {name}: {addr:?} is not an address: {e}"))?;
            Ok((name, parsed))
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The language of a client script in `tests/clients/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `tests/clients/python/*.py`, run by the venv's interpreter (pika, aio-pika).
    Python,
    /// `tests/clients/node/*.js`, run by `node` (amqplib).
    Node,
}

impl Client {
    /// The folder of this kind's scripts.
    pub fn dir(self) -> PathBuf {
        let name = match self {
            Client::Python => "python",
            Client::Node => "node",
        };
        repo_root().join("tests").join("clients").join(name)
    }
}

/// The client-script environment made by `tests/clients/setup.sh`:
/// `$SWITCHYARD_CLIENT_ENV`, else `<repo>/target/client-env`.
pub fn client_env_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_CLIENT_ENV")
        .map_or_else(|| repo_root().join("target").join("client-env"), PathBuf::from)
}

/// The Python interpreter of the client venv (`<client env>/py/bin/python3`).
pub fn python() -> PathBuf {
    client_env_dir().join("py").join("bin").join("python3")
}

/// A command that runs `script` (a path relative to [`Client::dir`], e.g. `"basic_pubsub.py"`)
/// against `broker`, with `AMQP_URL` set (and `AMQP_HOST`, `AMQP_PORT`, `STOMP_HOST`, `STOMP_PORT`, and
/// `MQTT_HOST`, `MQTT_PORT` when the ready line names an `mqtt` listener, and `WS_STOMP_URL`,
/// `WS_MQTT_URL`, `HTTP_URL` when it names an `http` one), working directory the
/// script's folder. Panics if the interpreter or the script is missing.
pub fn client_command(client: Client, script: &str, broker: &Broker) -> Command {
    let dir = client.dir();
    let path = dir.join(script);
    assert!(path.is_file(), "client script {} does not exist", path.display());
    let mut cmd = match client {
        Client::Python => {
            let py = python();
            assert!(py.is_file(), "{} does not exist: run tests/clients/setup.sh (tests/run does)", py.display());
            let mut cmd = Command::new(py);
            // So a script killed by its watchdog (or by us) still shows how far it got.
            cmd.env("PYTHONUNBUFFERED", "1");
            cmd
        }
        Client::Node => {
            assert!(
                dir.join("node_modules").is_dir(),
                "{}/node_modules does not exist: run tests/clients/setup.sh (tests/run does)",
                dir.display()
            );
            Command::new("node")
        }
    };
    cmd.arg(&path)
        .current_dir(&dir)
        .env("AMQP_URL", broker.amqp_url())
        .env("AMQP_HOST", broker.amqp.ip().to_string())
        .env("AMQP_PORT", broker.amqp.port().to_string())
        .env("STOMP_HOST", broker.stomp.ip().to_string())
        .env("STOMP_PORT", broker.stomp.port().to_string())
        .stdin(Stdio::null());
    if let Some(aws) = broker.listeners.get("aws") {
        cmd.env("AWS_ENDPOINT_URL", format!("http://{aws}"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
    if broker.listeners.contains_key("mqtt") {
        cmd.env("MQTT_HOST", broker.mqtt.ip().to_string()).env("MQTT_PORT", broker.mqtt.port().to_string());
    }
    if broker.listeners.contains_key("http") {
        cmd.env("WS_STOMP_URL", format!("ws://{}/ws", broker.ws_stomp))
            .env("WS_MQTT_URL", format!("ws://{}/ws", broker.ws_mqtt))
            .env("HTTP_URL", format!("http://{}", broker.http));
    }
    cmd
}

/// Runs a client script (see [`client_command`]) with no arguments and asserts that it exits
/// 0 within [`CLIENT_TIMEOUT`]; the panic message carries its stdout, stderr and the tail of
/// the broker's log.
pub fn run_client_script(client: Client, script: &str, broker: &Broker) -> Output {
    run_client_script_with(client, script, broker, &[])
}

/// [`run_client_script`] with arguments for the script (e.g. names of the tests to run).
pub fn run_client_script_with(client: Client, script: &str, broker: &Broker, args: &[&str]) -> Output {
    let mut cmd = client_command(client, script, broker);
    cmd.args(args);
    let what = format!("{client:?} client {script} {}", args.join(" "));
    let output = run_with_timeout(&mut cmd, CLIENT_TIMEOUT)
        .unwrap_or_else(|partial| panic!("{what} timed out after {CLIENT_TIMEOUT:?}\n{}", describe(&partial, broker)));
    assert!(output.status.success(), "{what} failed ({})\n{}", output.status, describe(&output, broker));
    output
}

/// Stdout, stderr and the broker's last log lines, for a panic message.
fn describe(output: &Output, broker: &Broker) -> String {
    let log = broker.logs();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}\n--- broker log (last 60 lines) ---\n{tail}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )
}

/// Runs `cmd` to completion, capturing stdout and stderr; after `timeout` kills it and returns
/// what it printed so far as `Err`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, Output> {
    let program = cmd.get_program().to_owned();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", Path::new(&program).display()));
    let stdout = child.stdout.take().map(reader_thread);
    let stderr = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                break (wait_or_panic(&mut child, &program), true);
            }
            Err(e) => panic!("waiting for {}: {e}", Path::new(&program).display()),
        }
    };
    let collect = |t: Option<JoinHandle<Vec<u8>>>| t.and_then(|t| t.join().ok()).unwrap_or_default();
    let output = Output { status, stdout: collect(stdout), stderr: collect(stderr) };
    if timed_out { Err(output) } else { Ok(output) }
}

fn wait_or_panic(child: &mut Child, program: &OsStr) -> ExitStatus {
    child.wait().unwrap_or_else(|e| panic!("reaping {}: {e}", Path::new(program).display()))
}

/// Reads a pipe to its end on a thread, so neither pipe can fill up and block the child.
fn reader_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// The resident set of process `pid` in KiB (`VmRSS` from `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let map =
            parse_ready_line(r#"switchyard ready {"amqp":"127.0.0.1:45678","mqtt":"[::1]:1883"}"#).expect("valid line");
        assert_eq!(map["amqp"], SocketAddr::from(([127, 0, 0, 1], 45678)));
        assert_eq!(map["mqtt"].port(), 1883);
        assert!(parse_ready_line("switchyard ready nope").is_err());
        assert!(parse_ready_line(r#"ready {"amqp":"127.0.0.1:1"}"#).is_err());
        assert!(parse_ready_line(r#"switchyard ready {"amqp":"localhost"}"#).is_err());
    }

    #[test]
    fn urls_are_percent_encoded() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
        assert_eq!(percent_encode("plain-name_1.x~"), "plain-name_1.x~");
    }
}
