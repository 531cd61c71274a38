//! What a run does while the clients load the server, and what happened.

use crate::options::Plan;

/// What the plan does at a moment.
#[derive(Clone, Debug)]
pub enum Action {
    Upgrade,
    Swap(u8),
    Resize(usize),
}

/// What happened: times in seconds since the start.
#[derive(Clone, Debug, Default)]
pub struct Event {
    pub start_s: f64,
    pub end_s: f64,
    pub kind: String,
    pub ok: bool,
    pub old_pid: u32,
    pub new_pid: u32,
    pub took_ms: f64,
    pub startup_ms: f64,
    pub frozen_ms: f64,
    pub state_bytes: u64,
    pub detail: String,
}

/// The plan's actions and when they start, in seconds.
pub fn schedule(plan: Plan) -> Vec<(f64, Action)> {
    match plan {
        Plan::Load => (0..10)
            .flat_map(|i| {
                let at = 4.0 + 1.5 * f64::from(i);
                [(at, Action::Upgrade), (at + 0.6, Action::Swap(2)), (at + 0.9, Action::Swap(1))]
            })
            .collect(),
        Plan::State => {
            let mut plan = vec![(1.0, Action::Resize(1 << 20))];
            plan.extend((0..5).map(|i| (2.0 + 1.5 * f64::from(i), Action::Upgrade)));
            plan.push((9.5, Action::Resize(64 << 20)));
            plan.extend((0..5).map(|i| (10.5 + 1.5 * f64::from(i), Action::Upgrade)));
            plan
        }
        Plan::Steady => Vec::new(),
    }
}
