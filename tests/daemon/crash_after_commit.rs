//! What a client sees when the new process of an upgrade dies after the
//! commit (docs/upgrade.md): its connection ends at once, as for a crash of
//! any server. Nothing else may still hold the socket — the old process
//! dropped its copies when they moved — or the client would wait on a
//! connection nobody serves.

use std::io::{BufReader, ErrorKind};
use std::net::TcpStream;
use std::time::Duration;

use tungstenite::Message;

use crate::session_handover::setup;
use crate::session_traffic::{self, Joined};
use crate::upgrade::upgrade;
use crate::ws_client::{send, until};
use crate::{read_full, send as send_request};

/// Far longer than the kernel needs to end a killed process's connections,
/// far shorter than the clients' 30 s read timeout.
const ENDS_WITHIN: Duration = Duration::from_secs(10);

/// Whether `err` means the read waited out its timeout: the connection is
/// still open.
fn timed_out(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[test]
fn a_new_process_killed_after_the_commit_ends_every_moved_connection_at_once() {
    let setup = setup("");
    let mut daemon = setup.start();
    let mut sessions = session_traffic::join(&daemon, 8, 2);
    let keep_alive = TcpStream::connect(daemon.public()).unwrap();
    let mut keep_alive = BufReader::new(keep_alive);
    let ask = |who: &str, reader: &mut BufReader<TcpStream>| {
        send_request(reader.get_mut(), "POST", "/call/room/seq?instance=r0", b"", &[]);
        let response = read_full(reader).unwrap_or_else(|err| panic!("{who}: {err}"));
        assert_eq!(response.status, 200, "{who}");
        response.header("hotswap-pid").and_then(|pid| pid.parse::<u32>().ok()).expect("a pid")
    };
    ask("the keep-alive connection before the upgrade", &mut keep_alive);

    let new_pid = upgrade(&setup, &mut daemon);
    // Everything moved and serves in the new process.
    for Joined { client, id, number, .. } in &mut sessions {
        send(client, "after the upgrade");
        let acked = until(client, |text| text.starts_with(&format!("{id}:")));
        assert!(acked.contains("after the upgrade"), "client {number}: {acked}");
    }
    let pid = ask("the keep-alive connection after the upgrade", &mut keep_alive);
    assert_eq!(pid, new_pid, "the moved keep-alive connection is answered by the new process");

    assert!(hotswap_test_support::process::signal(new_pid, "KILL"), "kill -KILL {new_pid}");
    let gone = hotswap_test_support::process::wait_gone(new_pid, ENDS_WITHIN);
    assert!(gone.is_some(), "pid {new_pid} still runs after SIGKILL");

    for Joined { mut client, number, .. } in sessions {
        client.get_mut().set_read_timeout(Some(ENDS_WITHIN)).unwrap();
        // What was already on its way may still be read; then the end.
        let ended = (0..1000).find_map(|_| match client.read() {
            Ok(Message::Close(frame)) => Some(Err(format!("a close frame from a killed process: {frame:?}"))),
            Ok(_) => None,
            Err(tungstenite::Error::Io(err)) if timed_out(&err) => Some(Err(format!(
                "still open {ENDS_WITHIN:?} after the process serving it was killed: another process holds it"
            ))),
            Err(_) => Some(Ok(())),
        });
        match ended {
            Some(Ok(())) => {}
            Some(Err(seen)) => panic!("client {number}: {seen}\n{}", daemon.log()),
            None => panic!("client {number}: 1000 frames after the kill and no end"),
        }
    }
    keep_alive.get_ref().set_read_timeout(Some(ENDS_WITHIN)).unwrap();
    send_request(keep_alive.get_mut(), "POST", "/call/room/seq?instance=r0", b"", &[]);
    match read_full(&mut keep_alive) {
        Ok(response) => panic!("an answer from a killed process: {}", response.status),
        Err(err) if timed_out(&err) => panic!(
            "the keep-alive connection is still open {ENDS_WITHIN:?} after the process serving it was killed"
        ),
        Err(_) => {}
    }
}
