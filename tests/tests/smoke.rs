//! Smoke tests of the real binary: it starts and announces its ports, speaks AMQP's first
//! frame, stops cleanly on SIGTERM/SIGINT, restarts on its data directory, and refuses bad
//! configuration with a clear message.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::{Broker, READY_PREFIX, StartError, run_with_timeout, switchyard_bin};

/// The binary's shutdown grace period (`SHUTDOWN_GRACE` in bridges/server).
const GRACE: Duration = Duration::from_secs(10);

/// Slack on top of the grace period for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(5);

/// How long a socket read may block before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP 0-9-1 protocol header (spec §4.2.2).
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// Frame type of a method frame, and the frame-end octet (spec §4.2.3, §4.2.6).
const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

fn connect(broker: &Broker) -> TcpStream {
    let stream = TcpStream::connect_timeout(&broker.amqp, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", broker.amqp));
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("set write timeout");
    stream
}

/// Reads one frame: (type, channel, payload).
fn read_frame(stream: &mut TcpStream, broker: &Broker) -> (u8, u16, Vec<u8>) {
    let mut header = [0u8; 7];
    stream
        .read_exact(&mut header)
        .unwrap_or_else(|e| panic!("reading a frame header: {e}\nbroker log:\n{}", broker.logs()));
    let kind = header[0];
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    assert!(size < 1 << 20, "implausible frame size {size} (header {header:02x?})");
    let mut payload = vec![0u8; size as usize + 1];
    stream.read_exact(&mut payload).unwrap_or_else(|e| panic!("reading a {size}-byte frame: {e}"));
    assert_eq!(payload.pop(), Some(FRAME_END), "frame does not end with 0xCE");
    (kind, channel, payload)
}

/// Sends the protocol header and checks that the answer is `connection.start` on channel 0.
fn expect_connection_start(stream: &mut TcpStream, broker: &Broker) {
    stream.write_all(PROTOCOL_HEADER).expect("send protocol header");
    let (kind, channel, payload) = read_frame(stream, broker);
    assert_eq!(kind, FRAME_METHOD, "first frame is not a method frame");
    assert_eq!(channel, 0, "connection.start must be on channel 0");
    assert!(payload.len() >= 6, "method frame too short: {payload:02x?}");
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    assert_eq!((class, method), (10, 10), "expected connection.start (10, 10)");
    assert_eq!((payload[4], payload[5]), (0, 9), "version-major/minor of connection.start");
}

#[test]
fn ready_line_reports_a_connectable_amqp_port() {
    let broker = Broker::start();
    assert!(broker.amqp.ip().is_loopback(), "harness asked for 127.0.0.1: {}", broker.amqp);
    assert_ne!(broker.amqp.port(), 0, "ready line must carry the bound port, not 0");
    assert_eq!(broker.listeners.get("amqp"), Some(&broker.amqp));
    assert!(broker.data_dir().is_dir(), "the broker creates its data directory");
    connect(&broker);
}

#[test]
fn amqp_protocol_header_gets_connection_start() {
    let broker = Broker::start();
    let mut stream = connect(&broker);
    expect_connection_start(&mut stream, &broker);
}

#[test]
fn sigterm_exits_zero_promptly() {
    let mut broker = Broker::start();
    let started = Instant::now();
    let status = broker.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", broker.logs());
    assert!(started.elapsed() < GRACE, "an idle broker took {:?} to stop", started.elapsed());
}

#[test]
fn sigint_exits_zero() {
    let mut broker = Broker::start();
    let status = broker.stop_with("INT");
    assert!(status.success(), "exit status {status}; log:\n{}", broker.logs());
}

#[test]
fn sigterm_with_a_client_connected_exits_zero_within_the_grace_period() {
    let mut broker = Broker::start();
    let mut stream = connect(&broker);
    expect_connection_start(&mut stream, &broker);
    // The client now sits in the handshake and never answers: shutdown must not wait on it
    // past the grace period.
    let started = Instant::now();
    let status = broker.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", broker.logs());
    assert!(took < GRACE + SLACK, "took {took:?} to stop; log:\n{}", broker.logs());
    let _ = stream.shutdown(Shutdown::Both);
}

#[test]
fn restart_reuses_the_data_dir_and_gets_new_ports() {
    let mut broker = Broker::start();
    let data_dir = broker.data_dir();
    broker.kill();
    broker.restart();
    assert_eq!(broker.data_dir(), data_dir);
    assert!(data_dir.is_dir());
    connect(&broker);
    broker.restart();
    connect(&broker);
}

#[test]
fn invalid_config_fails_before_ready_with_a_message() {
    let err = Broker::try_start_with("[amqp]\nframe_max = 100\n", &[]).expect_err("frame_max below 4096");
    match &err {
        StartError::Exited { status, log } => {
            assert!(!status.success());
            assert!(log.contains("frame_max"), "message should name the key:\n{log}");
        }
        other => panic!("expected an early exit, got: {other}"),
    }

    let err = Broker::try_start_with("", &[("SWITCHYARD_AMQP__HEARTBEAT", "soon")]).expect_err("bad env value");
    assert!(err.log().contains("SWITCHYARD_AMQP__HEARTBEAT"), "message should name the variable:\n{err}");

    let err = Broker::try_start_with("[amqp]\nno_such_key = 1\n", &[]).expect_err("unknown key");
    assert!(err.log().contains("no_such_key"), "message should name the key:\n{err}");
}

#[test]
fn print_config_shows_env_and_flag_overrides() {
    let mut cmd = Command::new(switchyard_bin());
    cmd.args(["--print-config", "--data-dir", "/flag/dir", "--config", "/dev/null"])
        .env("SWITCHYARD_AMQP__HEARTBEAT", "7")
        .env("SWITCHYARD_BROKER__DATA_DIR", "/env/dir");
    let out = run_with_timeout(&mut cmd, IO_TIMEOUT).expect("--print-config returns");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("heartbeat = 7"), "{text}");
    assert!(text.contains("data_dir = \"/flag/dir\""), "flags win over env:\n{text}");
    assert!(text.contains("[broker]") && text.contains("[amqp]"), "{text}");
    assert!(!text.contains(READY_PREFIX), "--print-config must not start the broker");
}

#[test]
fn a_taken_port_is_a_clear_startup_error() {
    let first = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(switchyard_bin());
    cmd.args(["--config", "/dev/null", "--amqp-listen", &first.amqp.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("exits by itself");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("AMQP listener") && stderr.contains(&first.amqp.to_string()), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line when a bind fails");
}
