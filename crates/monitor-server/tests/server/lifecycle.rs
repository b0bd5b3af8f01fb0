//! Listeners, shutdown, reload and the binary itself.

use monitor_proto::MsgType;
use monitor_server::{BoundAddress, Config};
use serde_json::Value;

use crate::support::{eventually_async, start, Client, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_delivers_queued_pushes() {
    const REPORTS: u64 = 60;
    let server = start(|c| c.server.drain_timeout_secs = 10).await;
    let pad = "q".repeat(64 * 1024);
    // Not reading yet: pushes pile up in its socket, its write buffer and its queue.
    let mut sub = Client::connect(server.addr(), "late-reader").await;
    sub.subscribe("q", &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    for n in 0..REPORTS {
        assert_eq!(
            reporter
                .report(&format!(r#"{{"code":"q","n":{n},"pad":"{pad}"}}"#))
                .await,
            1
        );
    }
    let handle = server.handle.clone();
    let server_addr = server.addr();
    let stopping = tokio::spawn(server.stop());
    // Once the shutdown has started (the listener is closed), read everything that was
    // acknowledged.
    let addr = server_addr;
    eventually_async("the listener closes", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    for n in 0..REPORTS {
        let v: Value = serde_json::from_str(&sub.push().await).unwrap();
        assert_eq!(v["n"].as_u64(), Some(n));
    }
    sub.expect_closed().await;
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("run() returned")
        .unwrap();
    assert_eq!(handle.stats().pushes_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let server = start(|_| {}).await;
    let addr = server.addr();
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_including_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("monitor-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("monitor.sock");
    let sock_for_config = sock.clone();
    let server = start(move |c| {
        c.listeners.push(monitor_server::ListenerConfig::new(
            "second",
            "127.0.0.1:0".parse().unwrap(),
        ));
        c.listeners.push(monitor_server::ListenerConfig::new(
            "local",
            monitor_server::Address::Unix(sock_for_config),
        ));
    })
    .await;
    assert_eq!(server.addrs.len(), 3);
    let BoundAddress::Tcp(second) = server.addrs[1] else {
        panic!()
    };
    assert_eq!(server.addrs[2], BoundAddress::Unix(sock.clone()));

    let mut unix_sub = Client::connect_unix(&sock, "unix").await;
    unix_sub.subscribe("l", &[]).await;
    let mut tcp_sub = Client::connect(server.addr(), "tcp").await;
    tcp_sub.subscribe("l", &[]).await;
    let mut reporter = Client::connect(second, "reporter").await;
    assert_eq!(reporter.report(r#"{"code":"l"}"#).await, 2);
    assert_eq!(unix_sub.push().await, r#"{"code":"l"}"#);
    assert_eq!(tcp_sub.push().await, r#"{"code":"l"}"#);

    // A second server given the same path must not take the socket of a live one.
    let mut second_config = Config {
        listeners: vec![monitor_server::ListenerConfig::new(
            "local",
            monitor_server::Address::Unix(sock.clone()),
        )],
        ..Config::default()
    };
    second_config.admin.enabled = false;
    let refused = monitor_server::Server::bind(second_config).await;
    assert!(
        matches!(refused, Err(monitor_server::ServerError::Bind { .. })),
        "a live socket was taken over"
    );
    let mut late_sub = Client::connect_unix(&sock, "late").await;
    late_sub.subscribe("l", &[]).await;
    assert_eq!(reporter.report(r#"{"code":"l"}"#).await, 3);
    assert_eq!(late_sub.push().await, r#"{"code":"l"}"#);

    server.stop().await;
    assert!(!sock.exists(), "the socket file is removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_live_settings_to_open_connections() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "php").await;
    c.send(MsgType::KeyRequest, "", false, false).await;
    assert_eq!(c.reply(MsgType::KeyReply).await.1.err_code, -1);

    let mut new = Config::default();
    new.server.legacy_key_exchange = true;
    new.server.max_connections = 7;
    let mut invalid = new.clone();
    invalid.server.idle_timeout_secs = 0;
    assert!(server.handle.reload(invalid).is_err());
    let diff = server.handle.reload(new).unwrap();
    assert_eq!(diff.applied, ["server.legacy_key_exchange: false -> true"]);
    assert!(diff
        .needs_restart
        .iter()
        .any(|l| l.starts_with("server.max_connections")));
    assert!(diff.needs_restart.iter().any(|l| l.starts_with("listener")));

    // The same, still open connection now gets a legacy key: a reload applies to a
    // connection's next frame.
    c.send(MsgType::KeyRequest, "", false, false).await;
    assert!(c.reply(MsgType::KeyReply).await.1.is_success());
    server.stop().await;
}

/// The `monitor-server` binary as a child process: its stderr lines arrive through a
/// channel (so every wait is bounded), and it is killed if the test fails first.
struct ServerProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    fn spawn(args: &[&std::ffi::OsStr]) -> ServerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_monitor-server"))
            .args(args)
            .args(["--admin", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ServerProcess { child, lines }
    }

    /// The first line containing `needle`, within [`WAIT`].
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?}: {e}"),
            }
        }
    }

    /// Everything it prints until it exits (within [`WAIT`]).
    fn rest(&self) -> String {
        let mut rest = String::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (within [`WAIT`]) for it to exit; returns its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_monitor-server"))
}

#[test]
fn cli_prints_and_checks_config() {
    let out = binary()
        .args(["--print-config", "--idle-timeout", "9", "--workers", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let config = Config::from_toml(&printed).unwrap();
    assert_eq!(config.server.idle_timeout_secs, 9);
    assert_eq!(config.server.workers, 3);
    assert_eq!(config.listeners[0].address.to_string(), "0.0.0.0:9503");

    let out = binary()
        .args(["--check-config", "--max-frame-len", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--max-frame-len"), "{err}");

    let dir = std::env::temp_dir().join(format!("monitor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nslow_consumer = \"wait\"\n").unwrap();
    let out = binary()
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml") && err.contains("slow_consumer"),
        "{err}"
    );

    let out = binary().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn binary_reloads_its_config_on_sighup() {
    let dir = std::env::temp_dir().join(format!("monitor-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("monitor.toml");
    let config = "[server]\nidle_timeout_secs = 120\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n";
    std::fs::write(&file, config).unwrap();
    let mut server = ServerProcess::spawn(&["--config".as_ref(), file.as_os_str()]);
    server.wait_for_line("listening");
    let changed = config
        .replace("120", "30")
        .replace("[server]", "[server]\nmax_connections = 5\nworkers = 7");
    std::fs::write(&file, changed).unwrap();
    server.signal("-HUP");
    let applied = server.wait_for_line("SIGHUP: applied");
    assert!(
        applied.contains("server.idle_timeout_secs: 120 -> 30"),
        "{applied}"
    );
    let restart = server.wait_for_line("needs a restart");
    assert!(restart.contains("server.max_connections"), "{restart}");
    let restart = server.wait_for_line("needs a restart");
    assert!(restart.contains("server.workers: 0 -> 7"), "{restart}");
    server.signal("-TERM");
    assert_eq!(server.exit_code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scheduling policy (`SCHED_*` number) of each of `pid`'s threads named `name`.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32, name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        // A thread can exit between the listing and the reads (an idle blocking-pool
        // thread does): it is skipped, not a failure.
        let (Ok(comm), Ok(sched)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("sched")),
        ) else {
            continue;
        };
        if comm.trim() != name {
            continue;
        }
        let line = sched.lines().find(|l| l.starts_with("policy")).unwrap();
        policies.push(line.rsplit(':').next().unwrap().trim().parse().unwrap());
    }
    policies
}

#[cfg(target_os = "linux")]
#[test]
fn binary_runs_its_workers_under_sched_batch_unless_told_not_to() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    for (policy, want) in [(None, SCHED_BATCH), (Some("inherit"), SCHED_OTHER)] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--workers", "2"];
        if let Some(p) = policy {
            args.extend(["--sched-policy", p]);
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let server = ServerProcess::spawn(&args);
        server.wait_for_line("listening");
        let pid = server.child.id();
        // The two workers, and any blocking-pool thread (same name, same hook). A worker
        // names itself and runs the hook once it is scheduled, which on a busy machine
        // can be after the server is listening.
        let deadline = std::time::Instant::now() + WAIT;
        let workers = loop {
            let workers = thread_policies(pid, "tokio-rt-worker");
            let settled = workers.len() >= 2 && workers.iter().all(|&p| p == want);
            if settled || std::time::Instant::now() > deadline {
                break workers;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(workers.len() >= 2, "{policy:?}: {workers:?}");
        assert!(
            workers.iter().all(|&p| p == want),
            "{policy:?}: {workers:?}"
        );
        // The main thread only waits for the runtime: it keeps the process's policy.
        assert_eq!(
            thread_policies(pid, "monitor-server"),
            [SCHED_OTHER],
            "{policy:?}"
        );
    }
}

#[test]
fn binary_serves_and_exits_zero_on_sigterm() {
    use std::io::{Read, Write};
    let mut server = ServerProcess::spawn(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--workers".as_ref(),
        "1".as_ref(),
    ]);
    let started = server.wait_for_line("runtime started");
    assert!(started.contains("workers=1"), "{started}");
    let line = server.wait_for_line("listening");
    let at = line.find("address=").expect("address field") + "address=".len();
    let addr = line[at..].split_whitespace().next().unwrap().to_owned();
    // A heartbeat over a plain socket.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let hb = monitor_proto::Header::new(MsgType::Heartbeat, crate::support::uuid("cli")).to_bytes();
    s.write_all(&hb).unwrap();
    let mut reply = [0u8; 45];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], MsgType::HeartbeatReply.as_u8());

    server.signal("-TERM");
    assert_eq!(server.exit_code(), Some(0));
    let rest = server.rest();
    assert!(
        rest.contains("SIGTERM received") && rest.contains("shutdown complete"),
        "{rest}"
    );
}

/// A heartbeat over a Unix socket, with plain blocking I/O; whether it was answered.
fn heartbeat_over(path: &std::path::Path) -> bool {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + WAIT;
    let mut s = loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    let hb =
        monitor_proto::Header::new(MsgType::Heartbeat, crate::support::uuid("pipe")).to_bytes();
    s.write_all(&hb).unwrap();
    let mut reply = [0u8; 45];
    s.read_exact(&mut reply).is_ok() && reply[1] == MsgType::HeartbeatReply.as_u8()
}

/// `monitor-server 2>&1 | head -2`: once the log pipe is closed every log line fails,
/// and the server must keep serving and still stop on SIGTERM (the failed write used to
/// panic the signal task, leaving a server only SIGKILL could stop).
#[test]
fn binary_serves_and_stops_on_sigterm_after_its_log_pipe_breaks() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("monitor-epipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("m.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_monitor-server"))
        .args(["--admin", "127.0.0.1:0"])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended");
    }
    drop(stderr); // like `head`: the read end closes, later writes get EPIPE
    let mut server = ServerProcess {
        child,
        lines: std::sync::mpsc::channel().1,
    };
    for _ in 0..3 {
        assert!(heartbeat_over(&sock), "served after the pipe broke");
    }
    server.signal("-TERM");
    assert_eq!(server.exit_code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `monitor-server 2>/dev/full`: every log write fails from the start; it serves anyway
/// (it used to exit 101 at once).
#[test]
fn binary_serves_with_its_log_on_a_full_device() {
    let dir = std::env::temp_dir().join(format!("monitor-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("m.sock");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_monitor-server"))
        .args(["--admin", "127.0.0.1:0"])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(full)
        .spawn()
        .unwrap();
    let mut server = ServerProcess {
        child,
        lines: std::sync::mpsc::channel().1,
    };
    assert!(heartbeat_over(&sock));
    server.signal("-TERM");
    assert_eq!(server.exit_code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
