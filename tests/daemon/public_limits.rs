//! Attacks on the public port that need no credentials: bodies trickled a
//! byte at a time, bodies that stall, more connections than descriptors,
//! and instance keys that are too long, empty or not UTF-8.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{COUNTER_CONFIG, Daemon, Setup, json, read_full, read_response};

/// The daemon's resident memory, from /proc/PID/status.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn config_with(server_lines: &str) -> String {
    COUNTER_CONFIG.replace("shutdown_timeout = \"5s\"", &format!("shutdown_timeout = \"5s\"\n{server_lines}"))
}

/// Memory held for a body grows with the bytes received, not with the
/// number of pieces they arrived in: one byte is not a 4 KiB buffer.
#[test]
fn body_memory_is_bounded_by_the_bytes_received() {
    const CONNECTIONS: usize = 8;
    const TRICKLED: usize = 4000;
    const DECLARED: usize = 4096;
    let setup = Setup::new(&COUNTER_CONFIG.replace("4KiB", "64KiB"));
    let daemon = setup.start();
    // Warm up: the worker threads, the instance and the allocator's arenas.
    for _ in 0..4 {
        assert_eq!(daemon.http("POST", "/call/counter/echo?instance=t", &[b'w'; DECLARED]).0, 200);
    }
    let before = rss_bytes(daemon.pid());

    let mut streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(daemon.public()).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let head = format!(
                "POST /call/counter/echo?instance=t HTTP/1.1\r\nHost: x\r\nContent-Length: {DECLARED}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Generous: allocator noise, a few buffers per connection, thread stacks
    // touched for the first time; per byte received, a small multiple.
    let slack = 8 * 1024 * 1024;
    let per_byte = 64;
    let mut sent = 0u64;
    let mut worst = 0u64;
    for round in 0..TRICKLED {
        for stream in &mut streams {
            stream.write_all(b"x").unwrap();
            sent += 1;
        }
        // A pause lets the daemon read each byte as its own piece.
        std::thread::sleep(Duration::from_micros(500));
        if round % 100 == 99 {
            let growth = rss_bytes(daemon.pid()).saturating_sub(before);
            worst = worst.max(growth);
            assert!(
                growth <= slack + per_byte * sent,
                "the daemon grew {growth} bytes after receiving {sent} body bytes one at a time \
                 (allowed {} = 8 MiB + {per_byte} per byte)",
                slack + per_byte * sent
            );
        }
    }
    // Every body completes and comes back whole.
    for stream in &mut streams {
        stream.write_all(&[b'x'; DECLARED - TRICKLED]).unwrap();
    }
    for stream in streams {
        let (status, body) = read_response(&mut BufReader::new(stream)).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, [b'x'; DECLARED], "the body comes back as it was sent");
    }
    eprintln!("sent {sent} body bytes one at a time; the daemon grew at most {worst} bytes");
}

/// A body that stops arriving is answered 408 once `server.body_timeout`
/// passes, and the connection is closed; the server carries on.
#[test]
fn a_stalled_body_gets_408_after_body_timeout() {
    let setup = Setup::new(&config_with("body_timeout = \"1s\""));
    let daemon = setup.start();
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
        .write_all(b"POST /call/counter/add?instance=a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_full(&mut reader).expect("an answer before the client gives up");
    assert_eq!(response.status, 408);
    let message = json(&response.body)["error"].as_str().unwrap().to_owned();
    assert!(message.contains("server.body_timeout") && message.contains("1s"), "{message}");
    assert_eq!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap_or(0), 0, "the connection is closed after the 408");
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=a", "1"), "1", "still serving");
    let (_, metrics) = daemon.admin("GET", "/metrics", b"").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("hotswap_http_responses_total{class=\"4xx\"} 1"), "{metrics}");
}

/// A chunked body (no Content-Length) is held to `server.max_body` too,
/// however small its pieces.
#[test]
fn a_chunked_body_over_max_body_gets_413() {
    let setup = Setup::new(COUNTER_CONFIG); // max_body = 4KiB
    let daemon = setup.start();
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = "POST /call/counter/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..100 {
        // The daemon may answer and close before every piece is sent.
        if stream.write_all(&[b"32\r\n".as_slice(), &[b'y'; 50], b"\r\n"].concat()).is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let (status, body) = read_response(&mut reader).unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"].as_str().unwrap().contains("4096"));
    // Pieces that add up to the limit exactly are fine.
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for _ in 0..64 {
        stream.write_all(&[b"40\r\n".as_slice(), &[b'z'; 64], b"\r\n"].concat()).unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!((status, body), (200, vec![b'z'; 4096]));
}

/// Starts the daemon with `ulimit -n files`: a process with few descriptors.
fn start_with_file_limit(setup: &Setup, files: u32) -> Daemon {
    let log = std::fs::File::create(setup.path("daemon.log")).unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" serve --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_hotswap"))
        .arg(setup.config())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon::adopt(child, setup)
}

/// Opens `count` idle connections to the public port (each counts once accepted).
fn hold_connections(daemon: &Daemon, count: usize) -> Vec<TcpStream> {
    (0..count).map(|_| TcpStream::connect(daemon.public()).unwrap()).collect()
}

fn metric(daemon: &Daemon, name: &str) -> u64 {
    let (_, body) = daemon.admin("GET", "/metrics", b"").unwrap();
    let text = String::from_utf8(body).unwrap();
    let line = text.lines().find(|line| line.split(' ').next() == Some(name));
    line.and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Waits (generously) until the metric reaches `at_least`.
fn wait_for_metric(daemon: &Daemon, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(daemon, name);
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value}, expected {at_least}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the daemon counts no open public connection (one a client
/// closed is released once the daemon sees the end of it).
fn wait_for_no_connections(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(daemon, "hotswap_public_connections") > 0 {
        assert!(Instant::now() < deadline, "closed connections were not released:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// More public connections than the daemon has descriptors for: those past
/// `server.max_connections` are closed at once and counted; the admin
/// socket still answers and a state save still succeeds.
#[test]
fn connections_past_max_connections_leave_admin_and_saves_working() {
    let setup = Setup::new(&config_with("max_connections = 20"));
    let daemon = start_with_file_limit(&setup, 128);
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=kept", "7"), "7");
    wait_for_no_connections(&daemon);
    let held = hold_connections(&daemon, 200);
    assert!(wait_for_metric(&daemon, "hotswap_public_connections_refused_total", 180) >= 180);
    assert_eq!(metric(&daemon, "hotswap_public_connections"), 20);
    assert_eq!(metric(&daemon, "hotswap_public_connections_max"), 20);

    // One more is closed at once: it reads end-of-file, not a hang.
    let mut refused = TcpStream::connect(daemon.public()).unwrap();
    refused.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut byte = [0; 1];
    let read = refused.read(&mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionReset)
    );

    assert_eq!(admin_within(&daemon, "GET", "/v1/status").0, 200, "the admin socket answers");
    let (status, body) = admin_within(&daemon, "POST", "/v1/snapshot");
    assert_eq!(status, 200, "a state save works: {}", String::from_utf8_lossy(&body));
    assert!(daemon.log().contains("server.max_connections"), "the refusal is logged:\n{}", daemon.log());

    // Once they close, the port serves again.
    drop(held);
    wait_for_no_connections(&daemon);
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=kept", ""), "7");
}

/// With the default `max_connections` and a small descriptor limit, the
/// cap shrinks to fit the limit: descriptors are kept for the admin socket
/// and state files, whatever the config says.
#[test]
fn the_connection_cap_fits_the_descriptor_limit() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = start_with_file_limit(&setup, 128);
    let _held = hold_connections(&daemon, 300);
    // Idle connections are closed after 30 s without a request header,
    // which frees descriptors; the admin API must answer long before that.
    for _ in 0..5 {
        let (status, body) = admin_within(&daemon, "GET", "/v1/status");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let (status, body) = admin_within(&daemon, "POST", "/v1/snapshot");
        assert_eq!(status, 200, "a state save works: {}", String::from_utf8_lossy(&body));
    }
    let cap = metric(&daemon, "hotswap_public_connections_max");
    assert!((1..128).contains(&cap), "cap {cap} with 128 descriptors");
    wait_for_metric(&daemon, "hotswap_public_connections_refused_total", 300 - cap);
    assert!(daemon.log().contains("descriptors"), "the shrunk cap is logged:\n{}", daemon.log());
}

/// One admin request that must be answered within 10 s (it takes
/// milliseconds when the daemon has the descriptors it needs).
fn admin_within(daemon: &Daemon, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    crate::send(&mut stream, method, path, b"", &[]);
    read_response(&mut BufReader::new(stream))
        .unwrap_or_else(|err| panic!("{method} {path} on the admin socket: {err}\n{}", daemon.log()))
}
