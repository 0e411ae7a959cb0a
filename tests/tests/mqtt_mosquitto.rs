//! Debian's `mosquitto_pub` / `mosquitto_sub` (libmosquitto, an independent MQTT
//! implementation) against the real binary: QoS 0/1/2 in 3.1, 3.1.1 and 5.0, retained
//! messages, persistent sessions, MQTT 5 user properties, and wills.
//!
//! `tests/clients/setup.sh` installs `mosquitto-clients` when it runs as root; without
//! the tools these tests print a note and pass.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard_tests::{Broker, run_with_timeout};

const WAIT: Duration = Duration::from_secs(10);

fn have_mosquitto() -> bool {
    let ok = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !ok {
        eprintln!("NOTE: mosquitto_pub not found (apt-get install mosquitto-clients); test skipped");
    }
    ok
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// A running `mosquitto_sub -d`, read line by line on a thread.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Message lines that arrived before the SUBACK (a resumed session's queue).
    early: std::collections::VecDeque<String>,
}

fn is_message(line: &str) -> bool {
    !line.starts_with("Client ") && !line.starts_with("Subscribed")
}

impl Sub {
    fn start(broker: &Broker, args: &[&str]) -> Sub {
        // stdbuf: mosquitto_sub's stdout is block-buffered on a pipe.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                &broker.mqtt.ip().to_string(),
                "-p",
                &broker.mqtt.port().to_string(),
                "-d",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs");
        let out: ChildStdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sub = Sub { child, lines: rx, early: Default::default() };
        let deadline = Instant::now() + WAIT;
        loop {
            match sub.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("received SUBACK") => break,
                Ok(l) if is_message(&l) => sub.early.push_back(l),
                Ok(_) => {}
                Err(e) => panic!("mosquitto_sub: no SUBACK within {WAIT:?}: {e}"),
            }
        }
        sub
    }

    /// The next line satisfying `f`, skipping others; panics after [`WAIT`].
    fn wait_for(&mut self, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if f(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("mosquitto_sub: no expected line within {WAIT:?}: {e}"),
            }
        }
    }

    /// The next message line (`-v` output: `topic payload`).
    fn message(&mut self) -> String {
        match self.early.pop_front() {
            Some(l) => l,
            None => self.wait_for(is_message),
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(broker: &Broker, args: &[&str]) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", &broker.mqtt.ip().to_string(), "-p", &broker.mqtt.port().to_string()]).args(args);
    let out = run_with_timeout(&mut cmd, WAIT).unwrap_or_else(|o| panic!("mosquitto_pub timed out: {o:?}"));
    assert!(out.status.success(), "mosquitto_pub {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mosquitto_every_qos_and_version() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let base = unique(version);
        let filter = format!("{base}/#");
        let mut sub = Sub::start(&broker, &["-V", version, "-v", "-q", "2", "-t", &filter]);
        for qos in ["0", "1", "2"] {
            publish(&broker, &["-V", version, "-q", qos, "-t", &format!("{base}/q{qos}"), "-m", &format!("m{qos}")]);
            assert_eq!(sub.message(), format!("{base}/q{qos} m{qos}"), "{version} QoS {qos}");
        }
    }
}

#[test]
fn mosquitto_retained_and_user_properties() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let topic = unique("ret");
    publish(&broker, &["-q", "1", "-r", "-t", &topic, "-m", "kept"]);
    let mut sub = Sub::start(&broker, &["-v", "-q", "1", "-t", &topic]);
    assert_eq!(sub.message(), format!("{topic} kept"));
    drop(sub);
    // MQTT 5 user properties, printed by mosquitto_sub's `%P` format.
    let t5 = unique("props");
    let mut sub = Sub::start(&broker, &["-V", "mqttv5", "-q", "1", "-t", &t5, "-F", "%t %p %P"]);
    publish(&broker, &["-V", "mqttv5", "-q", "1", "-t", &t5, "-m", "hi", "-D", "publish", "user-property", "k", "v"]);
    assert_eq!(sub.message(), format!("{t5} hi k:v"));
}

#[test]
fn mosquitto_persistent_session_and_will() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let id = unique("sess");
    let topic = unique("t");
    let sub = Sub::start(&broker, &["-c", "-i", &id, "-q", "1", "-t", &topic, "-v"]);
    drop(sub);
    for i in 0..3 {
        publish(&broker, &["-q", "1", "-t", &topic, "-m", &format!("m{i}")]);
    }
    let mut sub = Sub::start(&broker, &["-c", "-i", &id, "-q", "1", "-t", &topic, "-v"]);
    for i in 0..3 {
        assert_eq!(sub.message(), format!("{topic} m{i}"));
    }
    drop(sub);
    // A killed client's will.
    let wt = unique("will");
    let mut watcher = Sub::start(&broker, &["-v", "-q", "1", "-t", &wt]);
    let victim =
        Sub::start(&broker, &["-t", &unique("x"), "--will-topic", &wt, "--will-payload", "gone", "--will-qos", "1"]);
    drop(victim);
    assert_eq!(watcher.message(), format!("{wt} gone"));
}
