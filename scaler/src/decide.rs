//! The scaling decision: pure, no I/O, no clock. `decide(state, observation, now)` turns what
//! the sources and the fleet report into how many workers to launch or which to terminate.
//!
//! The policy is the one AWS documents for SQS-driven fleets: keep the *backlog per worker*
//! at a target, where the target is the acceptable latency times the rate one worker
//! drains messages at. It scales out at once (from zero as soon as work appears), counts
//! pending (booting) workers as capacity, and scales in only when the highest need seen
//! during a stabilization window is below the current size, and then only idle workers.

use std::collections::VecDeque;

/// Tuning of the backlog-per-worker policy. Times are in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Workers kept even when idle.
    pub min_workers: u32,
    /// Never more than this many workers (`MAX_INSTANCES`).
    pub max_workers: u32,
    /// How long a message may wait in the backlog: the target backlog per worker is
    /// `target_latency * rate per worker`.
    pub target_latency: f64,
    /// Messages per second one worker is assumed to drain before a rate has been measured.
    pub default_rate: f64,
    /// Scale-in happens only when the need stayed below the current size for this long.
    pub scale_in_window: f64,
    /// Most workers launched in one decision.
    pub max_step_up: u32,
    /// Most workers terminated in one decision.
    pub max_step_down: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_workers: 0,
            max_workers: 15,
            target_latency: 30.0,
            default_rate: 5.0,
            scale_in_window: 60.0,
            max_step_up: 10,
            max_step_down: 4,
        }
    }
}

/// Messages waiting in the request queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Ready to be received.
    pub visible: u64,
    /// Received by a worker and not yet deleted.
    pub in_flight: u64,
}

impl Backlog {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// Lifecycle of one fleet member, as the fleet reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Launched or starting, not yet taking work (counts as capacity).
    Pending,
    /// Taking work.
    Running,
    /// Being stopped or terminated (not capacity).
    Stopping,
    /// Stopped; may be started again by a fleet that prefers restarts (not capacity).
    Stopped,
}

/// One worker of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub state: MemberState,
    /// Whether it is holding no messages; `None` when the fleet cannot tell.
    pub idle: Option<bool>,
    /// When it was launched (seconds, same clock as `now`).
    pub launched_at: f64,
}

/// What the sources and the fleet report at one tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// `None` when the queue-depth source failed: the decision then holds the current size.
    pub backlog: Option<Backlog>,
    /// Messages per second the whole fleet completed recently, when a source reports it.
    pub rate: Option<f64>,
    pub members: Vec<Member>,
}

/// What to do at this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change.
    None,
    /// Launch (or start) this many workers.
    Launch(u32),
    /// Terminate these idle workers.
    Terminate(Vec<String>),
    /// Data is missing or unusable: keep the fleet as it is.
    Hold(&'static str),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::None => f.write_str("none"),
            Action::Launch(n) => write!(f, "launch:{n}"),
            Action::Terminate(ids) => write!(f, "terminate:{}", ids.len()),
            Action::Hold(why) => write!(f, "hold:{why}"),
        }
    }
}

/// One decision, with the counts it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The size the fleet should have.
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
    pub action: Action,
}

/// A scaling rule: the real policy, or a baseline to compare it with.
pub trait Decide {
    fn decide(&mut self, obs: &Observation, now: f64) -> Decision;
}

/// The backlog and the running and pending counts; without a backlog, the decision to
/// hold the fleet as it is (never scale on missing data).
fn observed(obs: &Observation) -> Result<(Backlog, u32, u32), Decision> {
    let (running, pending) = counts(&obs.members);
    match obs.backlog {
        Some(b) => Ok((b, running, pending)),
        None => Err(Decision {
            desired: running + pending,
            running,
            pending,
            action: Action::Hold("no queue depth"),
        }),
    }
}

fn counts(members: &[Member]) -> (u32, u32) {
    let running = members
        .iter()
        .filter(|m| m.state == MemberState::Running)
        .count() as u32;
    let pending = members
        .iter()
        .filter(|m| m.state == MemberState::Pending)
        .count() as u32;
    (running, pending)
}

/// Up to `n` members that may be terminated without losing work: idle running workers
/// first (newest first, so long-lived ones keep warm caches), then pending ones. A member
/// whose idleness is unknown counts as idle only when nothing at all is in flight.
fn pick_idle(members: &[Member], backlog: Backlog, n: u32) -> Vec<String> {
    let idle = |m: &Member| m.idle.unwrap_or(backlog.in_flight == 0);
    let mut running: Vec<&Member> = members
        .iter()
        .filter(|m| m.state == MemberState::Running && idle(m))
        .collect();
    running.sort_by(|a, b| b.launched_at.total_cmp(&a.launched_at));
    let pending = members.iter().filter(|m| m.state == MemberState::Pending);
    running
        .into_iter()
        .chain(pending)
        .take(n as usize)
        .map(|m| m.id.clone())
        .collect()
}

/// Scaling state carried between ticks: the measured rate per worker and the recent need.
#[derive(Debug, Clone)]
pub struct Scaler {
    pub policy: Policy,
    /// Messages per second per running worker (moving average of saturated measurements).
    rate_per_worker: f64,
    /// `(time, need)` over the stabilization window.
    recent: VecDeque<(f64, u32)>,
}

impl Scaler {
    pub fn new(policy: Policy) -> Self {
        Scaler {
            rate_per_worker: policy.default_rate.max(f64::MIN_POSITIVE),
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Messages per second one worker is currently believed to drain.
    pub fn rate_per_worker(&self) -> f64 {
        self.rate_per_worker
    }

    /// Workers needed for this backlog, within the bounds, ignoring the window.
    pub fn need(&self, backlog: Backlog) -> u32 {
        let p = &self.policy;
        let total = backlog.total();
        let need = if total == 0 {
            0
        } else {
            let per_worker = (self.rate_per_worker * p.target_latency).max(1.0);
            ((total as f64 / per_worker).ceil() as u32).max(1)
        };
        need.clamp(p.min_workers, p.max_workers.max(p.min_workers))
    }

    fn learn_rate(&mut self, obs: &Observation, backlog: Backlog, running: u32) {
        // Only a saturated fleet (work still waiting) shows what a worker can do.
        if let Some(rate) = obs.rate
            && running > 0
            && backlog.visible > 0
            && rate.is_finite()
            && rate > 0.0
        {
            let sample = rate / f64::from(running);
            self.rate_per_worker = 0.7 * self.rate_per_worker + 0.3 * sample;
        }
    }
}

impl Decide for Scaler {
    fn decide(&mut self, obs: &Observation, now: f64) -> Decision {
        let (backlog, running, pending) = match observed(obs) {
            Ok(v) => v,
            Err(hold) => return hold,
        };
        let capacity = running + pending;
        self.learn_rate(obs, backlog, running);
        let need = self.need(backlog);
        let window = self.policy.scale_in_window;
        self.recent.push_back((now, need));
        while self.recent.front().is_some_and(|&(t, _)| t < now - window) {
            self.recent.pop_front();
        }
        let window_need = self.recent.iter().map(|&(_, n)| n).max().unwrap_or(need);
        let max = self.policy.max_workers.max(self.policy.min_workers);

        if need > capacity {
            let n = (need - capacity).min(self.policy.max_step_up.max(1));
            return Decision {
                desired: need,
                running,
                pending,
                action: Action::Launch(n),
            };
        }
        // Above the bound (someone launched by hand): shed at once, no window.
        let target = if capacity > max { max } else { window_need };
        if target < capacity {
            let ids = pick_idle(
                &obs.members,
                backlog,
                (capacity - target).min(self.policy.max_step_down.max(1)),
            );
            let action = if ids.is_empty() {
                Action::Hold("no idle worker")
            } else {
                Action::Terminate(ids)
            };
            return Decision {
                desired: target,
                running,
                pending,
                action,
            };
        }
        Decision {
            desired: capacity,
            running,
            pending,
            action: Action::None,
        }
    }
}

/// The baseline: one worker per `per_worker` messages, launched and terminated at once
/// (what the original controller did). Used only to compare against in simulations.
#[derive(Debug, Clone)]
pub struct PerMessages {
    pub per_worker: u64,
    pub max_workers: u32,
}

impl Decide for PerMessages {
    fn decide(&mut self, obs: &Observation, _now: f64) -> Decision {
        let (backlog, running, pending) = match observed(obs) {
            Ok(v) => v,
            Err(hold) => return hold,
        };
        let capacity = running + pending;
        let desired =
            (backlog.total().div_ceil(self.per_worker.max(1)) as u32).min(self.max_workers);
        let action = if desired > capacity {
            Action::Launch(desired - capacity)
        } else if desired < capacity {
            let ids = pick_idle(&obs.members, backlog, capacity - desired);
            if ids.is_empty() {
                Action::None
            } else {
                Action::Terminate(ids)
            }
        } else {
            Action::None
        };
        Decision {
            desired,
            running,
            pending,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: usize, state: MemberState, idle: bool) -> Member {
        Member {
            id: format!("w{id}"),
            state,
            idle: Some(idle),
            launched_at: 0.0,
        }
    }

    fn obs(visible: u64, in_flight: u64, members: Vec<Member>) -> Observation {
        Observation {
            backlog: Some(Backlog { visible, in_flight }),
            rate: None,
            members,
        }
    }

    #[test]
    fn scales_from_zero_as_soon_as_work_appears() {
        let mut s = Scaler::new(Policy::default());
        let d = s.decide(&obs(1, 0, vec![]), 0.0);
        assert_eq!(d.action, Action::Launch(1));
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn pending_workers_count_as_capacity() {
        let mut s = Scaler::new(Policy::default());
        let members = vec![member(0, MemberState::Pending, true)];
        assert_eq!(s.decide(&obs(5, 0, members), 0.0).action, Action::None);
    }

    #[test]
    fn never_above_max_and_steps_are_bounded() {
        let policy = Policy {
            max_step_up: 4,
            ..Policy::default()
        };
        let mut s = Scaler::new(policy);
        let d = s.decide(&obs(1_000_000, 0, vec![]), 0.0);
        assert_eq!(d.desired, 15);
        assert_eq!(d.action, Action::Launch(4));
        let members: Vec<_> = (0..20)
            .map(|i| member(i, MemberState::Running, true))
            .collect();
        let d = s.decide(&obs(1_000_000, 0, members), 5.0);
        assert_eq!(d.desired, 15);
        assert_eq!(
            d.action,
            Action::Terminate(vec!["w0".into(), "w1".into(), "w2".into(), "w3".into()])
        );
    }

    #[test]
    fn holds_without_queue_depth() {
        let mut s = Scaler::new(Policy::default());
        let members: Vec<_> = (0..3)
            .map(|i| member(i, MemberState::Running, true))
            .collect();
        let o = Observation {
            backlog: None,
            rate: None,
            members,
        };
        let d = s.decide(&o, 100.0);
        assert_eq!(d.action, Action::Hold("no queue depth"));
        assert_eq!(d.desired, 3);
    }

    #[test]
    fn scale_in_waits_for_the_window_and_spares_busy_workers() {
        let mut s = Scaler::new(Policy::default());
        let busy = |i| member(i, MemberState::Running, false);
        let two = vec![busy(0), member(1, MemberState::Running, true)];
        // Need was 2 at t=0 (300 messages at 5/s x 30 s per worker).
        assert_eq!(
            s.decide(&obs(300, 0, two.clone()), 0.0).action,
            Action::None
        );
        // Backlog gone: within the window nothing is terminated.
        for t in [5.0, 30.0, 59.0] {
            assert_eq!(
                s.decide(&obs(0, 1, two.clone()), t).action,
                Action::None,
                "t={t}"
            );
        }
        // After it, only the idle worker goes.
        let d = s.decide(&obs(0, 1, two), 61.0);
        assert_eq!(d.action, Action::Terminate(vec!["w1".into()]));
        // If every worker is busy, it holds.
        let d = s.decide(&obs(0, 2, vec![busy(0), busy(1)]), 62.0);
        assert_eq!(d.action, Action::Hold("no idle worker"));
    }

    #[test]
    fn learns_the_rate_only_when_saturated() {
        let mut s = Scaler::new(Policy::default());
        let members: Vec<_> = (0..2)
            .map(|i| member(i, MemberState::Running, false))
            .collect();
        let mut o = obs(0, 2, members.clone());
        o.rate = Some(1.0);
        s.decide(&o, 0.0);
        assert_eq!(
            s.rate_per_worker(),
            5.0,
            "an idle-ish fleet says nothing of capacity"
        );
        let mut o = obs(100, 20, members);
        o.rate = Some(40.0);
        for t in 0..30 {
            s.decide(&o, f64::from(t));
        }
        assert!(
            (s.rate_per_worker() - 20.0).abs() < 0.1,
            "{}",
            s.rate_per_worker()
        );
    }

    #[test]
    fn baseline_follows_the_backlog_immediately() {
        let mut b = PerMessages {
            per_worker: 10,
            max_workers: 15,
        };
        assert_eq!(b.decide(&obs(25, 0, vec![]), 0.0).action, Action::Launch(3));
        let members: Vec<_> = (0..3)
            .map(|i| member(i, MemberState::Running, true))
            .collect();
        assert_eq!(
            b.decide(&obs(0, 0, members), 5.0).action.to_string(),
            "terminate:3"
        );
    }
}
