//! Attacks on parking: a connection stops only at a request boundary, every
//! answer it owed is written first (without `Connection: close`), and the
//! bytes read ahead are served by the next server exactly once.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Ending, Parked, ParkedRecord, RecordError, Served, serve_connection};
use crate::http::Response;

/// Generous: the machine may be loaded; no test waits this long when it passes.
const PATIENCE: Duration = Duration::from_secs(20);

/// A test server: names itself in each answer, logs each request it
/// answered, and holds `/slow` until released.
#[derive(Clone)]
struct Server {
    name: &'static str,
    answered: Arc<Mutex<Vec<String>>>,
    slow_started: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

impl Server {
    fn new(name: &'static str) -> (Server, mpsc::UnboundedReceiver<()>) {
        let (slow_started, started) = mpsc::unbounded_channel();
        let server =
            Server { name, answered: Arc::default(), slow_started, release: Arc::new(Semaphore::new(0)) };
        (server, started)
    }

    fn handler(
        &self,
    ) -> impl Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response> + Send>> + Clone + Send + Sync + 'static
    {
        let server = self.clone();
        let handler: Handler = Arc::new(move |request: Request<Incoming>| {
            let server = server.clone();
            Box::pin(async move {
                let path = request.uri().path().to_owned();
                if path.starts_with("/slow") {
                    let _ = server.slow_started.send(());
                    server.release.acquire().await.expect("never closed").forget();
                }
                let body = request.into_body().collect().await.expect("a whole body").to_bytes();
                server.answered.lock().unwrap().push(path.clone());
                let text = match path.as_str() {
                    // Larger than the socket buffers: written in many pieces.
                    "/slow-big" => "x".repeat(4 << 20),
                    _ => format!("{} {path} {}", server.name, String::from_utf8_lossy(&body)),
                };
                hyper::Response::new(Full::new(Bytes::from(text)))
            })
        });
        move |request| handler(request)
    }

    fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }
}

/// One answer as the client read it.
#[derive(Debug)]
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn closes(&self) -> bool {
        self.head.to_ascii_lowercase().contains("connection: close")
    }
}

/// A raw HTTP/1.1 client: writes bytes as told, reads answers.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("the server is reading");
    }

    async fn answer(&mut self) -> Answer {
        tokio::time::timeout(PATIENCE, self.read_answer()).await.expect("an answer in time")
    }

    async fn read_answer(&mut self) -> Answer {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("an ASCII head");
        let length: usize = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
            .expect("a content-length")
            .trim()
            .parse()
            .expect("a number");
        while self.buffer.len() < head_end + length {
            self.fill().await;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Answer { head, body }
    }

    async fn fill(&mut self) {
        let mut chunk = [0; 64 * 1024];
        let read = self.stream.read(&mut chunk).await.expect("the connection stays open");
        assert!(
            read > 0,
            "the server closed the connection; buffered: {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
        self.buffer.extend_from_slice(&chunk[..read]);
    }
}

/// A client connected to a fresh listener, and the server's side of it.
async fn connected() -> (Client, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.expect("connects");
    client.set_nodelay(true).unwrap();
    let (server_side, _) = listener.accept().await.expect("accepts");
    (Client { stream: client, buffer: Vec::new() }, server_side)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").into_bytes()
}

type Serving = tokio::task::JoinHandle<Served<TcpStream>>;

fn serve(server: &Server, stream: TcpStream, read_ahead: Bytes, ending: &watch::Sender<Ending>) -> Serving {
    tokio::spawn(serve_connection(stream, read_ahead, server.handler(), ending.subscribe()))
}

async fn parked(serving: Serving) -> Parked<TcpStream> {
    match tokio::time::timeout(PATIENCE, serving).await.expect("stops in time").expect("no panic") {
        Served::Parked(parked) => parked,
        other => panic!("the connection was not given back: {other:?}"),
    }
}

#[tokio::test]
async fn a_pipelined_request_split_across_the_stop_is_answered_once_by_the_next_server() {
    let (old, mut slow_started) = Server::new("old");
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let (park, _) = watch::channel(Ending::Serve);
    let serving = serve(&old, stream, Bytes::new(), &park);

    let second = b"POST /second HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello";
    let (first_half, second_half) = second.split_at(20);
    client.send(&[get("/slow-first").as_slice(), first_half].concat()).await;
    slow_started.recv().await.expect("the first request reached the handler");
    park.send_replace(Ending::Park);
    // The server sees the stop while the answer is still being computed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    old.release.add_permits(1);
    let parked = parked(serving).await;

    let first = client.answer().await;
    assert_eq!(first.text(), "old /slow-first ");
    assert!(!first.closes(), "the answer before the stop must keep the connection: {}", first.head);
    assert_eq!(parked.read_ahead.as_ref(), first_half, "the bytes read ahead come back");

    let (again, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, parked.stream, parked.read_ahead, &again);
    client.send(second_half).await;
    assert_eq!(client.answer().await.text(), "new /second hello");
    assert_eq!(old.answered(), ["/slow-first"]);
    assert_eq!(new.answered(), ["/second"]);
}

#[tokio::test]
async fn a_request_in_flight_is_answered_completely_before_the_connection_is_given_back() {
    let (old, mut slow_started) = Server::new("old");
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let (park, _) = watch::channel(Ending::Serve);
    let mut serving = serve(&old, stream, Bytes::new(), &park);

    client.send(&get("/slow-big")).await;
    slow_started.recv().await.expect("the request reached the handler");
    park.send_replace(Ending::Park);
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut serving).await;
    assert!(waited.is_err(), "the connection stopped before its request was answered: {waited:?}");
    old.release.add_permits(1);
    // The client reads while the server writes: 4 MiB do not fit in the socket buffers.
    let reading = tokio::spawn(async move {
        let answer = client.answer().await;
        (client, answer)
    });
    let parked = parked(serving).await;
    let (mut client, answer) = reading.await.expect("the client read");
    assert_eq!(answer.body.len(), 4 << 20);
    assert!(!answer.closes(), "{}", answer.head);
    assert!(parked.read_ahead.is_empty(), "{:?}", parked.read_ahead);

    let (again, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, parked.stream, parked.read_ahead, &again);
    client.send(&get("/next")).await;
    assert_eq!(client.answer().await.text(), "new /next ");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_given_back_at_once() {
    let (old, _) = Server::new("old");
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let (park, _) = watch::channel(Ending::Serve);
    let serving = serve(&old, stream, Bytes::new(), &park);
    client.send(&get("/one")).await;
    assert_eq!(client.answer().await.text(), "old /one ");

    // Nothing more is sent: parking must not wait for a next request.
    park.send_replace(Ending::Park);
    let parked = parked(serving).await;
    assert!(parked.read_ahead.is_empty(), "{:?}", parked.read_ahead);
    let (again, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, parked.stream, parked.read_ahead, &again);
    client.send(&get("/two")).await;
    assert_eq!(client.answer().await.text(), "new /two ");
    assert_eq!((old.answered(), new.answered()), (vec!["/one".to_owned()], vec!["/two".to_owned()]));
}

#[tokio::test]
async fn a_client_that_sent_nothing_is_given_back() {
    let (old, _) = Server::new("old");
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let (park, _) = watch::channel(Ending::Serve);
    let serving = serve(&old, stream, Bytes::new(), &park);
    park.send_replace(Ending::Park);
    let parked = parked(serving).await;
    assert!(parked.read_ahead.is_empty());

    let (again, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, parked.stream, parked.read_ahead, &again);
    client.send(&get("/first")).await;
    let answer = client.answer().await;
    assert_eq!(answer.text(), "new /first ");
    assert!(!answer.closes(), "{}", answer.head);
}

/// hyper does not close a connection whose first request is half read when
/// told to shut down: it waits for the rest and answers with
/// `Connection: close`. Parking must give it back with the half instead.
/// The half is given as read-ahead (a connection moved twice), so the
/// server surely holds it when told to stop.
#[tokio::test]
async fn a_half_read_first_request_is_given_back_with_its_bytes() {
    let (old, _) = Server::new("old");
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let request = get("/first");
    let (half, rest) = request.split_at(9);
    let (park, _) = watch::channel(Ending::Park);
    let parked = parked(serve(&old, stream, Bytes::copy_from_slice(half), &park)).await;
    assert_eq!(parked.read_ahead.as_ref(), half);

    let (again, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, parked.stream, parked.read_ahead, &again);
    client.send(rest).await;
    let answer = client.answer().await;
    assert_eq!(answer.text(), "new /first ");
    assert!(!answer.closes(), "{}", answer.head);
    assert!(old.answered().is_empty());
}

#[tokio::test]
async fn read_ahead_holding_several_requests_is_served_in_order_before_the_socket() {
    let (new, _) = Server::new("new");
    let (mut client, stream) = connected().await;
    let read_ahead = [get("/1"), get("/2"), b"GET /3 HT".to_vec()].concat();
    let (serving, _) = watch::channel(Ending::Serve);
    let _serving = serve(&new, stream, read_ahead.into(), &serving);
    client.send(b"TP/1.1\r\nhost: test\r\n\r\n").await;
    for path in ["/1", "/2", "/3"] {
        assert_eq!(client.answer().await.text(), format!("new {path} "));
    }
    assert_eq!(new.answered(), ["/1", "/2", "/3"]);
}

#[tokio::test]
async fn a_client_that_asked_to_close_is_not_given_back() {
    let (old, _) = Server::new("old");
    let (mut client, stream) = connected().await;
    let (park, _) = watch::channel(Ending::Serve);
    let serving = serve(&old, stream, Bytes::new(), &park);
    client.send(b"GET /last HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await;
    assert!(client.answer().await.closes());
    park.send_replace(Ending::Park);
    let served = tokio::time::timeout(PATIENCE, serving).await.expect("ends").expect("no panic");
    assert!(matches!(served, Served::Closed), "{served:?}");
}

#[tokio::test]
async fn closing_answers_the_request_in_flight_with_connection_close() {
    let (old, mut slow_started) = Server::new("old");
    let (mut client, stream) = connected().await;
    let (ending, _) = watch::channel(Ending::Serve);
    let serving = serve(&old, stream, Bytes::new(), &ending);
    client.send(&get("/slow")).await;
    slow_started.recv().await.expect("the request reached the handler");
    ending.send_replace(Ending::Close);
    old.release.add_permits(1);
    assert!(client.answer().await.closes());
    let served = tokio::time::timeout(PATIENCE, serving).await.expect("ends").expect("no panic");
    assert!(matches!(served, Served::Closed), "{served:?}");
}

#[tokio::test]
async fn two_hundred_connections_stopped_at_once_are_all_given_back() {
    const CONNECTIONS: usize = 200;
    let (old, _) = Server::new("old");
    let (new, _) = Server::new("new");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let address = listener.local_addr().unwrap();
    let (park, _) = watch::channel(Ending::Serve);
    let mut clients = Vec::new();
    let mut servings = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(address).await.expect("connects");
        let (server_side, _) = listener.accept().await.expect("accepts");
        clients.push(Client { stream, buffer: Vec::new() });
        servings.push(serve(&old, server_side, Bytes::new(), &park));
    }
    for (id, client) in clients.iter_mut().enumerate() {
        client.send(&get(&format!("/first/{id}"))).await;
    }
    for (id, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.answer().await.text(), format!("old /first/{id} "));
        // Half of the next request: in the server's buffer or its socket's.
        client.send(&get(&format!("/second/{id}"))[..7]).await;
    }

    park.send_replace(Ending::Park);
    let (again, _) = watch::channel(Ending::Serve);
    let mut resumed = Vec::new();
    for serving in servings {
        let parked = parked(serving).await;
        resumed.push(serve(&new, parked.stream, parked.read_ahead, &again));
    }
    for (id, client) in clients.iter_mut().enumerate() {
        client.send(&get(&format!("/second/{id}"))[7..]).await;
        let answer = client.answer().await;
        assert_eq!(answer.text(), format!("new /second/{id} "));
        assert!(!answer.closes());
    }
    assert_eq!(old.answered().len(), CONNECTIONS);
    let mut second = new.answered();
    second.sort();
    let mut expected: Vec<String> = (0..CONNECTIONS).map(|id| format!("/second/{id}")).collect();
    expected.sort();
    assert_eq!(second, expected, "each second request answered exactly once");
}

#[test]
fn a_record_carries_the_read_ahead_and_refuses_what_it_cannot_read() {
    let record = ParkedRecord { read_ahead: Bytes::from_static(b"GET /next HT") };
    let bytes = record.to_bytes();
    assert_eq!(ParkedRecord::from_bytes(&bytes), Ok(record.clone()));
    let empty = ParkedRecord { read_ahead: Bytes::new() };
    assert_eq!(ParkedRecord::from_bytes(&empty.to_bytes()), Ok(empty));

    assert_eq!(ParkedRecord::from_bytes(&[]), Err(RecordError::Empty));
    let mut other_version = bytes.clone();
    other_version[0] = 9;
    let error = ParkedRecord::from_bytes(&other_version).unwrap_err();
    assert_eq!(error, RecordError::Version { theirs: 9, ours: 1 });
    assert!(error.to_string().contains("version 9") && error.to_string().contains("version 1"), "{error}");
    let cut = ParkedRecord::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(cut, RecordError::Length { declared: Some(12), actual: 11 });
    assert!(cut.to_string().contains("declares 12") && cut.to_string().contains("carries 11"), "{cut}");
    let padded = ParkedRecord::from_bytes(&[bytes.as_slice(), b"x"].concat()).unwrap_err();
    assert_eq!(padded, RecordError::Length { declared: Some(12), actual: 13 });
    assert_eq!(ParkedRecord::from_bytes(&bytes[..3]), Err(RecordError::Length { declared: None, actual: 2 }));
}
