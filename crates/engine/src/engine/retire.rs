//! Retiring code: unloading a module, closing a replaced version and
//! checking whether its mapping really left memory.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Books, Engine, ModuleEntry, Slot};
use crate::code::Code;
use crate::error::SwapError;
use crate::maps;
use crate::status::RetiredVersion;

impl Engine {
    /// Removes `module`: waits for its running calls, drops every instance's
    /// state and unloads its code. Take a [`snapshot`](Self::snapshot) first
    /// to keep the state. Calls that arrive afterwards get `UnknownModule`.
    pub fn unload(&self, module: &str) -> Result<(), SwapError> {
        let _swap = self.begin_swap(module)?;
        let entry = self.entry(module).ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        self.publish_modules(|modules| {
            modules.remove(module);
        });
        let old = entry.shut_down();
        let mut books = entry.books.lock();
        if let Some(old) = old {
            let private_copy = old.private_copy.clone();
            retire(&mut books, old);
            let _ = std::fs::remove_file(private_copy);
        }
        if let Some((_, private_copy)) = books.rollback.take() {
            let _ = std::fs::remove_file(private_copy);
        }
        tracing::debug!(module, "unloaded");
        Ok(())
    }
}

impl ModuleEntry {
    /// Removes every instance (dropping its state) and the current version,
    /// which it returns for the caller to retire.
    pub(super) fn shut_down(&self) -> Option<Arc<Code>> {
        let old = self.current.lock().take();
        for instance in self.instances_now() {
            let mut slot = instance.slot.lock();
            self.timers.drop_all(&instance);
            let removed = std::mem::replace(&mut *slot, Slot::Removed);
            drop(slot);
            drop(removed);
        }
        self.instances.clear();
        self.instance_count.store(0, Relaxed);
        old
    }
}

/// Closes a replaced version and records whether its code left memory.
/// Returns `Some(true)` when it did, `Some(false)` when it is still mapped.
pub(super) fn retire(books: &mut Books, old: Arc<Code>) -> Option<bool> {
    let code = match Arc::try_unwrap(old) {
        Ok(code) => code,
        Err(_still_shared) => {
            // Not reached: every slot and `current` let go of the version
            // before this point. Should it happen, the last holder closes it.
            tracing::error!("a replaced module version is still referenced; it will close when released");
            return None;
        }
    };
    let (info, private_copy) = (code.info.clone(), code.private_copy.clone());
    if let Err(message) = code.close() {
        tracing::warn!(module = %info.name, version = %info.version, "dlclose failed: {message}");
    }
    let mapped = maps::read().map(|maps| maps::is_mapped(&maps, &private_copy));
    match mapped {
        Some(true) => {
            tracing::warn!(
                module = %info.name,
                version = %info.version,
                "the replaced version is still mapped after dlclose (it registered thread-local destructors \
                 on threads that are still running); it counts against max_resident_retired"
            );
            books.resident_retired.push(RetiredVersion {
                version: info.version,
                file: info.file,
                private_copy,
            });
        }
        Some(false) => books.reclaimed += 1,
        None => {}
    }
    mapped.map(|mapped| !mapped)
}

/// Forgets retired versions that have left memory since they were closed.
pub(super) fn refresh_resident(books: &mut Books, maps: &str) {
    let mapped = maps::mapped_files(maps);
    let before = books.resident_retired.len();
    books.resident_retired.retain(|retired| mapped.contains(retired.private_copy.as_path()));
    books.reclaimed += (before - books.resident_retired.len()) as u64;
}
