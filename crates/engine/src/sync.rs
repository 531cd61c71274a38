//! The synchronisation types of the swap core (`engine/hold.rs`, the
//! instance slots and the call path's gate): parking_lot's and std's
//! normally, loom's when built with `--cfg loom`, so that the loom models in
//! `engine/loom_tests.rs` check the very code the engine runs.
//!
//! Under loom the types keep parking_lot's API (`lock()` without a
//! `Result`, `Condvar::wait(&mut guard)`, `try_lock_until`), so the core
//! reads the same in both builds. Loom has no clock, so a timed wait is
//! modelled by what may happen in it, never by time:
//!
//! - [`Mutex::try_lock_until`] (a swap's grace for a call that is running)
//!   may run out: it tries, lets every other thread run, and tries once more;
//! - [`lock_until`] (a swap's deadline, seconds long) is taken to be long
//!   enough: it waits for the lock. A deadline that passes is tested with real
//!   time in `tests/engine/races.rs`.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom_parking_lot::{Condvar, Mutex, MutexGuard};

/// Waits for `mutex` until `deadline`; `None` if it is still held then.
#[cfg(not(loom))]
#[inline]
pub(crate) fn lock_until<T>(mutex: &Mutex<T>, deadline: std::time::Instant) -> Option<MutexGuard<'_, T>> {
    mutex.try_lock_until(deadline)
}

/// Under loom a deadline is long enough: waits for `mutex`.
#[cfg(loom)]
pub(crate) fn lock_until<T>(mutex: &Mutex<T>, _deadline: std::time::Instant) -> Option<MutexGuard<'_, T>> {
    Some(mutex.lock())
}

/// Loom's mutex and condition variable with parking_lot's API.
#[cfg(loom)]
mod loom_parking_lot {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Holds the loom guard in an `Option` so that [`Condvar::wait`] can
    /// take it by `&mut`, as parking_lot's does.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    pub(crate) struct Condvar(loom::sync::Condvar);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // Loom's mutex is poisoned only by a panicking model, which has failed already.
            MutexGuard(Some(self.0.lock().expect("a loom model panicked")))
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|guard| MutexGuard(Some(guard)))
        }

        /// A grace that may run out: the holder may or may not release the
        /// lock meanwhile, and the model explores both.
        pub(crate) fn try_lock_until(&self, _deadline: Instant) -> Option<MutexGuard<'_, T>> {
            self.try_lock().or_else(|| {
                loom::thread::yield_now();
                self.try_lock()
            })
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("the guard is only empty inside Condvar::wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("the guard is only empty inside Condvar::wait")
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("the guard is only empty inside Condvar::wait");
            guard.0 = Some(self.0.wait(inner).expect("a loom model panicked"));
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
