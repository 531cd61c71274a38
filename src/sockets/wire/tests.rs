use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::park::*;
use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUE: u8 = 0x0;
const PING: u8 = 0x9;
const CLOSE: u8 = 0x8;
const FIN: u8 = 0x80;

/// A client frame as a client sends it: masked with [`MASK`].
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        short @ 0..=125 => out.push(0x80 | short as u8),
        medium @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ MASK[i % 4]));
    out
}

/// A stream that hands out its chunks one per read, then ends.
struct Chunks(VecDeque<Vec<u8>>);

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let fits = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..fits]);
            if fits < chunk.len() {
                self.0.push_front(chunk.split_off(fits));
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn reader(chunks: Vec<Vec<u8>>, limit: usize) -> WireReader<Chunks> {
    // An empty read is the end of a stream: no empty chunks.
    let chunks = chunks.into_iter().filter(|chunk| !chunk.is_empty()).collect();
    WireReader::new(Chunks(chunks), Bytes::new(), limit)
}

fn text(s: &str) -> Received {
    Received::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn refused(result: Result<Received, WireError>) -> (u16, String) {
    match result {
        Err(WireError::Protocol { code, reason }) => (code, reason),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_split_across_reads_at_every_byte_boundary_comes_out_whole() {
    // A 16-bit length, so the split also falls inside the extended length.
    let long = "é".repeat(100);
    let mut stream = client_frame(FIN | TEXT, long.as_bytes());
    stream.extend(client_frame(FIN | BINARY, b"\x00\xff"));
    for split in 0..=stream.len() {
        let chunks = vec![stream[..split].to_vec(), stream[split..].to_vec()];
        let mut wire = reader(chunks, 1024);
        assert_eq!(wire.next().await.unwrap(), text(&long), "split at {split}");
        assert_eq!(wire.next().await.unwrap(), Received::Binary(Bytes::from_static(b"\x00\xff")));
        assert!(matches!(wire.next().await, Err(WireError::Ended)), "split at {split}");
    }
    let bytes: Vec<Vec<u8>> = stream.iter().map(|byte| vec![*byte]).collect();
    let mut wire = reader(bytes, 1024);
    assert_eq!(wire.next().await.unwrap(), text(&long), "a byte per read");
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_between_its_frames_gives_the_ping_then_the_message() {
    let mut stream = client_frame(TEXT, b"hel");
    stream.extend(client_frame(FIN | PING, b"are you there"));
    stream.extend(client_frame(CONTINUE, b"lo "));
    stream.extend(client_frame(FIN | CONTINUE, b"wire"));
    stream.extend(client_frame(FIN | CLOSE, b"\x03\xe8bye"));
    let mut wire = reader(vec![stream], 1024);
    assert_eq!(wire.next().await.unwrap(), Received::Ping(Bytes::from_static(b"are you there")));
    assert_eq!(wire.next().await.unwrap(), text("hello wire"));
    assert_eq!(wire.next().await.unwrap(), Received::Close(Some((1000, "bye".into()))));
}

#[tokio::test]
async fn a_frame_or_message_over_the_limit_is_refused_1009_from_its_header() {
    // Only the header arrives: the frame is refused before its payload.
    let header = client_frame(FIN | BINARY, &[0; 17])[..6].to_vec();
    let (code, reason) = refused(reader(vec![header], 16).next().await);
    assert_eq!(code, code::TOO_BIG);
    assert!(reason.contains("17 bytes") && reason.contains("16 bytes (server.max_body)"), "{reason}");

    let mut fragments = client_frame(BINARY, &[1; 10]);
    fragments.extend(client_frame(FIN | CONTINUE, &[2; 10]));
    let (code, reason) = refused(reader(vec![fragments], 16).next().await);
    assert_eq!(code, code::TOO_BIG, "{reason}");
    assert!(reason.contains("20 bytes"), "{reason}");

    let at_limit = client_frame(FIN | BINARY, &[3; 16]);
    assert_eq!(reader(vec![at_limit], 16).next().await.unwrap(), Received::Binary(vec![3; 16].into()));
}

#[tokio::test]
async fn an_unmasked_frame_reserved_bits_and_bad_sequences_are_refused_1002() {
    let unmasked = vec![FIN | TEXT, 2, b'h', b'i'];
    let (code, reason) = refused(reader(vec![unmasked], 1024).next().await);
    assert_eq!(code, code::PROTOCOL);
    assert!(reason.contains("not masked"), "{reason}");

    let reserved = client_frame(FIN | 0x40 | TEXT, b"hi");
    let (code, reason) = refused(reader(vec![reserved], 1024).next().await);
    assert_eq!(code, code::PROTOCOL);
    assert!(reason.contains("reserved bits"), "{reason}");

    let lone_continuation = client_frame(FIN | CONTINUE, b"hi");
    assert_eq!(refused(reader(vec![lone_continuation], 1024).next().await).0, code::PROTOCOL);

    let mut interrupted = client_frame(TEXT, b"one");
    interrupted.extend(client_frame(FIN | TEXT, b"two"));
    assert_eq!(refused(reader(vec![interrupted], 1024).next().await).0, code::PROTOCOL);

    let fragmented_ping = client_frame(PING, b"p");
    assert_eq!(refused(reader(vec![fragmented_ping], 1024).next().await).0, code::PROTOCOL);

    let (code, reason) = refused(reader(vec![client_frame(FIN | CLOSE, b"\x03\xed")], 1024).next().await);
    assert_eq!(code, code::PROTOCOL);
    assert!(reason.contains("close code 1005"), "{reason}");

    let reserved_opcode = client_frame(FIN | 0x3, b"x");
    assert_eq!(refused(reader(vec![reserved_opcode], 1024).next().await).0, code::PROTOCOL);
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_is_refused_1007() {
    // "é" cut between its fragments is fine; a lone continuation byte is not.
    let mut split_char = client_frame(TEXT, &"é".as_bytes()[..1]);
    split_char.extend(client_frame(FIN | CONTINUE, &"é".as_bytes()[1..]));
    assert_eq!(reader(vec![split_char], 1024).next().await.unwrap(), text("é"));

    let (code, reason) = refused(reader(vec![client_frame(FIN | TEXT, b"a\x80b")], 1024).next().await);
    assert_eq!(code, code::INVALID_DATA);
    assert!(reason.contains("not UTF-8"), "{reason}");
}

async fn loopback() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn a_reader_parked_mid_message_resumes_on_the_same_socket_losing_and_repeating_nothing() {
    use tokio::io::AsyncWriteExt as _;
    let (mut client, server) = loopback().await;
    let first = client_frame(TEXT, b"parked ");
    let second = client_frame(FIN | CONTINUE, b"and resumed");
    let after = client_frame(FIN | BINARY, b"next");
    let half = second.len() / 2;
    // Read ahead by hyper: the first frame's first bytes.
    let mut wire = WireReader::new(server, Bytes::copy_from_slice(&first[..3]), 1024);
    client.write_all(&first[3..]).await.unwrap();
    client.write_all(&second[..half]).await.unwrap();
    // No message is whole: the read waits, and is cancelled.
    let waited = tokio::time::timeout(Duration::from_millis(300), wire.next()).await;
    assert!(waited.is_err(), "no message should be complete yet: {waited:?}");

    let (server, state) = wire.park();
    let partial = state.partial.clone().expect("the first fragment is held");
    assert!(partial.text);
    assert_eq!(&partial.bytes[..], b"parked ");
    let bytes = state.to_bytes();
    let state = ReadState::from_bytes(&bytes).unwrap();

    let mut resumed = WireReader::resume(server, state, 1024);
    client.write_all(&second[half..]).await.unwrap();
    client.write_all(&after).await.unwrap();
    assert_eq!(resumed.next().await.unwrap(), text("parked and resumed"));
    assert_eq!(resumed.next().await.unwrap(), Received::Binary(Bytes::from_static(b"next")));
    drop(client);
    assert!(matches!(resumed.next().await, Err(WireError::Ended)));
}

#[test]
fn a_read_state_round_trips_and_a_bad_one_is_refused_saying_why() {
    let state = ReadState {
        unparsed: BytesMut::from(&b"\x81\x85"[..]),
        partial: Some(Partial { text: false, bytes: BytesMut::from(&b"\x00\x01"[..]) }),
    };
    let bytes = state.to_bytes();
    assert_eq!(ReadState::from_bytes(&bytes).unwrap(), state);
    assert_eq!(ReadState::from_bytes(&ReadState::default().to_bytes()).unwrap(), ReadState::default());

    let mut other_version = bytes.clone();
    other_version[0] = 9;
    let error = ReadState::from_bytes(&other_version).unwrap_err().to_string();
    assert!(error.contains("version 9") && error.contains("reads version 1"), "{error}");
    let error = ReadState::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err().to_string();
    assert!(error.contains("ends in the unparsed bytes"), "{error}");
    let mut longer = bytes.clone();
    longer.push(0);
    let error = ReadState::from_bytes(&longer).unwrap_err().to_string();
    assert!(error.contains("1 bytes are left over"), "{error}");
    let error = ReadState::from_bytes(&[1, 7]).unwrap_err().to_string();
    assert!(error.contains("kind is 7"), "{error}");
}

#[tokio::test]
async fn the_writer_sends_unmasked_frames_and_a_parked_one_resumes_mid_frame_without_loss() {
    // Four bytes of room: a flush blocks mid-frame until the peer reads.
    let (near, mut far) = tokio::io::duplex(4);
    let mut writer = WireWriter::new(near);
    writer.queue(Message::text("hello"));
    writer.queue_close(CloseFrame { code: 1001.into(), reason: "bye".into() });
    let blocked = tokio::time::timeout(Duration::from_millis(100), writer.flush()).await;
    assert!(blocked.is_err(), "the flush should wait for the peer");
    let (near, unwritten) = writer.park();
    assert_eq!(unwritten.len(), 14 - 4, "the four bytes written are not handed out again");
    let mut writer = WireWriter::resume(near, unwritten);

    let reading = tokio::spawn(async move {
        let mut got = vec![0; 14];
        far.read_exact(&mut got).await.map(|_| got)
    });
    writer.flush().await.unwrap();
    let got = reading.await.unwrap().unwrap();
    assert_eq!(&got[..7], b"\x81\x05hello", "an unmasked, final text frame, once");
    assert_eq!(&got[7..], b"\x88\x05\x03\xe9bye");
    let (_, unwritten) = writer.park();
    assert!(unwritten.is_empty(), "everything went out");
}
