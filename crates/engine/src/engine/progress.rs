//! What a swap under way is doing, for status: set by the swap, read by
//! [`Engine::status`](crate::Engine::status). Never touched by calls.

use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use super::ModuleEntry;
use crate::status::SwapInProgress;

/// The swap of one module under way, as the swap itself records it. Lives
/// in a leaf lock of its module (see the locking order in `mod.rs`).
pub(super) struct SwapProgress {
    to_version: String,
    dry_run: bool,
    started: SystemTime,
    started_at: Instant,
    waiting_for: Option<Box<str>>,
}

/// The module's slot for its swap under way.
#[derive(Default)]
pub(super) struct ProgressSlot(Mutex<Option<SwapProgress>>);

impl ProgressSlot {
    /// Shows a swap (or a dry run of one) to `to_version`, started at
    /// `started_at`, until the returned guard drops (it ended, whether it
    /// succeeded or not).
    pub(super) fn show(&self, to_version: &str, dry_run: bool, started_at: Instant) -> ShownSwap<'_> {
        let started = SystemTime::now() - started_at.elapsed();
        let to_version = to_version.to_owned();
        *self.0.lock() = Some(SwapProgress { to_version, dry_run, started, started_at, waiting_for: None });
        ShownSwap { slot: self }
    }

    /// Records the instance the swap waits for now (`None`: it waits for no
    /// single instance). Does nothing when no swap is shown (an adopt).
    pub(super) fn waiting_for(&self, key: Option<&str>) {
        if let Some(progress) = self.0.lock().as_mut() {
            progress.waiting_for = key.map(Box::from);
        }
    }

    /// The swap under way now, as status reports it.
    pub(super) fn now(&self) -> Option<SwapInProgress> {
        let progress = self.0.lock();
        let progress = progress.as_ref()?;
        Some(SwapInProgress {
            to_version: progress.to_version.clone(),
            dry_run: progress.dry_run,
            started: progress.started,
            elapsed: progress.started_at.elapsed(),
            waiting_for: progress.waiting_for.as_deref().map(str::to_owned),
        })
    }
}

/// A swap shown in its module's status; dropping it clears the status.
pub(super) struct ShownSwap<'a> {
    slot: &'a ProgressSlot,
}

impl Drop for ShownSwap<'_> {
    fn drop(&mut self) {
        *self.slot.0.lock() = None;
    }
}

impl ModuleEntry {
    /// [`ProgressSlot::show`] for this module.
    pub(super) fn show_swap(&self, to_version: &str, started_at: Instant) -> ShownSwap<'_> {
        self.swap_progress.show(to_version, false, started_at)
    }

    /// [`ProgressSlot::show`] for a dry run of this module.
    pub(super) fn show_dry_run(&self, to_version: &str, started_at: Instant) -> ShownSwap<'_> {
        self.swap_progress.show(to_version, true, started_at)
    }
}
