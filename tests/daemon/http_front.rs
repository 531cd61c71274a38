//! The public port: calls, routes, and bad input that gets the documented
//! status while the server keeps serving.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::{COUNTER_CONFIG, Setup, json, modules, read_response, send};

#[test]
fn calls_routes_and_their_statuses() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=lobby", "5"), "5");
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=lobby", "2"), "7");
    assert_eq!(
        daemon.text("POST", "/call/counter/add?instance=room%201", "1"),
        "1",
        "keys are percent-decoded"
    );
    assert_eq!(daemon.text("POST", "/call/counter/get", ""), "0", "no key: the instance named default");
    assert_eq!(daemon.text("GET", "/total", ""), "7", "a configured route");
    assert_eq!(daemon.text("GET", "/healthz", ""), "ok\n");

    let (status, body) = daemon.http("POST", "/call/counter/add?instance=lobby", b"seven");
    assert_eq!(status, 422, "a module's refusal");
    assert!(json(&body)["error"].as_str().unwrap().contains("expected a decimal number"));
    let (status, body) = daemon.http("POST", "/call/ledger/add", b"1");
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"], "module 'ledger' is not loaded");
    assert_eq!(daemon.http("GET", "/call/counter/get", b"").0, 405);
    assert_eq!(daemon.http("POST", "/total", b"").0, 405);
    assert_eq!(daemon.http("GET", "/nothing-here", b"").0, 404);
    assert_eq!(daemon.text("GET", "/total", ""), "7", "still serving");
}

#[test]
fn oversized_and_malformed_requests_get_errors_and_the_server_carries_on() {
    let setup = Setup::new(COUNTER_CONFIG); // max_body = 4KiB
    let daemon = setup.start();
    let (status, body) = daemon.http("POST", "/call/counter/echo", &vec![b'x'; 5000]);
    assert_eq!(status, 413);
    assert!(json(&body)["error"].as_str().unwrap().contains("4096"));
    assert_eq!(
        daemon.http("POST", "/call/counter/echo", &vec![b'x'; 4096]).0,
        200,
        "exactly the limit is fine"
    );

    // A request line that is not HTTP.
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"HELLO THERE\r\n\r\n").unwrap();
    let (status, _) = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(status, 400);

    // A body shorter than its Content-Length, then the client leaves.
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.write_all(b"POST /call/counter/add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12").unwrap();
    drop(stream);

    assert_eq!(daemon.text("POST", "/call/counter/add?instance=a", "1"), "1", "still serving");
}

#[test]
fn keep_alive_and_pipelining() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Three requests in one write: answers come back in order on one connection.
    let mut batch = Vec::new();
    for amount in ["1", "2", "3"] {
        send(&mut batch, "POST", "/call/counter/add?instance=p", amount.as_bytes(), &[]);
    }
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let totals: Vec<String> =
        (0..3).map(|_| String::from_utf8(read_response(&mut reader).unwrap().1).unwrap()).collect();
    assert_eq!(totals, ["1", "3", "6"]);
    // And the connection stays open for more.
    send(&mut stream, "POST", "/call/counter/get?instance=p", b"", &[]);
    assert_eq!(read_response(&mut reader).unwrap(), (200, b"6".to_vec()));
}

#[test]
fn a_panicking_module_answers_500_and_everything_else_carries_on() {
    let setup = Setup::new(COUNTER_CONFIG);
    setup.install(modules::COUNTER_HANDLE_PANICS, "libcounter.so");
    let daemon = setup.start();
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=a", "4"), "4");
    let (status, body) = daemon.http("POST", "/call/counter/panic?instance=a", b"");
    assert_eq!(status, 500);
    assert!(json(&body)["error"].as_str().unwrap().contains("panicked on purpose"), "{body:?}");
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=a", "1"), "5", "the instance carries on");
    assert_eq!(daemon.status()["modules"][0]["panics"], 1);
}
