use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Settings of an [`Engine`](crate::Engine).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where private copies of module files are made (a fresh subfolder,
    /// mode 0700, removed when the engine is dropped). Default: the system
    /// temporary folder.
    pub private_dir: Option<PathBuf>,
    /// How long a swap waits for busy instances to finish their current
    /// call before it gives up (and the old version keeps serving).
    pub swap_timeout: Duration,
    /// How many retired versions of one module may stay mapped (their code
    /// could not be unloaded) before further swaps of it are refused.
    pub max_resident_retired: usize,
    /// The most timers (`ctx.after`) one instance may have pending; past it
    /// `ctx.after` is refused with a reason naming this limit, so no client
    /// can make the engine hold timers without bound. Timers restored from
    /// a saved state are never refused for it. Default: 1024.
    pub max_timers_per_instance: usize,
    /// Called when a timer is set that is due earlier than every timer
    /// pending before it (or the first one), with its due time: a host that
    /// sleeps until [`Engine::next_timer_due`](crate::Engine::next_timer_due)
    /// wakes up to sleep less. See [`TimerWake`].
    pub on_earlier_timer: Option<TimerWake>,
    /// Where the messages modules push to sessions (`ctx.send`,
    /// `broadcast`, `close`) go: called once per call, hook, tick or timer
    /// that pushed anything, in the order the instance ran them. Without
    /// one, pushes are dropped. See [`PushSink`].
    pub on_push: Option<PushSink>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            private_dir: None,
            swap_timeout: Duration::from_secs(5),
            max_resident_retired: 8,
            max_timers_per_instance: 1024,
            on_earlier_timer: None,
            on_push: None,
        }
    }
}

/// A host's wake-up for [`EngineConfig::on_earlier_timer`].
///
/// It runs on the thread of the call that set the timer, while that call
/// still holds its instance: it must be short and must not call the engine
/// (wake a task or a thread, e.g. `tokio::sync::Notify::notify_one`).
#[derive(Clone)]
pub struct TimerWake(Arc<dyn Fn(SystemTime) + Send + Sync>);

impl TimerWake {
    pub fn new(wake: impl Fn(SystemTime) + Send + Sync + 'static) -> Self {
        TimerWake(Arc::new(wake))
    }

    pub(crate) fn wake(&self, due: SystemTime) {
        (self.0)(due);
    }
}

impl std::fmt::Debug for TimerWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerWake(..)")
    }
}

/// A host's delivery of pushes, for [`EngineConfig::on_push`]: called with
/// the module, the instance and what one call pushed, in order.
///
/// It runs on the thread of the call, after the module returned and while
/// the call still holds its instance — that is what keeps the pushes of one
/// instance in the order its calls ran. So it must only enqueue (into
/// bounded per-session queues, say) and never block or call the engine.
///
/// For a join ([`Engine::session_join`](crate::Engine::session_join)) it is
/// called even when `on_join` pushed nothing, on the thread that called
/// `session_join`: that is the moment the session becomes a member of its
/// instance. Every delivery before it came from a call that ran before the
/// join, so a host that starts routing broadcasts to the session there (and
/// routes this delivery's own to it too) never shows it what the instance
/// broadcast before it joined — nor, when `on_join` refuses, anything but
/// what `on_join` pushed.
#[derive(Clone)]
pub struct PushSink(Arc<DeliverPushes>);

/// A sink's function: module, instance, the pushes of one call.
type DeliverPushes = dyn Fn(&str, &str, Vec<crate::Push>) + Send + Sync;

impl PushSink {
    pub fn new(deliver: impl Fn(&str, &str, Vec<crate::Push>) + Send + Sync + 'static) -> Self {
        PushSink(Arc::new(deliver))
    }

    pub(crate) fn deliver(&self, module: &str, instance: &str, pushes: Vec<crate::Push>) {
        (self.0)(module, instance, pushes);
    }
}

impl std::fmt::Debug for PushSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushSink(..)")
    }
}
