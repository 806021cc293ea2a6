//! The queue seam: receive up to N messages with a long-poll wait, acknowledge (delete),
//! change visibility (heartbeat or release), send, and depth. Implementations: an
//! in-process queue with SQS's visibility-timeout and redrive semantics (the embedded
//! default) and SQS (`crate::aws::SqsQueue`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::SeamError;

/// SQS's limit on messages per receive, send batch and delete batch.
pub const MAX_BATCH: usize = 10;

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    /// Handle for ack/visibility calls, valid for this delivery.
    pub receipt: String,
    pub body: String,
    /// How many times the message has been delivered, this time included.
    pub receive_count: u32,
}

/// Approximate number of messages waiting and being processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Receives up to `max` (≤ 10) messages, waiting up to `wait` for the first one.
    /// Each is hidden from other receivers for the queue's visibility timeout.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, SeamError>;
    /// Sends messages (any number; sent in batches of 10).
    async fn send(&self, bodies: Vec<String>) -> Result<(), SeamError>;
    /// Deletes delivered messages (any number; deleted in batches of 10).
    async fn ack(&self, receipts: Vec<String>) -> Result<(), SeamError>;
    /// Sets the remaining visibility timeout of delivered messages: a heartbeat for
    /// long work, or zero to hand them back at once.
    async fn set_visibility(
        &self,
        receipts: Vec<String>,
        timeout: Duration,
    ) -> Result<(), SeamError>;
    async fn depth(&self) -> Result<Depth, SeamError>;
}

struct Message {
    id: String,
    body: String,
    receive_count: u32,
}

struct InFlight {
    msg: Message,
    until: Instant,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Message>,
    in_flight: HashMap<String, InFlight>,
    next_id: u64,
}

/// An in-process queue with SQS semantics: at-least-once delivery, a visibility
/// timeout after which unacknowledged messages are delivered again, receive counts, and
/// an optional redrive policy moving a message to a dead-letter queue when it has been
/// received more than `max_receive` times.
pub struct LocalQueue {
    name: String,
    visibility: Duration,
    redrive: Option<(Arc<LocalQueue>, u32)>,
    state: Mutex<State>,
    notify: Notify,
}

impl LocalQueue {
    pub fn new(name: impl Into<String>, visibility: Duration) -> Self {
        Self {
            name: name.into(),
            visibility,
            redrive: None,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    /// Moves messages received more than `max_receive` times to `dlq` instead of
    /// delivering them again (SQS's `RedrivePolicy.maxReceiveCount`).
    pub fn with_redrive(mut self, dlq: Arc<LocalQueue>, max_receive: u32) -> Self {
        self.redrive = Some((dlq, max_receive.max(1)));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is a
        // single move), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns expired in-flight messages to the ready list; the earliest remaining
    /// deadline.
    fn expire(state: &mut State, now: Instant) -> Option<Instant> {
        let expired: Vec<String> = state
            .in_flight
            .iter()
            .filter(|(_, f)| f.until <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in expired {
            if let Some(f) = state.in_flight.remove(&r) {
                state.ready.push_back(f.msg);
            }
        }
        state.in_flight.values().map(|f| f.until).min()
    }

    fn push(&self, body: String) {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("{}-{}", self.name, st.next_id);
        st.ready.push_back(Message {
            id,
            body,
            receive_count: 0,
        });
        drop(st);
        self.notify.notify_waiters();
    }

    /// Messages currently waiting (not in flight), for tests and inspection.
    pub fn peek_bodies(&self) -> Vec<String> {
        let mut st = self.lock();
        Self::expire(&mut st, Instant::now());
        st.ready.iter().map(|m| m.body.clone()).collect()
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, SeamError> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut dead = Vec::new();
            let (out, next_expiry) = {
                let now = Instant::now();
                let mut st = self.lock();
                Self::expire(&mut st, now);
                let mut out = Vec::new();
                while out.len() < max {
                    let Some(mut msg) = st.ready.pop_front() else {
                        break;
                    };
                    if let Some((_, max_receive)) = &self.redrive
                        && msg.receive_count >= *max_receive
                    {
                        dead.push(msg.body);
                        continue;
                    }
                    msg.receive_count += 1;
                    st.next_id += 1;
                    let receipt = format!("{}#{}", msg.id, st.next_id);
                    out.push(Received {
                        message_id: msg.id.clone(),
                        receipt: receipt.clone(),
                        body: msg.body.clone(),
                        receive_count: msg.receive_count,
                    });
                    st.in_flight.insert(
                        receipt,
                        InFlight {
                            msg,
                            until: now + self.visibility,
                        },
                    );
                }
                let next = st.in_flight.values().map(|f| f.until).min();
                (out, next)
            };
            if let Some((dlq, _)) = &self.redrive {
                for body in dead {
                    dlq.push(body);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let wake = next_expiry.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn send(&self, bodies: Vec<String>) -> Result<(), SeamError> {
        for b in bodies {
            self.push(b);
        }
        Ok(())
    }

    async fn ack(&self, receipts: Vec<String>) -> Result<(), SeamError> {
        let mut st = self.lock();
        for r in receipts {
            // A stale receipt (the message was delivered again since) deletes nothing;
            // the newer delivery will be answered idempotently.
            st.in_flight.remove(&r);
        }
        Ok(())
    }

    async fn set_visibility(
        &self,
        receipts: Vec<String>,
        timeout: Duration,
    ) -> Result<(), SeamError> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut released = false;
        for r in receipts {
            if timeout.is_zero() {
                if let Some(f) = st.in_flight.remove(&r) {
                    st.ready.push_back(f.msg);
                    released = true;
                }
            } else if let Some(f) = st.in_flight.get_mut(&r) {
                f.until = now + timeout;
            }
        }
        drop(st);
        if released {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, SeamError> {
        let mut st = self.lock();
        Self::expire(&mut st, Instant::now());
        Ok(Depth {
            visible: st.ready.len() as u64,
            in_flight: st.in_flight.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What every queue does is tested once for all, in seams/tests/conformance.rs; here
    // what this one does beyond: its clock pauses with tokio's (long timeouts in no time),
    // stale receipts.

    #[tokio::test(start_paused = true)]
    async fn timeouts_follow_the_paused_clock_and_a_stale_receipt_acknowledges_nothing() {
        let dlq = Arc::new(LocalQueue::new("dlq", Duration::from_secs(30)));
        let q = LocalQueue::new("req", Duration::from_secs(30)).with_redrive(dlq.clone(), 2);
        q.send(vec!["a".into(), "b".into()]).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2);
        q.ack(vec![got[0].receipt.clone()]).await.unwrap();
        // Nothing visible until the second message's timeout passes.
        assert!(
            q.receive(10, Duration::from_secs(5))
                .await
                .unwrap()
                .is_empty()
        );
        let again = q.receive(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body, "b");
        assert_eq!(again[0].receive_count, 2);
        // Acking with the first delivery's receipt is stale: the message stays.
        q.ack(vec![got[1].receipt.clone()]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().in_flight, 1);
        // Released at once; the third receive exceeds max_receive → dead-lettered.
        q.set_visibility(vec![again[0].receipt.clone()], Duration::ZERO)
            .await
            .unwrap();
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(dlq.peek_bodies(), vec!["b".to_string()]);
        assert_eq!(q.depth().await.unwrap(), Depth::default());
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_wakes_on_send_and_heartbeat_extends() {
        let q = Arc::new(LocalQueue::new("req", Duration::from_secs(10)));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.receive(1, Duration::from_secs(20)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.send(vec!["x".into()]).await.unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        tokio::time::sleep(Duration::from_secs(8)).await;
        q.set_visibility(vec![got[0].receipt.clone()], Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(q.receive(1, Duration::ZERO).await.unwrap().len(), 1);
    }
}
