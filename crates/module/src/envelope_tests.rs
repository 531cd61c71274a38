//! Every rule of the envelope, attacked: each change of a state type at one
//! layout is refused naming the field, never misread.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::Change;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename = "State")]
struct V1 {
    calls: u32,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct Pos {
    x: u16,
    y: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
enum Phase {
    #[default]
    Lobby,
    Playing(u32),
    Ended {
        winner: String,
    },
}

fn v1() -> V1 {
    V1 {
        calls: 7,
        pos: Pos { x: 3, y: 4 },
        phase: Phase::Ended { winner: "bob".into() },
        name: "room".into(),
        log: vec![1, 2, 3],
    }
}

fn snapshot<T: Serialize + DeserializeOwned>(state: &T, layout: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(state, layout, &mut bytes).unwrap();
    bytes
}

fn previous(bytes: &[u8]) -> Previous<'_> {
    Previous::new("layouts", "1.0.0", bytes)
}

/// The refusal of reading a layout-1 snapshot of `v1()` as `T`.
fn refusal<T: DeserializeOwned + std::fmt::Debug>() -> EnvelopeError {
    let bytes = snapshot(&v1(), 1);
    previous(&bytes).decode::<T>().expect_err("a changed layout must be refused")
}

fn mismatch(error: &EnvelopeError) -> &Mismatch {
    match error {
        EnvelopeError::Incompatible { mismatch, .. } => mismatch,
        other => panic!("expected an incompatible shape, got {other:?}"),
    }
}

#[test]
fn a_snapshot_decodes_as_the_type_that_wrote_it() {
    let bytes = snapshot(&v1(), 1);
    let previous = previous(&bytes);
    assert_eq!(previous.layout(), Some(1));
    assert_eq!(previous.decode::<V1>().unwrap(), v1());
    assert_eq!(postcard::from_bytes::<V1>(previous.payload()).unwrap(), v1());
    assert!(previous.payload().len() < bytes.len());
}

#[test]
fn encoding_appends_to_what_the_buffer_holds() {
    let mut bytes = b"kept".to_vec();
    encode(&v1(), 1, &mut bytes).unwrap();
    assert_eq!(&bytes[..4], b"kept");
    assert_eq!(previous(&bytes[4..]).decode::<V1>().unwrap(), v1());
}

#[test]
fn a_fresh_instance_is_the_default() {
    let state: V1 = restore(None, 1, |_| panic!("nothing to migrate")).unwrap();
    assert_eq!(state, V1::default());
}

#[test]
fn a_snapshot_of_the_same_layout_is_decoded_without_migrate() {
    let bytes = snapshot(&v1(), 4);
    let state: V1 = restore(Some(previous(&bytes)), 4, |_| panic!("same layout: no migration")).unwrap();
    assert_eq!(state, v1());
}

#[test]
fn a_snapshot_of_another_layout_goes_to_migrate() {
    let bytes = snapshot(&v1(), 1);
    let state: V1 = restore(Some(previous(&bytes)), 2, |previous| {
        assert_eq!(previous.layout(), Some(1));
        let mut old: V1 = previous.decode().map_err(|error| ModuleError::new(error.to_string()))?;
        old.calls += 100;
        Ok(old)
    })
    .unwrap();
    assert_eq!(state.calls, 107);
}

#[test]
fn a_raw_snapshot_has_no_layout_and_goes_to_migrate() {
    let raw = 40u64.to_le_bytes();
    let previous = Previous::new("counter", "1.0.0", &raw);
    assert_eq!(previous.layout(), None);
    assert_eq!(previous.payload(), raw);
    let error = previous.decode::<u64>().unwrap_err();
    assert!(matches!(&error, EnvelopeError::Raw { name, .. } if name == "counter"), "{error:?}");
    assert!(error.to_string().contains("read its bytes with `previous.state()`"), "{error}");
    let total: u64 = restore(Some(previous), 1, |previous| {
        Ok(u64::from_le_bytes(previous.state().try_into().map_err(|_| "8 bytes")?))
    })
    .unwrap();
    assert_eq!(total, 40);
}

#[derive(Debug, Deserialize)]
#[serde(rename = "State")]
#[allow(dead_code)]
struct Renamed {
    count: u32,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

#[test]
fn a_renamed_field_is_refused_naming_both_names() {
    let error = refusal::<Renamed>();
    assert_eq!(
        mismatch(&error).change,
        Change::FieldRenamed { was: "State.calls".into(), now: "State.count".into() }
    );
    let text = error.to_string();
    assert!(text.contains("field `State.count` is new and `State.calls` is gone"), "{text}");
    assert!(text.starts_with("cannot read the snapshot of layouts 1.0.0 (layout 1) as `State`"), "{text}");
}

#[derive(Debug, Deserialize)]
#[serde(rename = "State")]
#[allow(dead_code)]
struct Retyped {
    calls: String,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

#[test]
fn a_field_of_another_type_is_refused_naming_both_types() {
    let error = refusal::<Retyped>();
    assert!(error.to_string().contains("field `State.calls` was u32, is now String"), "{error}");
}

#[derive(Debug, Deserialize)]
#[serde(rename = "State")]
#[allow(dead_code)]
struct Resized {
    calls: u32,
    pos: SmallPos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

/// As many bytes as `Pos` in memory: a layout change no size check sees.
#[derive(Debug, Deserialize)]
#[serde(rename = "Pos")]
#[allow(dead_code)]
struct SmallPos {
    x: u8,
    y: u8,
    z: u16,
}

#[test]
fn a_nested_struct_of_the_same_size_is_refused_naming_the_field() {
    let error = refusal::<Resized>();
    assert_eq!(mismatch(&error).path, "State.pos.x");
    assert!(error.to_string().contains("field `Pos.x` was u16, is now u8 (at `State.pos.x`)"), "{error}");
}

#[derive(Debug, Deserialize)]
#[serde(rename = "State")]
#[allow(dead_code)]
struct WithoutEnded {
    calls: u32,
    pos: Pos,
    phase: PhaseWithoutEnded,
    name: String,
    log: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Phase")]
#[allow(dead_code)]
enum PhaseWithoutEnded {
    Lobby,
    Playing(u32),
}

#[test]
fn a_removed_enum_variant_is_refused_naming_it() {
    let error = refusal::<WithoutEnded>();
    assert!(error.to_string().contains("enum `Phase` variant 2 `Ended` is gone"), "{error}");
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename = "State")]
struct WithMorePhases {
    calls: u32,
    pos: Pos,
    phase: PhaseWithMore,
    name: String,
    log: Vec<u64>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename = "Phase")]
enum PhaseWithMore {
    Lobby,
    Playing(u32),
    Ended { winner: String },
    Paused,
}

#[test]
fn an_appended_enum_variant_is_read() {
    let bytes = snapshot(&v1(), 1);
    let state = previous(&bytes).decode::<WithMorePhases>().unwrap();
    assert_eq!(state.phase, PhaseWithMore::Ended { winner: "bob".into() });
    assert_eq!(state.log, [1, 2, 3]);
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename = "Phase")]
enum PhaseReordered {
    Lobby,
    Ended { winner: String },
    Playing(u32),
}

#[test]
fn reordered_enum_variants_are_refused() {
    let bytes = snapshot(&Phase::Playing(3), 1);
    let error = previous(&bytes).decode::<PhaseReordered>().unwrap_err();
    assert!(
        error.to_string().contains("enum `Phase` variant 1 `Playing` is gone (this version has `Ended`"),
        "{error}"
    );
}

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename = "State")]
struct WithScore {
    calls: u32,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
    score: u64,
}

#[test]
fn a_field_added_without_a_new_layout_number_is_refused_with_the_fix() {
    let bytes = snapshot(&v1(), 1);
    let error = restore::<WithScore>(Some(previous(&bytes)), 1, |_| panic!("same layout: no migration"))
        .map(|_| ())
        .unwrap_err();
    let text = error.message();
    assert!(text.contains("field `State.score` is new (the snapshot has no such field)"), "{text}");
    assert!(text.contains("set `layout = 2` and read layout 1 in `migrate`"), "{text}");
}

#[test]
fn a_field_removed_without_a_new_layout_number_is_refused() {
    let bytes = snapshot(&WithScore::default(), 1);
    let error = previous(&bytes).decode::<V1>().unwrap_err();
    assert!(error.to_string().contains("field `State.score` is gone"), "{error}");
}

#[derive(Debug, Deserialize)]
#[serde(rename = "State")]
#[allow(dead_code)]
struct Reordered {
    name: String,
    pos: Pos,
    phase: Phase,
    calls: u32,
    log: Vec<u64>,
}

#[test]
fn reordered_fields_are_refused_naming_the_first_out_of_place() {
    let error = refusal::<Reordered>();
    assert_eq!(
        mismatch(&error).change,
        Change::FieldMoved { field: "State.name".into(), found: "State.calls".into() }
    );
    assert!(error.to_string().contains("field `State.name` is out of place"), "{error}");
}

#[derive(Debug, PartialEq, Deserialize)]
struct LedgerV1 {
    calls: u32,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

#[test]
fn a_type_of_another_name_with_the_same_shape_is_read() {
    let bytes = snapshot(&v1(), 1);
    let old = previous(&bytes).decode::<LedgerV1>().unwrap();
    assert_eq!((old.calls, old.name.as_str()), (7, "room"));
}

#[test]
fn a_migration_that_declares_the_old_state_wrongly_is_refused_with_the_fix() {
    let bytes = snapshot(&v1(), 1);
    let error = restore::<WithScore>(Some(previous(&bytes)), 2, |previous| {
        let old: Retyped = previous.decode().map_err(|error| ModuleError::new(error.to_string()))?;
        Ok(WithScore { name: old.calls, ..WithScore::default() })
    })
    .map(|_| ())
    .unwrap_err();
    let text = error.message();
    assert!(text.contains("field `State.calls` was u32, is now String"), "{text}");
    assert!(
        text.contains("declare the type that `migrate` decodes exactly as layouts 1.0.0 declared"),
        "{text}"
    );
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "Game")]
struct Game {
    players: Vec<Player>,
    scores: BTreeMap<String, (u32, u32)>,
    best: Option<Player>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Player {
    name: String,
    score: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Game")]
#[allow(dead_code)]
struct GameRetypedPlayer {
    players: Vec<PlayerRetyped>,
    scores: BTreeMap<String, (u32, u32)>,
    best: Option<PlayerRetyped>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Player")]
#[allow(dead_code)]
struct PlayerRetyped {
    name: String,
    score: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Game")]
#[allow(dead_code)]
struct GameRetypedTuple {
    players: Vec<Player>,
    scores: BTreeMap<String, (u32, u16)>,
    best: Option<Player>,
}

fn game() -> Game {
    Game {
        players: vec![Player { name: "ann".into(), score: 3 }],
        scores: BTreeMap::from([("ann".into(), (1, 2))]),
        best: None,
    }
}

#[test]
fn changes_inside_collections_are_refused_with_their_path() {
    let bytes = snapshot(&game(), 1);
    let error = previous(&bytes).decode::<GameRetypedPlayer>().unwrap_err();
    assert!(
        error.to_string().contains("field `Player.score` was u32, is now String (at `Game.players[].score`)"),
        "{error}"
    );
    let error = previous(&bytes).decode::<GameRetypedTuple>().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("field `Game.scores` was Map<String, (u32, u32)>, is now Map<String, (u32, u16)>"),
        "{error}"
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Outer {
    A(Inner),
    B { inner: Inner, more: Option<Inner> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Inner {
    X,
    Y(u8),
    Z(String),
}

#[test]
fn every_variant_of_every_enum_is_traced() {
    let shape = shape_of::<Outer>().unwrap();
    let text = format!("{:?}", shape.format);
    for name in ["\"A\"", "\"B\"", "\"X\"", "\"Y\"", "\"Z\""] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    assert!(trace::complete(&shape.format), "{text}");
    let value = Outer::B { inner: Inner::Z("z".into()), more: Some(Inner::Y(1)) };
    let bytes = snapshot(&value, 1);
    assert_eq!(previous(&bytes).decode::<Outer>().unwrap(), value);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum List {
    Nil,
    Cons(u32, Box<List>),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tree {
    label: String,
    children: Vec<Tree>,
}

#[test]
fn recursive_types_are_traced_and_read() {
    let list = List::Cons(1, Box::new(List::Cons(2, Box::new(List::Nil))));
    let bytes = snapshot(&list, 1);
    assert_eq!(previous(&bytes).decode::<List>().unwrap(), list);
    let tree = Tree { label: "a".into(), children: vec![Tree { label: "b".into(), children: vec![] }] };
    let bytes = snapshot(&tree, 1);
    assert_eq!(previous(&bytes).decode::<Tree>().unwrap(), tree);
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Endless {
    More(Box<Endless>),
    Done,
}

#[test]
fn a_recursion_its_first_variant_does_not_end_is_refused_with_advice() {
    let error = restore::<Option<Endless>>(None, 1, |_| unreachable!()).map(|_| ()).unwrap_err();
    assert!(error.message().contains("`Endless` contains itself"), "{}", error.message());
    assert!(error.message().contains("the first variant of each enum on the way must end the recursion"));
}

#[derive(Debug, Deserialize, Default)]
#[allow(dead_code)]
struct Untagged {
    value: Option<Either>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Either {
    Number(u32),
    Text(String),
}

#[test]
fn a_state_type_postcard_cannot_decode_is_refused_when_a_fresh_instance_starts() {
    let error = restore::<Untagged>(None, 1, |_| unreachable!()).map(|_| ()).unwrap_err();
    assert!(error.message().contains("cannot take the shape of the state type"), "{}", error.message());
    assert!(error.message().contains("`deserialize_any` (in `Untagged`)"), "{}", error.message());
}

#[test]
fn a_damaged_envelope_is_refused_not_misread() {
    let bytes = snapshot(&v1(), 1);
    for cut in [9, HEADER_LEN - 1, HEADER_LEN + 3] {
        let error = previous(&bytes[..cut]).decode::<V1>().unwrap_err();
        assert!(matches!(error, EnvelopeError::Damaged { .. }), "cut at {cut}: {error:?}");
    }
    // Cut inside the payload: the shape is intact, the state is not.
    let error = previous(&bytes[..bytes.len() - 2]).decode::<V1>().unwrap_err();
    assert!(matches!(error, EnvelopeError::Undecodable { .. }), "{error:?}");
    // Bytes after the state: it was not written as this shape.
    let mut longer = bytes.clone();
    longer.push(0);
    let error = previous(&longer).decode::<V1>().unwrap_err();
    assert!(error.to_string().contains("1 bytes are left over"), "{error}");
    // A shape of garbage.
    let mut garbled = bytes.clone();
    garbled[HEADER_LEN..HEADER_LEN + 6].copy_from_slice(&[0xff; 6]);
    let error = previous(&garbled).decode::<V1>().unwrap_err();
    assert!(matches!(error, EnvelopeError::Damaged { .. }), "{error:?}");
}

#[test]
fn an_envelope_from_a_newer_sdk_is_refused_naming_its_format() {
    let mut bytes = snapshot(&v1(), 1);
    bytes[8] = 9;
    let error = previous(&bytes).decode::<V1>().unwrap_err();
    assert!(matches!(error, EnvelopeError::Unsupported { format: 9, codec: 1, .. }), "{error:?}");
    let restored = restore::<V1>(Some(previous(&bytes)), 1, |_| panic!("not a layout to migrate"));
    assert!(restored.unwrap_err().message().contains("envelope format 9"));
}

#[test]
fn a_shape_nested_past_the_limit_is_refused_without_overflowing_the_stack() {
    // `Option(Option(...))`, a million deep: two bytes a level would take
    // the decoder a million frames deep without the limit.
    let option = 17u8; // Format::Option's variant index
    let mut shape = vec![option; 1_000_000];
    shape.push(0); // Format::Unit
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[FORMAT_VERSION, CODEC_POSTCARD]);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&(shape.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&shape);
    let error = previous(&bytes).decode::<V1>().unwrap_err();
    // postcard keeps no message of a `Deserialize` impl's own error.
    assert!(matches!(error, EnvelopeError::Damaged { .. }), "{error:?}");
}
