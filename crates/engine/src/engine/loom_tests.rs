//! Loom models of the swap core (issue 7, item 17): call vs swap, first
//! call vs adopt, remove vs swap, swap vs swap.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p hotswap --release --lib loom`
//! (`LOOM_MAX_PREEMPTIONS` defaults to 3 here; .ci/run says how long it takes).
//!
//! # What is the engine's code and what is not
//!
//! The models run the engine's own locking: [`SwapGate`] (the gate's
//! states, its fences and condition variable, [`SwapGate::enter`] on the
//! call path with its re-check for instances that start during a swap,
//! [`SwapGate::hold_all`] with its rounds, grace and waiting for one busy
//! instance), [`SwapsUnderWay`], and the slot mutexes and flags of
//! `crate::sync`, which are loom's here. Loom cannot run dlopen'd code, so a
//! [`FakeModule`] stands in for `ModuleEntry`: its state is a counter and
//! the version it runs on, and its glue mirrors the engine's line for line
//! (`FakeModule::call` is `Engine::call` with `ModuleEntry::start`,
//! `swap` is `ModuleEntry::commit`, `adopt` is `Engine::adopt` with
//! `insert_saved`, `remove` is `Engine::remove_instance`). Its instance map
//! is a mutex-guarded list where the engine has a `DashMap`, whose shards
//! are locks too: an insert and a listing are ordered the same way.
//!
//! Loom has no clock: a swap's grace may or may not run out (both are
//! explored), its deadline never does (see `crate::sync`).
//!
//! # What each model checks
//!
//! - every call succeeds (calls during a swap wait, they never fail);
//! - no acknowledged update is lost: each instance's counter, plus what a
//!   removal booked, equals the calls acknowledged;
//! - a swap moves every instance or none, and an instance that starts
//!   during a swap ends on the new version: after it, every started
//!   instance runs the module's current version;
//! - no deadlock (loom fails a model whose threads all block).

use std::sync::Arc;
use std::time::{Duration, Instant};

use loom::thread;

use super::hold::{Gated, SwapGate, SwapsUnderWay};
use crate::sync::{AtomicBool, Mutex};

/// An instance's state in the model: the engine's `Slot` with a counter
/// for a state and a number for a version.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FakeSlot {
    Unstarted,
    Live { version: u32, count: u64 },
    Removed,
}

struct FakeInstance {
    key: &'static str,
    slot: Mutex<FakeSlot>,
    wanted_by_swap: AtomicBool,
}

impl Gated for FakeInstance {
    type Slot = FakeSlot;
    fn slot(&self) -> &Mutex<FakeSlot> {
        &self.slot
    }
    fn wanted_by_swap(&self) -> &AtomicBool {
        &self.wanted_by_swap
    }
}

impl FakeInstance {
    fn new(key: &'static str, slot: FakeSlot) -> Arc<FakeInstance> {
        Arc::new(FakeInstance { key, slot: Mutex::new(slot), wanted_by_swap: AtomicBool::new(false) })
    }
}

#[derive(Debug, PartialEq)]
enum Refused {
    SwapInProgress,
    AlreadyStarted(&'static str),
}

/// `ModuleEntry` with a counter for a module.
struct FakeModule {
    gate: SwapGate,
    swaps: SwapsUnderWay,
    current: Mutex<u32>,
    instances: Mutex<Vec<Arc<FakeInstance>>>,
    /// The counts of removed instances (the engine's `Books::counted`).
    removed_counts: Mutex<u64>,
}

impl FakeModule {
    /// A module on version 1 with these instances.
    fn new(instances: &[(&'static str, FakeSlot)]) -> Arc<FakeModule> {
        let instances = instances.iter().map(|&(key, slot)| FakeInstance::new(key, slot)).collect();
        Arc::new(FakeModule {
            gate: SwapGate::new(),
            swaps: SwapsUnderWay::new(),
            current: Mutex::new(1),
            instances: Mutex::new(instances),
            removed_counts: Mutex::new(0),
        })
    }

    /// `ModuleEntry::instances_now`.
    fn instances_now(&self) -> Vec<Arc<FakeInstance>> {
        self.instances.lock().clone()
    }

    /// `ModuleEntry::instance`: found, or created unstarted.
    fn instance(&self, key: &'static str) -> Arc<FakeInstance> {
        let mut instances = self.instances.lock();
        if let Some(found) = instances.iter().find(|instance| instance.key == key) {
            return found.clone();
        }
        let created = FakeInstance::new(key, FakeSlot::Unstarted);
        instances.push(created.clone());
        created
    }

    /// `Engine::call` with `call_instance` and `start`: one increment of the
    /// counter; returns the version it ran on and the count it acknowledged.
    fn call(&self, key: &'static str) -> (u32, u64) {
        loop {
            let instance = self.instance(key);
            let mut slot = self.gate.enter(&*instance, |slot| matches!(slot, FakeSlot::Unstarted));
            match *slot {
                // Removed between the lookup and the lock: look up again.
                FakeSlot::Removed => continue,
                FakeSlot::Unstarted => *slot = FakeSlot::Live { version: *self.current.lock(), count: 0 },
                FakeSlot::Live { .. } => {}
            }
            let FakeSlot::Live { version, count } = &mut *slot else { unreachable!("started above") };
            *count += 1;
            return (*version, *count);
        }
    }

    /// `Engine::load` of a new version: `begin_swap`, then `commit`.
    fn swap(&self, to: u32) -> Result<(), Refused> {
        let _under_way = self.swaps.begin("fake").ok_or(Refused::SwapInProgress)?;
        let held = self.gate.hold_all(
            || self.instances_now(),
            far_deadline(),
            |_| {},
            |_instances, slots, _held_since| {
                for slot in slots.iter_mut() {
                    if let FakeSlot::Live { version, .. } = &mut **slot {
                        *version = to;
                    }
                }
                *self.current.lock() = to;
            },
        );
        held.unwrap_or_else(|busy| panic!("the deadline never passes in a model, yet {} was busy", busy.key));
        Ok(())
    }

    /// `Engine::adopt`: starts the saved instances on the current version,
    /// all or none, refusing one that started already.
    fn adopt(&self, saved: &[(&'static str, u64)]) -> Result<(), Refused> {
        let _under_way = self.swaps.begin("fake").ok_or(Refused::SwapInProgress)?;
        let version = *self.current.lock();
        let held = self.gate.hold_all(
            || self.instances_now(),
            far_deadline(),
            |_| {},
            |instances, slots, _held_since| {
                let held: Vec<(&str, usize)> = (instances.iter().enumerate())
                    .filter(|(i, _)| *slots[*i] != FakeSlot::Removed)
                    .map(|(i, instance)| (instance.key, i))
                    .collect();
                let held = |key| held.iter().find(|(held_key, _)| *held_key == key).map(|&(_, i)| i);
                for &(key, _) in saved {
                    if held(key).is_some_and(|i| matches!(*slots[i], FakeSlot::Live { .. })) {
                        return Err(Refused::AlreadyStarted(key));
                    }
                }
                for &(key, count) in saved {
                    let live = FakeSlot::Live { version, count };
                    match held(key) {
                        Some(i) => *slots[i] = live,
                        None => self.insert_saved(key, live),
                    }
                }
                Ok(())
            },
        );
        held.unwrap_or_else(|busy| panic!("the deadline never passes in a model, yet {} was busy", busy.key))
    }

    /// `ModuleEntry::insert_saved`: a key created since the adopt listed the
    /// instances is filled in place.
    fn insert_saved(&self, key: &'static str, live: FakeSlot) {
        let existing = {
            let mut instances = self.instances.lock();
            match instances.iter().find(|instance| instance.key == key) {
                Some(found) => found.clone(),
                None => return instances.push(FakeInstance::new(key, live)),
            }
        };
        let mut slot = existing.slot.lock();
        assert_eq!(
            *slot,
            FakeSlot::Unstarted,
            "instance {key} started during the adopt; its saved state is lost"
        );
        *slot = live;
    }

    /// `Engine::remove_instance`: out of the map, then the slot (waiting for
    /// its call), its count booked.
    fn remove(&self, key: &'static str) -> bool {
        let removed = {
            let mut instances = self.instances.lock();
            let Some(index) = instances.iter().position(|instance| instance.key == key) else { return false };
            instances.remove(index)
        };
        let mut slot = removed.slot.lock();
        if let FakeSlot::Live { count, .. } = *slot {
            *self.removed_counts.lock() += count;
        }
        *slot = FakeSlot::Removed;
        true
    }

    /// Checks what every model must leave: each started instance on the
    /// current version; returns the counts of the instances and of removed
    /// ones, by key ("removed" for the latter).
    fn settled(&self) -> Vec<(&'static str, u64)> {
        let current = *self.current.lock();
        let mut counts = vec![("removed", *self.removed_counts.lock())];
        for instance in self.instances_now() {
            match *instance.slot.lock() {
                FakeSlot::Live { version, count } => {
                    assert_eq!(
                        version, current,
                        "instance {} runs version {version}, the module {current}",
                        instance.key
                    );
                    counts.push((instance.key, count));
                }
                FakeSlot::Unstarted => counts.push((instance.key, 0)),
                FakeSlot::Removed => panic!("a removed instance {} is still in the map", instance.key),
            }
        }
        counts.sort();
        counts
    }
}

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Runs `model` under loom, bounded to 3 preemptions unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(model);
}

/// Call vs swap: a call to a started instance, then the first call of a
/// new one, run while the module is swapped. Both succeed, neither update
/// is lost, and both instances end on the new version.
#[test]
fn loom_calls_during_a_swap_wait_and_end_on_the_new_version() {
    check(|| {
        let module = FakeModule::new(&[("a", FakeSlot::Live { version: 1, count: 0 })]);
        let caller = thread::spawn({
            let module = module.clone();
            move || [module.call("a"), module.call("b")]
        });
        assert_eq!(module.swap(2), Ok(()));
        for (version, count) in caller.join().unwrap() {
            assert!(version == 1 || version == 2, "a call ran on version {version}");
            assert_eq!(count, 1);
        }
        assert_eq!(module.settled(), [("a", 1), ("b", 1), ("removed", 0)]);
        assert_eq!(module.call("b"), (2, 2), "after the swap, calls run on the new version");
    });
}

/// Call vs swap, with the swap's grace running out: while one call holds
/// its instance, the swap waits for it alone and a first call to another
/// instance passes the gate meanwhile. The swap still moves both, and
/// neither call fails nor loses its update.
#[test]
fn loom_a_swap_waiting_for_one_busy_instance_still_moves_every_instance() {
    check(|| {
        let module = FakeModule::new(&[("busy", FakeSlot::Live { version: 1, count: 0 })]);
        let callers: Vec<_> = ["busy", "new"]
            .into_iter()
            .map(|key| {
                let module = module.clone();
                thread::spawn(move || module.call(key))
            })
            .collect();
        assert_eq!(module.swap(2), Ok(()));
        for caller in callers {
            let (version, count) = caller.join().unwrap();
            assert!(version == 1 || version == 2, "a call ran on version {version}");
            assert_eq!(count, 1);
        }
        assert_eq!(module.settled(), [("busy", 1), ("new", 1), ("removed", 0)]);
    });
}

/// First call vs adopt: a call starts an instance that an adopt brings
/// saved state for. Either the call ran on the adopted state or the adopt
/// refused the started instance and adopted nothing; the call's update is
/// never overwritten nor its instance started fresh over saved state.
#[test]
fn loom_a_first_call_racing_an_adopt_never_loses_an_update() {
    check(|| {
        let module = FakeModule::new(&[]);
        let caller = thread::spawn({
            let module = module.clone();
            move || module.call("a")
        });
        let adopted = module.adopt(&[("a", 10), ("b", 20)]);
        let (version, count) = caller.join().unwrap();
        assert_eq!(version, 1);
        match adopted {
            Ok(()) => {
                assert_eq!(count, 11, "the call ran on the adopted state");
                assert_eq!(module.settled(), [("a", 11), ("b", 20), ("removed", 0)]);
            }
            Err(refused) => {
                assert_eq!(refused, Refused::AlreadyStarted("a"));
                assert_eq!(count, 1);
                assert_eq!(module.settled(), [("a", 1), ("removed", 0)], "all or none adopted");
            }
        }
    });
}

/// Remove vs swap: an instance is removed while the module is swapped and
/// a call to its key arrives. The swap neither stalls nor fails, the removed
/// instance's count is booked, and the call's update survives wherever it
/// ran (on the removed instance, or on a fresh one after the removal).
#[test]
fn loom_removing_an_instance_during_a_swap_loses_nothing_and_stalls_nothing() {
    check(|| {
        let module = FakeModule::new(&[("a", FakeSlot::Live { version: 1, count: 1 })]);
        let remover = thread::spawn({
            let module = module.clone();
            move || module.remove("a")
        });
        let caller = thread::spawn({
            let module = module.clone();
            move || module.call("a")
        });
        assert_eq!(module.swap(2), Ok(()));
        assert!(remover.join().unwrap());
        let (_, count) = caller.join().unwrap();
        let settled = module.settled();
        let total: u64 = settled.iter().map(|(_, count)| count).sum();
        assert_eq!(total, 2, "one call before and one during: {settled:?}");
        assert!(count == 1 || count == 2, "the call acknowledged {count}");
    });
}

/// Swap vs swap: two swaps of one module at once, while a call runs. One
/// may be refused at once ("swap in progress", never queued); whatever
/// succeeds moves every instance, and the call's update survives.
#[test]
fn loom_two_swaps_at_once_refuse_one_or_run_one_after_the_other() {
    check(|| {
        let module = FakeModule::new(&[("a", FakeSlot::Live { version: 1, count: 0 })]);
        let swaps: Vec<_> = [2, 3]
            .into_iter()
            .map(|to| {
                let module = module.clone();
                thread::spawn(move || module.swap(to))
            })
            .collect();
        let (_, count) = module.call("a");
        let outcomes: Vec<_> = swaps.into_iter().map(|swap| swap.join().unwrap()).collect();
        assert!(outcomes.contains(&Ok(())), "one swap at least succeeds: {outcomes:?}");
        for outcome in &outcomes {
            assert!(matches!(outcome, Ok(()) | Err(Refused::SwapInProgress)), "{outcome:?}");
        }
        assert_eq!(count, 1);
        assert_eq!(module.settled(), [("a", 1), ("removed", 0)]);
    });
}
