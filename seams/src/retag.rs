//! Re-tagging: the faces seen in uploads follow the gallery. Enrolling someone tags the
//! faces already seen that are nearer to the new faces than to anyone enrolled before;
//! removing an identity matches the faces it was nearest to again against everyone else; a
//! rename keeps the tags (they name the identity by its id).
//!
//! The answer is the one recognition would give the same face against today's gallery
//! (the nearest enrolled face, tagged when within the same-person rule,
//! `facerec_contract::Threshold`), computed with the gallery's own arithmetic
//! (`Gallery::nearest`): a seen face matched against the gallery as of change `g` only needs
//! the faces enrolled after `g`, so after one enrolment a pass reads the seen faces once and
//! compares each with the new faces alone.
//!
//! One process at a time runs a pass (a lease in the store, renewed every page; another
//! process takes over when it runs out), in the background of every edge and worker. Every
//! seen face records the change its gallery had reached (`gallery_seq`); the store's cursor
//! says up to which change every seen face has been brought; a face recorded against a
//! gallery behind the store, or whose nearest identity was removed, is *stale* and is
//! matched again against the whole gallery (the pass's process's gallery in memory, brought
//! up to the store's last change first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use facerec_contract::{Gallery, Threshold};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::faces::{
    FaceStore, FaceStoreError, Retag, RetagProgress, SeenScan, StoredFace, StoredSeen, now_ms,
};
use crate::gallery::GalleryHandle;

/// Seen faces read, compared with the faces enrolled since and written at a time (about
/// 2 MB of embeddings).
const PAGE: usize = 4096;
/// Stale faces read, matched against the whole gallery and written at a time: each is a
/// search of the whole gallery (at 1,000,000 faces a page takes seconds on two cores), and
/// the lease is renewed after each page.
const STALE_PAGE: usize = 128;
/// How long a lease lasts unless renewed (each page renews it).
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle process looks for work.
const IDLE: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassReport {
    /// The change the seen faces were brought up to.
    pub target: i64,
    /// Stale faces matched again against the whole gallery.
    pub rematched: u64,
    /// Faces compared with the faces enrolled since the last pass.
    pub scanned: u64,
    /// Faces whose match changed.
    pub changed: u64,
}

/// Why a pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RetagError {
    #[error(transparent)]
    Store(#[from] FaceStoreError),
    /// Another process took the lease over (this one was too slow to renew it).
    #[error("the re-tagging lease was taken over by another process")]
    LeaseLost,
    #[error("shutting down")]
    Shutdown,
}

/// What a re-tagger reports, as its process exports it (the edge:
/// `facerec_edge_retag_*`).
#[derive(Clone, Default)]
pub struct RetagMetrics {
    /// Changes not yet brought to every seen face (the last change less the cursor).
    pub lag: Gauge,
    /// Seen faces waiting to be matched again.
    pub stale: Gauge,
    /// Seen faces gone through by this process's passes.
    pub faces: Counter,
}

/// Runs re-tagging passes against one collection of a face store.
pub struct Retagger {
    gallery: Arc<GalleryHandle>,
    store: Arc<dyn FaceStore>,
    threshold: Threshold,
    owner: String,
    metrics: RetagMetrics,
    /// The last pass failed (logged once until one succeeds).
    failing: bool,
}

/// Re-tags every collection of the store `galleries` follows (nothing without one), until
/// `shutdown`: each collection in turn, whenever there is work; `metrics` sums them.
pub async fn run_all(
    galleries: Arc<crate::gallery::Galleries>,
    threshold: Threshold,
    metrics: RetagMetrics,
    shutdown: CancellationToken,
) {
    let Some(store) = galleries.store().cloned() else {
        return;
    };
    let mut retaggers: HashMap<String, Retagger> = HashMap::new();
    let mut names = vec![crate::faces::DEFAULT_COLLECTION.to_string()];
    loop {
        tokio::select! {
            () = tokio::time::sleep(IDLE) => {}
            () = shutdown.cancelled() => return,
        }
        match store.collection_names().await {
            Ok(all) => {
                names = all;
                retaggers.retain(|n, _| names.contains(n));
            }
            Err(e) => tracing::debug!(error = %e, "listing collections failed"),
        }
        let (mut lag, mut stale) = (0, 0);
        for name in &names {
            // A collection's gallery is loaded here only once it has work: an edge does not
            // hold every collection in memory to find nothing to do.
            if name != crate::faces::DEFAULT_COLLECTION && !retaggers.contains_key(name) {
                match store.in_collection(name).retag_status().await {
                    Ok(s) if s.cursor >= s.latest && s.stale == 0 => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(collection = name, error = %e, "re-tagging status");
                        continue;
                    }
                }
            }
            let gallery = match galleries.get(name).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!(collection = name, error = %e, "collection not loaded");
                    continue;
                }
            };
            // A collection deleted and created again has a new gallery: a new re-tagger.
            if retaggers
                .get(name)
                .is_none_or(|r| !Arc::ptr_eq(&r.gallery, &gallery))
            {
                let Some(r) = Retagger::new(gallery, threshold) else {
                    continue;
                };
                // Each collection's gauges its own; the exported ones sum them.
                let own = RetagMetrics {
                    faces: metrics.faces.clone(),
                    ..RetagMetrics::default()
                };
                retaggers.insert(name.clone(), r.with_metrics(own));
            }
            let Some(r) = retaggers.get_mut(name) else {
                continue;
            };
            if r.tick(&shutdown).await {
                return;
            }
            lag += r.metrics.lag.get();
            stale += r.metrics.stale.get();
        }
        metrics.lag.set(lag);
        metrics.stale.set(stale);
    }
}

impl Retagger {
    /// A re-tagger for the store `gallery` follows (`None` without one), matching with
    /// `threshold` as recognition does.
    pub fn new(gallery: Arc<GalleryHandle>, threshold: Threshold) -> Option<Self> {
        let store = gallery.store()?.clone();
        Some(Self {
            gallery,
            store,
            threshold,
            owner: owner(),
            metrics: RetagMetrics::default(),
            failing: false,
        })
    }

    /// Reports into `metrics`.
    pub fn with_metrics(mut self, metrics: RetagMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Passes whenever there is work, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                () = shutdown.cancelled() => return,
            }
            if self.tick(&shutdown).await {
                return;
            }
        }
    }

    /// One pass if there is work, logged; true on `shutdown`.
    async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        let collection = self.store.collection().to_string();
        match self.pass(shutdown).await {
            Ok(Some(r)) if r.rematched + r.scanned == 0 => {
                self.failing = false;
                tracing::debug!(collection, target_seq = r.target, "re-tagging cursor moved");
            }
            Ok(Some(r)) => {
                self.failing = false;
                tracing::info!(
                    collection,
                    target_seq = r.target,
                    rematched = r.rematched,
                    scanned = r.scanned,
                    changed = r.changed,
                    "seen faces re-tagged"
                );
            }
            Ok(None) => self.failing = false,
            Err(RetagError::Shutdown) => return true,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(collection, error = %e, "re-tagging failed; retrying");
            }
            Err(e) => tracing::debug!(collection, error = %e, "re-tagging still failing"),
        }
        false
    }

    /// One pass when there is work and no other process holds the lease: `None` when there
    /// was nothing to do here.
    pub async fn pass(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<PassReport>, RetagError> {
        let status = self.store.retag_status().await?;
        self.metrics.lag.set(status.latest - status.cursor);
        self.metrics.stale.set(status.stale as i64);
        if status.cursor >= status.latest && status.stale == 0 {
            return Ok(None);
        }
        let now = now_ms();
        let mut progress = RetagProgress {
            owner: self.owner.clone(),
            until_ms: now + LEASE.as_millis() as i64,
            target: status.latest,
            done: 0,
            total: 0,
            started_ms: now,
        };
        if !self.store.retag_lease(&progress).await? {
            return Ok(None);
        }
        let result = self.run_pass(&mut progress, shutdown).await;
        let done = result.as_ref().ok().map(|r| r.target);
        // Releases the lease; the cursor moves only after a whole pass.
        self.store.finish_retag(&self.owner, done).await?;
        if let Some(target) = done {
            self.metrics.lag.set((status.latest - target).max(0));
        }
        result.map(Some)
    }

    async fn run_pass(
        &self,
        progress: &mut RetagProgress,
        shutdown: &CancellationToken,
    ) -> Result<PassReport, RetagError> {
        // Stale faces are matched against the gallery in memory, so it must be the
        // store's as of the plan (`at == target`); a few tries while changes keep coming,
        // then they wait for the next pass. The others meet only the faces enrolled since
        // they were matched (`plan.faces`).
        let (mut gallery, mut at, mut plan);
        let mut tries = 0;
        loop {
            self.gallery.sync_store().await?;
            (gallery, at) = self.gallery.snapshot();
            plan = self.store.retag_plan().await?;
            tries += 1;
            if at == plan.target || tries == 3 {
                break;
            }
        }
        let target = plan.target;
        let stale = if at == target { plan.stale } else { 0 };
        let new = Faces::new(plan.faces.iter());
        progress.target = target;
        progress.total = stale + if new.is_empty() { 0 } else { plan.behind };
        let mut report = PassReport {
            target,
            ..PassReport::default()
        };

        if stale > 0 {
            let mut after = 0;
            loop {
                let page = self
                    .store
                    .seen_page(SeenScan::Stale, after, STALE_PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                let retags = self
                    .rematch(&gallery, &plan.identities, target, &page)
                    .await?;
                report.rematched += page.len() as u64;
                report.changed += self.store.write_retags(&retags).await? as u64;
                self.renew(progress, page.len(), shutdown).await?;
            }
        }

        if !new.is_empty() {
            let mut after = 0;
            loop {
                let page = self
                    .store
                    .seen_page(SeenScan::Before(target), after, PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                let retags = self.compare(&new, plan.faces_after, &page).await?;
                report.scanned += page.len() as u64;
                report.changed += self.store.write_retags(&retags).await? as u64;
                self.renew(progress, page.len(), shutdown).await?;
            }
        }
        if at != target {
            // Stale faces wait; the cursor may still move for the others.
            tracing::debug!(
                at,
                target,
                "gallery in memory behind the store; stale faces wait"
            );
        }
        Ok(report)
    }

    /// Stale faces against the whole gallery (in memory, as of `target`), its names mapped
    /// to the store's ids as of `target` too.
    async fn rematch(
        &self,
        gallery: &Arc<Gallery>,
        ids: &HashMap<String, i64>,
        target: i64,
        page: &[StoredSeen],
    ) -> Result<Vec<Retag>, FaceStoreError> {
        let (gallery, rows) = (gallery.clone(), Arc::new(page.to_vec()));
        let rule = self.threshold;
        let matched = blocking(move || {
            let queries: Vec<&[f32]> = rows.iter().map(|r| &r.embedding[..]).collect();
            rows.iter()
                .zip(gallery.nearest(&queries))
                .map(|(row, m)| {
                    let m = m.map(|m| {
                        let same = rule.is_same(m.distance, row.side, m.side);
                        (m.name, m.distance, same)
                    });
                    (row.id, m)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        Ok(matched
            .into_iter()
            .filter_map(|(id, m)| {
                let (nearest, distance, same) = match m {
                    // A name unknown to the store's ids cannot be (both are as of
                    // `target`); such a face would stay stale.
                    Some((name, d, same)) => (Some(*ids.get(&name)?), Some(d), same),
                    None => (None, None, false),
                };
                Some(Retag {
                    id,
                    identity_id: nearest.filter(|_| same),
                    nearest_id: nearest,
                    distance,
                    rematched: Some(target),
                })
            })
            .collect())
    }

    /// Seen faces against the faces enrolled after `from` (the later of the cursor and the
    /// oldest gallery among them): a face matched against a gallery as of a later `g` meets
    /// only the faces enrolled after `g`.
    async fn compare(
        &self,
        new: &Faces,
        from: i64,
        page: &[StoredSeen],
    ) -> Result<Vec<Retag>, FaceStoreError> {
        let (gallery, seqs, rows) = (
            new.gallery.clone(),
            new.seqs.clone(),
            Arc::new(page.to_vec()),
        );
        let rule = self.threshold;
        blocking(move || {
            // Most faces meet every new face: one search for all of them.
            let (whole, part): (Vec<&StoredSeen>, Vec<&StoredSeen>) =
                rows.iter().partition(|r| r.gallery_seq <= from);
            let queries: Vec<&[f32]> = whole.iter().map(|r| &r.embedding[..]).collect();
            let mut found: Vec<_> = whole.into_iter().zip(gallery.nearest(&queries)).collect();
            found.extend(part.into_iter().map(|r| {
                let from = seqs.partition_point(|&s| s <= r.gallery_seq);
                (r, gallery.nearest_of(&r.embedding, from..seqs.len()))
            }));
            found
                .into_iter()
                .filter_map(|(row, m)| {
                    let m = m?;
                    if row.distance.is_some_and(|d| m.distance >= d) {
                        return None;
                    }
                    let nearest = id_of(&m.name);
                    Some(Retag {
                        id: row.id,
                        identity_id: rule
                            .is_same(m.distance, row.side, m.side)
                            .then_some(nearest),
                        nearest_id: Some(nearest),
                        distance: Some(m.distance),
                        rematched: None,
                    })
                })
                .collect()
        })
        .await
    }

    /// Counts a page done and renews the lease with the progress; stops on shutdown or
    /// when another process has taken the lease.
    async fn renew(
        &self,
        progress: &mut RetagProgress,
        rows: usize,
        shutdown: &CancellationToken,
    ) -> Result<(), RetagError> {
        progress.done += rows as u64;
        self.metrics.faces.inc_by(rows as u64);
        progress.until_ms = now_ms() + LEASE.as_millis() as i64;
        if !self.store.retag_lease(progress).await? {
            return Err(RetagError::LeaseLost);
        }
        if shutdown.is_cancelled() {
            return Err(RetagError::Shutdown);
        }
        Ok(())
    }
}

/// Enrolled faces read from the store as a gallery of their own, each named by its
/// identity's id, in the order they were enrolled.
struct Faces {
    gallery: Arc<Gallery>,
    /// Each row's change.
    seqs: Arc<Vec<i64>>,
}

impl Faces {
    fn new<'a>(faces: impl Iterator<Item = &'a StoredFace>) -> Self {
        let mut gallery = Gallery::new("retag");
        let mut seqs = Vec::new();
        for f in faces {
            gallery.add_face(&f.identity_id.to_string(), &f.embedding, f.side);
            seqs.push(f.seq);
        }
        Self {
            gallery: Arc::new(gallery),
            seqs: Arc::new(seqs),
        }
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

fn id_of(name: &str) -> i64 {
    name.parse().unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FaceStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FaceStoreError::Unavailable(format!("re-tagging task failed: {e}")))
}

/// This re-tagger, for the lease: host name, process id and a number (an edge and a
/// worker in one process each have their own).
fn owner() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{n}", std::process::id())
}
