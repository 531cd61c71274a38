//! What a typed module's snapshot costs: the codec and the shape check.
//!
//! * `codec_encode/<codec>` and `codec_decode/<codec>`: a state of about
//!   1 MiB (a `Vec` of 30 000 small structs) written and read with the
//!   SDK's envelope (postcard 1 and the shape; decode includes the shape
//!   check) and with serde_json, for comparison. Throughput is per byte of
//!   the postcard snapshot.
//! * `shape_check/same_shape`: the restore of a small state of its own
//!   layout when the stored shape is byte-equal to the type's (the usual
//!   case): header, a comparison of the shape bytes, the decode.
//! * `shape_check/compatible_shape`: the same when the bytes differ but the
//!   shapes are compatible (an enum variant appended since): the stored
//!   shape is decoded and compared field by field.
//!
//! Run with `cargo bench -p hotswap-bench --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotswap_module::__private::{encode_state, restore_state};
use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    balance: i64,
    history: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: u64,
    amount: i64,
    note: String,
    tags: Vec<u16>,
    kind: Kind,
}

#[derive(Debug, Serialize, Deserialize)]
enum Kind {
    Deposit,
    Withdrawal { fee: u32 },
}

fn ledger() -> Ledger {
    let history = (0..30_000u64)
        .map(|id| Entry {
            id: id * 7919,
            amount: (id as i64 - 15_000) * 13,
            note: format!("entry {id:>12} ok"),
            tags: vec![id as u16, 7],
            kind: if id % 3 == 0 { Kind::Withdrawal { fee: 25 } } else { Kind::Deposit },
        })
        .collect();
    Ledger { balance: 42, history }
}

fn no_migration<T>(_: Previous<'_>) -> Result<T, ModuleError> {
    Err(ModuleError::new("same layout: no migration"))
}

fn codec(c: &mut Criterion) {
    let state = ledger();
    let mut snapshot = Vec::new();
    encode_state(&state, 1, &mut snapshot).unwrap();
    let json = serde_json::to_vec(&state).unwrap();
    println!("1 MiB state: postcard snapshot {} bytes, JSON {} bytes", snapshot.len(), json.len());

    let mut group = c.benchmark_group("codec_encode");
    group.throughput(Throughput::Bytes(snapshot.len() as u64));
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let mut buffer = Vec::with_capacity(snapshot.len());
    group.bench_function("postcard_envelope", |b| {
        b.iter(|| {
            buffer.clear();
            encode_state(black_box(&state), 1, &mut buffer).unwrap();
        })
    });
    let mut buffer = Vec::with_capacity(json.len());
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            buffer.clear();
            serde_json::to_writer(&mut buffer, black_box(&state)).unwrap();
        })
    });
    group.finish();

    let mut group = c.benchmark_group("codec_decode");
    group.throughput(Throughput::Bytes(snapshot.len() as u64));
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("postcard_envelope", |b| {
        b.iter(|| {
            let previous = Previous::new("ledger", "1.0.0", black_box(&snapshot));
            restore_state::<Ledger>(Some(previous), 1, no_migration).unwrap()
        })
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Ledger>(black_box(&json)).unwrap())
    });
    group.finish();
}

/// `Kind` with a variant appended: a compatible shape in other bytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "Kind")]
enum KindLater {
    Deposit,
    Withdrawal { fee: u32 },
    Refund,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename = "Ledger")]
struct LedgerLater {
    balance: i64,
    history: Vec<EntryLater>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "Entry")]
struct EntryLater {
    id: u64,
    amount: i64,
    note: String,
    tags: Vec<u16>,
    kind: KindLater,
}

fn shape_check(c: &mut Criterion) {
    let small = Ledger { balance: 7, history: Vec::new() };
    let mut snapshot = Vec::new();
    encode_state(&small, 1, &mut snapshot).unwrap();

    let mut group = c.benchmark_group("shape_check");
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("same_shape", |b| {
        b.iter(|| {
            let previous = Previous::new("ledger", "1.0.0", black_box(&snapshot));
            restore_state::<Ledger>(Some(previous), 1, no_migration).unwrap()
        })
    });
    group.bench_function("compatible_shape", |b| {
        b.iter(|| {
            let previous = Previous::new("ledger", "1.0.0", black_box(&snapshot));
            restore_state::<LedgerLater>(Some(previous), 1, no_migration).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, shape_check);
criterion_main!(benches);
