//! Under load: 32 keep-alive clients call continuously while 50 swaps run.
//! No request may fail, and the final state must account for every success.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{COUNTER_CONFIG, Setup, json, modules, read_response, send};

const CLIENTS: usize = 32;
const ROOMS: usize = 16;
const SWAPS: usize = 50;

#[test]
fn thirty_two_clients_fifty_swaps_no_failed_request() {
    let setup = Setup::new(&COUNTER_CONFIG.replace("watch = true", "watch = false"));
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let v1 = setup.path("modules/libcounter.so");
    let daemon = setup.start();
    let address = daemon.public();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Vec<AtomicU64>> = Arc::new((0..ROOMS).map(|_| AtomicU64::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || -> Vec<String> {
                let mut failures = Vec::new();
                let stream = TcpStream::connect(address).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let give_up = Instant::now() + Duration::from_secs(120);
                let mut n = client;
                while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    let room = n % ROOMS;
                    n += 1;
                    send(&mut writer, "POST", &format!("/call/counter/add?instance=room-{room}"), b"1", &[]);
                    match read_response(&mut reader) {
                        Ok((200, _)) => {
                            acknowledged[room].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => {
                            failures.push(format!("{status}: {}", String::from_utf8_lossy(&body)))
                        }
                        Err(err) => {
                            failures.push(format!("connection: {err}"));
                            break;
                        }
                    }
                }
                failures
            })
        })
        .collect();

    for swap in 0..SWAPS {
        let file = if swap % 2 == 0 { &v2 } else { &v1 };
        let body = format!("{{\"path\": {:?}}}", file.to_str().unwrap());
        let (status, reply) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
        assert_eq!(status, 200, "swap {swap}: {}", String::from_utf8_lossy(&reply));
    }
    let during: u64 = acknowledged.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|client| client.join().unwrap()).collect();

    assert!(failures.is_empty(), "{} requests failed; first: {:?}", failures.len(), failures.first());
    assert!(during > SWAPS as u64, "the clients kept calling during the swaps ({during} calls)");
    for (room, acknowledged) in acknowledged.iter().enumerate() {
        let total = daemon.text("POST", &format!("/call/counter/get?instance=room-{room}"), "");
        assert_eq!(total, acknowledged.load(Ordering::Relaxed).to_string(), "room-{room}");
    }
    let status = daemon.status();
    assert_eq!(status["modules"][0]["swaps"], SWAPS);
    assert_eq!(json(&serde_json::to_vec(&status["modules"][0]["errors"]).unwrap()), 0);
}
