//! Holding every instance of a module at once (a swap, an adopt) without
//! freezing the module while one instance is busy.
//!
//! # The problem
//!
//! Locking instances one by one and waiting for each busy one in turn holds
//! every instance already locked while it waits: one long call freezes the
//! whole module for as long as it runs (issue 7, item 5). Only try-locking
//! everything and backing off when one is busy does not work under load
//! either: with calls arriving nonstop on many threads, some instance is
//! nearly always busy, and the swap retries until its deadline.
//!
//! # The gate
//!
//! Each module has a [`SwapGate`]: a flag that new calls read before they
//! take their instance (one `Acquire` load, never written in steady state,
//! so the call path stays cheap) and wait on while it is closed. A swap:
//!
//! 1. closes the gate, so no new call takes an instance of the module;
//! 2. takes every instance's lock, allowing the calls that were already
//!    running a short grace (starting at [`FIRST_GRACE`], doubling each
//!    round up to [`MAX_GRACE`]) to end: ordinary calls end well within it;
//! 3. if one instance is still busy after the grace, releases every lock it
//!    took, opens the gate for every other instance (their waiting calls
//!    run), waits for that one instance alone until the swap's deadline,
//!    and starts again at 1.
//!
//! So while a swap waits for a long call, it holds nothing and every other
//! instance serves; the other instances pause only for the grace and the
//! migration. New calls to the instance being waited for wait at the gate
//! (they would have waited for the long call anyway), so the swap gets that
//! instance when the long call ends and they run on the new version. A call
//! that passed the gate just before it closed is either waited for (it holds
//! its instance) or runs after the swap (it waits for the instance's lock):
//! either way it runs entirely on one version.
//!
//! # Instances that start meanwhile
//!
//! An instance created after the swap listed the module's instances is not
//! held by the swap, so its first call must not start it on the old
//! version. The start path, holding the new instance's lock, checks the gate
//! again after a `SeqCst` fence; the swap closes the gate and fences before
//! it lists the instances. Of two threads that each write (the map entry; the
//! flag) and then read the other's (the flag; the map), at least one sees the
//! other's write: either the swap lists the instance (and waits for its
//! start), or the start sees the gate closed and waits for the swap.
//!
//! That re-check is a second line: every call path inserts its instance
//! before it passes the gate, and the map's insert and the swap's listing
//! are ordered by the map's locks, so an instance the swap did not list
//! already finds the gate closed when it passes. The loom models confirm
//! both halves: without the re-check (or without the fences) they pass;
//! without both the pass and the re-check, or with the listing moved
//! before the gate closes, an instance ends on the old version.
//!
//! # Model checks
//!
//! This file is the swap core the loom models in `loom_tests.rs` check: it
//! is generic over the instance ([`Gated`]) and built on `crate::sync`, so
//! the models run it as it is, with a counter for a module.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Instance, ModuleEntry, Slot};
use crate::sync::{AtomicBool, AtomicU8, Condvar, Mutex, MutexGuard, Ordering, fence, lock_until};

/// How long a swap first lets calls that were already running end while it
/// holds the instances it has.
pub(super) const FIRST_GRACE: Duration = Duration::from_millis(2);
/// The longest grace: how long a swap may hold other instances while a busy
/// one ends its call.
pub(super) const MAX_GRACE: Duration = Duration::from_millis(50);

/// The gate is open: calls pass.
const OPEN: u8 = 0;
/// A swap is taking the instances: every call waits.
const CLOSED: u8 = 1;
/// A swap waits for one busy instance: calls to it wait, the others pass.
const WAITING_FOR_ONE: u8 = 2;

/// What the swap core needs of an instance: the lock a call holds for its
/// whole duration, and the flag that keeps its new calls waiting while a
/// swap waits for it. The engine's instances and the loom models' fake ones
/// implement it, so both run the same core.
pub(super) trait Gated {
    /// What the lock guards: the instance's state and the version it runs on.
    type Slot;
    fn slot(&self) -> &Mutex<Self::Slot>;
    fn wanted_by_swap(&self) -> &AtomicBool;
}

impl Gated for Instance {
    type Slot = Slot;
    #[inline]
    fn slot(&self) -> &Mutex<Slot> {
        &self.slot
    }
    #[inline]
    fn wanted_by_swap(&self) -> &AtomicBool {
        &self.wanted_by_swap
    }
}

/// The flag new calls of a module wait on while a swap takes its instances.
pub(super) struct SwapGate {
    state: AtomicU8,
    parked: Mutex<()>,
    opened: Condvar,
}

impl SwapGate {
    pub(super) fn new() -> SwapGate {
        SwapGate { state: AtomicU8::new(OPEN), parked: Mutex::new(()), opened: Condvar::new() }
    }

    /// The call path's locking: waits at the gate, then locks `instance`
    /// and returns its slot. A slot that `unstarted` says is not started yet
    /// is returned only when no swap can be holding the module without
    /// having listed this instance (see the module docs); the caller starts
    /// it on the current version while it holds the lock.
    #[inline]
    pub(super) fn enter<'a, I: Gated>(
        &self,
        instance: &'a I,
        unstarted: impl Fn(&I::Slot) -> bool,
    ) -> MutexGuard<'a, I::Slot> {
        loop {
            self.pass(instance);
            let slot = instance.slot().lock();
            if !unstarted(&slot) || !self.closed_for_new_instance() {
                return slot;
            }
            // A swap or adopt under way may have listed the instances before
            // this one was added, and would then neither wait for this start
            // nor move its state: wait for it to finish.
            drop(slot);
        }
    }

    /// Returns once `instance` may be called: at once in steady state.
    #[inline]
    fn pass<I: Gated>(&self, instance: &I) {
        if self.state.load(Ordering::Acquire) != OPEN {
            self.wait_open(instance.wanted_by_swap());
        }
    }

    #[cold]
    fn wait_open(&self, wanted_by_swap: &AtomicBool) {
        let mut parked = self.parked.lock();
        loop {
            match self.state.load(Ordering::Acquire) {
                OPEN => return,
                WAITING_FOR_ONE if !wanted_by_swap.load(Ordering::Acquire) => return,
                _ => self.opened.wait(&mut parked),
            }
        }
    }

    /// For a first call that holds its new instance: whether a swap may be
    /// holding the module without having seen this instance (see the module
    /// docs). The fence orders the caller's insert into the map before the read.
    #[cold]
    fn closed_for_new_instance(&self) -> bool {
        fence(Ordering::SeqCst);
        self.state.load(Ordering::SeqCst) == CLOSED
    }

    fn close(&self) -> GateClosed<'_> {
        self.state.store(CLOSED, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        GateClosed { gate: self }
    }

    /// Lets every call through except those to the instance whose flag is
    /// `wanted_by_swap`, which wait until the gate opens (or closes again,
    /// and then opens).
    fn wait_for_one(&self, wanted_by_swap: &AtomicBool) {
        wanted_by_swap.store(true, Ordering::Release);
        self.set(WAITING_FOR_ONE);
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        // Under the lock, so a call between its check and its wait cannot
        // miss the wake-up.
        let _parked = self.parked.lock();
        self.opened.notify_all();
    }

    /// Runs `with_held` while every instance `list` returns is held and the
    /// gate closed (see the module docs), with the instances and their slots
    /// in the same order and the moment the first of them was held; or gives
    /// up at `deadline`, changing nothing, and returns the instance that was
    /// still busy. `list` returns the instances that exist now. `waiting` is
    /// told the busy instance before the swap waits for it alone, and `None`
    /// when that wait ends.
    pub(super) fn hold_all<I: Gated, R>(
        &self,
        list: impl Fn() -> Vec<Arc<I>>,
        deadline: Instant,
        waiting: impl Fn(Option<&I>),
        with_held: impl FnOnce(&[Arc<I>], &mut [MutexGuard<'_, I::Slot>], Instant) -> R,
    ) -> Result<R, Arc<I>> {
        let mut grace = FIRST_GRACE;
        let mut instances;
        // The instance the last round waited for; its calls wait at the gate.
        let mut waited_for: Option<Arc<I>> = None;
        let unwant = |waited_for: Option<Arc<I>>| {
            if let Some(instance) = waited_for {
                instance.wanted_by_swap().store(false, Ordering::Release);
            }
        };
        let (gate, mut slots, held_since) = loop {
            let gate = self.close();
            instances = list();
            let round_started = Instant::now();
            match hold_round(&instances, (round_started + grace).min(deadline)) {
                Ok(slots) => break (gate, slots, round_started),
                Err(busy) => {
                    unwant(waited_for.take());
                    // Wait for the busy instance alone, holding nothing.
                    gate.wait_for_one(busy.wanted_by_swap());
                    waiting(Some(&busy));
                    let freed = lock_until(busy.slot(), deadline).map(drop);
                    waiting(None);
                    if freed.is_none() {
                        unwant(Some(busy.clone()));
                        self.set(OPEN);
                        return Err(busy);
                    }
                    waited_for = Some(busy);
                    grace = (grace * 2).min(MAX_GRACE);
                }
            }
        };
        let result = with_held(&instances, &mut slots, held_since);
        // Release the instances first, then open the gate.
        drop(slots);
        unwant(waited_for);
        drop(gate);
        Ok(result)
    }
}

/// The gate, closed; dropping it opens the gate and wakes the waiting calls.
struct GateClosed<'a> {
    gate: &'a SwapGate,
}

impl GateClosed<'_> {
    /// Opens the gate for every instance but the one whose flag is
    /// `wanted_by_swap` (rather than for all).
    fn wait_for_one(self, wanted_by_swap: &AtomicBool) {
        let gate = self.gate;
        // The state is set below instead of by Drop; the guard owns nothing else.
        std::mem::forget(self);
        gate.wait_for_one(wanted_by_swap);
    }
}

impl Drop for GateClosed<'_> {
    fn drop(&mut self) {
        self.gate.set(OPEN);
    }
}

/// Takes every instance's lock, letting busy ones end their call until
/// `round_end`; on the first that does not, releases all and returns it.
fn hold_round<I: Gated>(
    instances: &[Arc<I>],
    round_end: Instant,
) -> Result<Vec<MutexGuard<'_, I::Slot>>, Arc<I>> {
    let mut slots = Vec::with_capacity(instances.len());
    for instance in instances {
        match instance.slot().try_lock().or_else(|| instance.slot().try_lock_until(round_end)) {
            Some(slot) => slots.push(slot),
            None => return Err(instance.clone()),
        }
    }
    Ok(slots)
}

/// The instance a swap gave up waiting for at its deadline.
pub(super) struct StillBusy {
    pub key: Box<str>,
}

impl ModuleEntry {
    /// [`SwapGate::hold_all`] for this module's instances; the instance it
    /// waits for shows in the module's status.
    pub(super) fn with_all_held<R>(
        &self,
        deadline: Instant,
        with_held: impl FnOnce(&[Arc<Instance>], &mut [MutexGuard<'_, Slot>], Instant) -> R,
    ) -> Result<R, StillBusy> {
        let waiting = |busy: Option<&Instance>| self.swap_progress.waiting_for(busy.map(|busy| &*busy.key));
        (self.gate.hold_all(|| self.instances_now(), deadline, waiting, with_held))
            .map_err(|busy| StillBusy { key: busy.key.clone() })
    }
}

/// The modules with a load, rollback, adopt or unload under way: a second
/// one of the same module is refused at once, not queued (guarantee 3).
pub(super) struct SwapsUnderWay {
    modules: Mutex<HashSet<Box<str>>>,
}

impl SwapsUnderWay {
    pub(super) fn new() -> SwapsUnderWay {
        SwapsUnderWay { modules: Mutex::new(HashSet::new()) }
    }

    /// Marks `module` as being swapped until the returned guard drops;
    /// `None` if a swap of it is under way already.
    pub(super) fn begin(&self, module: &str) -> Option<SwapUnderWay<'_>> {
        self.modules.lock().insert(module.into()).then(|| SwapUnderWay { swaps: self, module: module.into() })
    }
}

/// A swap under way; dropping it ends the swap.
pub(super) struct SwapUnderWay<'a> {
    swaps: &'a SwapsUnderWay,
    module: Box<str>,
}

impl Drop for SwapUnderWay<'_> {
    fn drop(&mut self) {
        self.swaps.modules.lock().remove(&self.module);
    }
}
