//! Issue 10's end-to-end attack: 500 WebSocket sessions sending
//! continuously and keep-alive HTTP clients sending one request after
//! another, through 10 back-to-back process upgrades with 20 module swaps
//! between them. No session closed, no HTTP connection closed
//! by the server, no message lost, run twice or reordered, and the final
//! state accounts for every acknowledged message and request. (2,000
//! sessions through 10 upgrades are in BENCHMARKS.md, "Issue 10".)

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::session_traffic::{self, assert_all_open_none_closed, assert_rooms_account_for};
use crate::upgrade::upgrade;
use crate::{Daemon, Setup, modules, read_full, send};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "60s"

[[module]]
name = "room"
path = "modules/libroom.so"

[[module]]
name = "counter"
path = "modules/libcounter.so"

[[socket]]
path = "/ws"
module = "room"
"#;

const SESSIONS: usize = 500;
const ROOMS: usize = 50;
const HTTP_CLIENTS: usize = 4;

/// Sends `add 1` requests on one keep-alive connection until `stop`; fails
/// on any error or `Connection: close`. Returns how many were answered.
fn keep_alive_client(
    daemon_public: std::net::SocketAddr,
    number: usize,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let stream = TcpStream::connect(daemon_public).map_err(|err| err.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|err| err.to_string())?;
    let mut client = BufReader::new(stream);
    let mut answered = 0;
    // Bounded by count as well as by the stop flag.
    while !stop.load(Ordering::Relaxed) && answered < 1_000_000 {
        send(client.get_mut(), "POST", &format!("/call/counter/add?instance=http-{number}"), b"1", &[]);
        let response = read_full(&mut client)
            .map_err(|err| format!("HTTP client {number}: no answer after {answered}: {err}"))?;
        if response.status != 200 || response.header("connection") == Some("close") {
            return Err(format!(
                "HTTP client {number}: status {} connection {:?} after {answered}",
                response.status,
                response.header("connection")
            ));
        }
        answered += 1;
    }
    Ok(answered)
}

#[test]
fn sessions_and_keep_alive_connections_survive_ten_upgrades_and_twenty_swaps() {
    let setup = Setup::new(CONFIG);
    setup.install(modules::ROOM_V1, "libroom.so");
    setup.install(modules::COUNTER_V1, "libcounter.so");
    let versions = [setup.install(modules::ROOM_V2, "libroom-2.so"), setup.path("modules/libroom.so")];
    let mut daemon: Daemon = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let sessions = session_traffic::start(session_traffic::join(&daemon, SESSIONS, ROOMS), &stop);
    let public = daemon.public();
    let http: Vec<_> = (0..HTTP_CLIENTS)
        .map(|number| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(public, number, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut swaps = 0;
    for _ in 0..10 {
        upgrade(&setup, &mut daemon);
        for _ in 0..2 {
            let body = format!("{{\"path\": {:?}}}", versions[swaps % 2].to_str().unwrap());
            let (status, reply) = daemon.admin("POST", "/v1/modules/room/load", body.as_bytes()).unwrap();
            assert_eq!(status, 200, "swap {swaps}: {}", String::from_utf8_lossy(&reply));
            swaps += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<u64> = http
        .into_iter()
        .map(|client| client.join().expect("an HTTP client thread panicked"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|failure| panic!("{failure}\n{}", daemon.log()));
    let seen = session_traffic::finish(sessions, &daemon);
    assert_rooms_account_for(&daemon, &seen);
    for (number, answered) in answered.iter().enumerate() {
        assert!(*answered > 0, "HTTP client {number} got no answer");
        let total = daemon.text("POST", &format!("/call/counter/get?instance=http-{number}"), "");
        assert_eq!(total, answered.to_string(), "HTTP client {number}: every answered add counted once");
    }
    assert_all_open_none_closed(&daemon, SESSIONS);
}
