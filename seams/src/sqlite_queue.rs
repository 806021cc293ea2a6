//! A durable queue for the embedded default: the same SQS semantics as [`LocalQueue`]
//! (visibility timeout, receive counts, redrive to a dead-letter queue, batch receive and
//! ack), on SQLite under `--data` (WAL mode), so a `kill -9` loses nothing accepted.
//!
//! Every `send` is one committed transaction before it returns: an upload is queued
//! durably before it is answered. Several named queues share one database file. When a
//! database is opened, messages that were in flight (their process is gone: one process
//! owns the file, see [`SqliteQueues::open`]) become visible again at once, keeping their
//! receive counts.
//!
//! [`LocalQueue`]: crate::LocalQueue

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::SeamError;
use crate::queue::{Depth, MAX_BATCH, Queue, Received};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn db_err(e: rusqlite::Error) -> SeamError {
    SeamError::transient(format!("queue database: {e}"))
}

/// The database holding every queue of one process, with an in-process wake-up for long
/// polls.
struct Db {
    conn: Mutex<Connection>,
    notify: Notify,
}

impl Db {
    /// Runs `f` on the connection off the async threads.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SeamError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn).map_err(db_err)
        })
        .await
        .map_err(|e| SeamError::transient(format!("queue task failed: {e}")))?
    }
}

/// Opens the queue database under a data directory and hands out its queues.
pub struct SqliteQueues {
    db: Arc<Db>,
}

impl SqliteQueues {
    /// Opens (creating) `path`. One process at a time may own the file: opening takes
    /// SQLite's exclusive lock for the connection's lifetime, so a second `facerec up` on
    /// the same `--data` fails with a clear error instead of sharing the queue.
    pub fn open(path: &Path) -> Result<Self, SeamError> {
        let conn = Connection::open(path).map_err(|e| {
            SeamError::permanent(format!("opening the queue {}: {e}", path.display()))
        })?;
        let setup = || -> rusqlite::Result<()> {
            // WAL: a commit is one append; NORMAL sync survives a killed process (the
            // WAL is in the OS), FULL would also survive power loss at a cost per commit.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    queue TEXT NOT NULL,
                    body TEXT NOT NULL,
                    receive_count INTEGER NOT NULL DEFAULT 0,
                    visible_at INTEGER NOT NULL,
                    receipt TEXT UNIQUE
                );
                CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, seq);",
            )?;
            // Take the exclusive lock now (a write), and recover: whatever was in flight
            // belonged to a process that is gone.
            conn.execute(
                "UPDATE messages SET visible_at = 0, receipt = NULL WHERE receipt IS NOT NULL",
                [],
            )?;
            Ok(())
        };
        setup().map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    || f.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                SeamError::permanent(format!(
                    "the queue {} is in use by another process (one `facerec up` per --data)",
                    path.display()
                ))
            }
            e => SeamError::permanent(format!("the queue {}: {e}", path.display())),
        })?;
        Ok(Self {
            db: Arc::new(Db {
                conn: Mutex::new(conn),
                notify: Notify::new(),
            }),
        })
    }

    /// The queue `name`, hiding received messages for `visibility`.
    pub fn queue(&self, name: &str, visibility: Duration) -> SqliteQueue {
        SqliteQueue {
            db: self.db.clone(),
            name: name.to_string(),
            visibility,
            redrive: None,
        }
    }
}

/// One named queue of a [`SqliteQueues`] database.
pub struct SqliteQueue {
    db: Arc<Db>,
    name: String,
    visibility: Duration,
    /// Dead-letter queue name and the receive count past which a message moves there.
    redrive: Option<(String, u32)>,
}

impl SqliteQueue {
    /// Moves messages received more than `max_receive` times to the queue `dlq` of the
    /// same database instead of delivering them again (SQS's redrive policy).
    pub fn with_redrive(mut self, dlq: &str, max_receive: u32) -> Self {
        self.redrive = Some((dlq.to_string(), max_receive.max(1)));
        self
    }

    /// Bodies of the messages waiting (not in flight), oldest first: for tests and
    /// inspection.
    pub async fn peek_bodies(&self) -> Result<Vec<String>, SeamError> {
        let name = self.name.clone();
        self.db
            .run(move |c| {
                let mut st = c.prepare(
                    "SELECT body FROM messages WHERE queue = ?1 AND visible_at <= ?2 ORDER BY seq",
                )?;
                let rows = st.query_map(params![name, now_ms()], |r| r.get(0))?;
                rows.collect()
            })
            .await
    }

    /// One receive attempt: up to `max` visible messages, and the time (ms) the next
    /// hidden one becomes visible.
    async fn take(&self, max: usize) -> Result<(Vec<Received>, Option<i64>), SeamError> {
        let (name, redrive) = (self.name.clone(), self.redrive.clone());
        let visibility = self.visibility.as_millis() as i64;
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                let now = now_ms();
                let mut out = Vec::new();
                {
                    let mut pick = tx.prepare(
                        "SELECT seq, body, receive_count FROM messages
                         WHERE queue = ?1 AND visible_at <= ?2 ORDER BY seq LIMIT ?3",
                    )?;
                    let rows: Vec<(i64, String, u32)> = pick
                        .query_map(params![name, now, (max * 2) as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    for (seq, body, count) in rows {
                        if out.len() == max {
                            break;
                        }
                        if let Some((dlq, max_receive)) = &redrive
                            && count >= *max_receive
                        {
                            tx.execute(
                                "UPDATE messages SET queue = ?1, receive_count = 0,
                                 visible_at = 0, receipt = NULL WHERE seq = ?2",
                                params![dlq, seq],
                            )?;
                            continue;
                        }
                        let receipt = format!("{name}-{seq}#{}", uuid::Uuid::new_v4());
                        tx.execute(
                            "UPDATE messages SET receive_count = receive_count + 1,
                             visible_at = ?1, receipt = ?2 WHERE seq = ?3",
                            params![now + visibility, receipt, seq],
                        )?;
                        out.push(Received {
                            message_id: format!("{name}-{seq}"),
                            receipt,
                            body,
                            receive_count: count + 1,
                        });
                    }
                }
                let next: Option<i64> = tx
                    .query_row(
                        "SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND visible_at > ?2",
                        params![name, now],
                        |r| r.get(0),
                    )
                    .optional()?
                    .flatten();
                tx.commit()?;
                Ok((out, next))
            })
            .await
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, SeamError> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.db.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (out, next) = self.take(max).await?;
            if !out.is_empty() {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let wake = next.map_or(deadline, |at| {
                let ms = (at - now_ms()).max(1) as u64;
                (now + Duration::from_millis(ms)).min(deadline)
            });
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn send(&self, bodies: Vec<String>) -> Result<(), SeamError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let name = self.name.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                {
                    let mut ins = tx.prepare(
                        "INSERT INTO messages (queue, body, visible_at) VALUES (?1, ?2, 0)",
                    )?;
                    for b in &bodies {
                        ins.execute(params![name, b])?;
                    }
                }
                tx.commit()
            })
            .await?;
        self.db.notify.notify_waiters();
        Ok(())
    }

    async fn ack(&self, receipts: Vec<String>) -> Result<(), SeamError> {
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                {
                    // A stale receipt (delivered again since) deletes nothing.
                    let mut del = tx.prepare("DELETE FROM messages WHERE receipt = ?1")?;
                    for r in &receipts {
                        del.execute(params![r])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn set_visibility(
        &self,
        receipts: Vec<String>,
        timeout: Duration,
    ) -> Result<(), SeamError> {
        let release = timeout.is_zero();
        let ms = timeout.as_millis() as i64;
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                {
                    let mut upd = tx.prepare(if release {
                        "UPDATE messages SET visible_at = 0, receipt = NULL WHERE receipt = ?1"
                    } else {
                        "UPDATE messages SET visible_at = ?2 WHERE receipt = ?1"
                    })?;
                    let until = now_ms() + ms;
                    for r in &receipts {
                        if release {
                            upd.execute(params![r])?;
                        } else {
                            upd.execute(params![r, until])?;
                        }
                    }
                }
                tx.commit()
            })
            .await?;
        if release {
            self.db.notify.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, SeamError> {
        let name = self.name.clone();
        self.db
            .run(move |c| {
                c.query_row(
                    "SELECT COALESCE(SUM(visible_at <= ?2), 0), COALESCE(SUM(visible_at > ?2), 0)
                     FROM messages WHERE queue = ?1",
                    params![name, now_ms()],
                    |r| {
                        Ok(Depth {
                            visible: r.get::<_, i64>(0)? as u64,
                            in_flight: r.get::<_, i64>(1)? as u64,
                        })
                    },
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeamErrorKind;

    // What every queue does is tested once for all, in seams/tests/conformance.rs; here
    // what this one does beyond: delivery in order, stale receipts, a reopened database.

    #[tokio::test]
    async fn delivers_in_order_and_a_stale_receipt_acknowledges_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteQueues::open(&dir.path().join("q.db")).unwrap();
        let dlq = db.queue("dlq", Duration::from_secs(30));
        let q = db
            .queue("req", Duration::from_millis(300))
            .with_redrive("dlq", 2);
        q.send(vec!["a".into(), "b".into()]).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        q.ack(vec![got[0].receipt.clone()]).await.unwrap();
        let again = q.receive(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!((again[0].body.as_str(), again[0].receive_count), ("b", 2));
        // The first delivery's receipt is stale.
        q.ack(vec![got[1].receipt.clone()]).await.unwrap();
        assert_eq!(q.depth().await.unwrap().in_flight, 1);
        q.set_visibility(vec![again[0].receipt.clone()], Duration::ZERO)
            .await
            .unwrap();
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(dlq.peek_bodies().await.unwrap(), ["b"]);
    }

    #[tokio::test]
    async fn survives_reopening_and_recovers_what_was_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let db = SqliteQueues::open(&path).unwrap();
            let q = db.queue("req", Duration::from_secs(300));
            q.send(vec!["a".into(), "b".into(), "c".into()])
                .await
                .unwrap();
            let got = q.receive(2, Duration::ZERO).await.unwrap();
            q.ack(vec![got[0].receipt.clone()]).await.unwrap();
            // "b" in flight, "c" waiting, when the process goes away.
        }
        let db = SqliteQueues::open(&path).unwrap();
        let q = db.queue("req", Duration::from_secs(300));
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        let bodies: Vec<(&str, u32)> = got
            .iter()
            .map(|m| (m.body.as_str(), m.receive_count))
            .collect();
        assert_eq!(bodies, [("b", 2), ("c", 1)]);
    }

    #[tokio::test]
    async fn one_process_per_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let _first = SqliteQueues::open(&path).unwrap();
        let second = SqliteQueues::open(&path);
        assert!(
            matches!(&second, Err(e) if e.kind() == SeamErrorKind::Permanent && e.message().contains("in use")),
            "{:?}",
            second.err()
        );
    }
}
