// The code of the `timer` test module, shared by its two versions.

use std::ffi::c_void;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use hotswap_module::__private::abi::{
    CallStatus, DescriptorHeader, ModuleBuf, ModuleDescriptor, RawBytes, RawHost, RawPrevious, RawStr,
};
use hotswap_module::__private::descriptor;
use hotswap_module::{Context, Module, ModuleError, Previous, Reply};

#[derive(Debug, Default)]
pub struct Timer {
    /// `TAG UNIX_MS VERSION` per fire, oldest first.
    fired: Vec<String>,
    /// What the host answered to a timer asked for in `init`.
    init_refusal: String,
    /// The same, in the last `snapshot` (which only reads the state, hence the lock).
    snapshot_refusal: Mutex<String>,
}

impl Module for Timer {
    const NAME: &'static str = "timer";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let Some(previous) = previous else { return Ok(Timer::default()) };
        let text = std::str::from_utf8(previous.state()).map_err(|_| "a timer snapshot is text")?;
        Ok(Timer { fired: text.lines().map(str::to_owned).collect(), ..Timer::default() })
    }

    fn handle(&mut self, _method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        Err("timer answers through Module::call".into())
    }

    fn call(
        &mut self,
        ctx: &mut Context,
        method: &str,
        payload: &[u8],
        reply: &mut Reply,
    ) -> Result<(), ModuleError> {
        let text = std::str::from_utf8(payload).map_err(|_| "the payload is text")?;
        match method {
            "remind" => remind(ctx, text),
            "remind_then_fail" => {
                remind(ctx, text)?;
                Err("failed after setting the timer".into())
            }
            "remind_then_panic" => {
                remind(ctx, text)?;
                panic!("panicked after setting the timer");
            }
            "schedule" => {
                let mut parts = text.splitn(3, ' ');
                let (delay, method) = (
                    parts.next().unwrap_or(""),
                    parts.next().ok_or("schedule takes `DELAY_MS METHOD [PAYLOAD]`")?,
                );
                let delay: u64 = delay.parse().map_err(|_| "schedule takes `DELAY_MS METHOD [PAYLOAD]`")?;
                ctx.after(Duration::from_millis(delay), method, parts.next().unwrap_or(""))
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(
                    text.parse().map_err(|_| "sleep takes milliseconds")?,
                ));
                Ok(())
            }
            "fire" => {
                let at = ctx.now().wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                self.fired.push(format!("{text} {at} {}", Self::VERSION));
                Ok(())
            }
            "fired" => {
                self.fired.iter().for_each(|line| reply.push(format!("{line}\n").as_bytes()));
                Ok(())
            }
            "refusals" => {
                let snapshot = self.snapshot_refusal.lock().unwrap_or_else(|e| e.into_inner()).clone();
                reply.push(format!("init: {}\nsnapshot: {snapshot}\n", self.init_refusal).as_bytes());
                Ok(())
            }
            "log" => {
                ctx.log(format!("ctx.log says {text}"));
                log::info!("log::info! says {text}");
                #[cfg(feature = "tracing")]
                tracing::info!("tracing::info! says {text}");
                Ok(())
            }
            other => Err(ModuleError::new(format!("timer has no method {other:?}"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(self.fired.iter().map(|line| format!("{line}\n")).collect::<String>().into_bytes())
    }
}

/// `DELAY_MS TAG`: a timer that calls `fire` with TAG.
fn remind(ctx: &mut Context, text: &str) -> Result<(), ModuleError> {
    let (delay, tag) = text.split_once(' ').ok_or("remind takes `DELAY_MS TAG`")?;
    let delay: u64 = delay.parse().map_err(|_| "remind takes `DELAY_MS TAG`")?;
    ctx.after(Duration::from_millis(delay), "fire", tag)
}

/// Asks the host for a timer straight through its table, as `ctx.after`
/// does, and says what it answered.
///
/// # Safety
/// `host` is what the host passed to the entry point in progress.
unsafe fn try_a_timer(host: *const RawHost) -> String {
    // SAFETY: the caller's guarantee; the host's table is static.
    let Some(after) = (unsafe { host.as_ref() }).and_then(|host| unsafe { host.api.as_ref() }?.after) else {
        return "the host has no `after`".into();
    };
    let mut reason = RawStr::new("");
    // SAFETY: a function of the host's table with the call pointer it lent;
    // the strings and `reason` outlive the call.
    let status = unsafe { after((*host).call, 0, RawStr::new("fire"), RawBytes::new(b"x"), &mut reason) };
    if status == CallStatus::OK {
        return "accepted".into();
    }
    // SAFETY: the host keeps its reason alive until the entry point returns.
    format!("refused: {}", unsafe { reason.to_str() }.unwrap_or("(not UTF-8)"))
}

/// The SDK's descriptor, whose `init` and `snapshot` the wrappers below call.
const SDK: ModuleDescriptor = descriptor::<Timer>(cfg!(panic = "unwind"));

unsafe extern "C" fn init_trying_a_timer(
    host: *const RawHost,
    previous: *const RawPrevious,
    state_out: *mut *mut c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: `host` is what the host passed to this entry point.
    let answer = unsafe { try_a_timer(host) };
    let init = SDK.init.expect("the SDK's descriptor has init");
    // SAFETY: the host's arguments, passed on unchanged.
    let status = unsafe { init(host, previous, state_out, out) };
    if status == CallStatus::OK {
        // SAFETY: on success the SDK's init wrote a `Box<Timer>` pointer to
        // `state_out`, which nothing else uses yet.
        unsafe { (*(*state_out).cast::<Timer>()).init_refusal = answer };
    }
    status
}

unsafe extern "C" fn snapshot_trying_a_timer(
    host: *const RawHost,
    state: *const c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: `host` is what the host passed to this entry point.
    let answer = unsafe { try_a_timer(host) };
    // SAFETY: `state` is a `Timer` from our init; the host holds its lock.
    let timer = unsafe { &*state.cast::<Timer>() };
    *timer.snapshot_refusal.lock().unwrap_or_else(|e| e.into_inner()) = answer;
    let snapshot = SDK.snapshot.expect("the SDK's descriptor has snapshot");
    // SAFETY: the host's arguments, passed on unchanged.
    unsafe { snapshot(host, state, out) }
}

static DESCRIPTOR: ModuleDescriptor =
    ModuleDescriptor { init: Some(init_trying_a_timer), snapshot: Some(snapshot_trying_a_timer), ..SDK };

/// The descriptor entry point, as any hotswap module exports it.
#[unsafe(no_mangle)]
pub extern "C" fn hotswap_module_descriptor() -> *const DescriptorHeader {
    // The header is the first field of the #[repr(C)] descriptor.
    core::ptr::from_ref(&DESCRIPTOR).cast()
}
