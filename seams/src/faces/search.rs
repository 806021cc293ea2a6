//! "Who else looks like this face?": the seen faces nearest to a face, exact. Every seen
//! face the filter admits is compared (pages of [`PAGE`] read by id), with the gallery's own
//! arithmetic (`Gallery::nearest`, the query as a one-face gallery), and the `k` nearest
//! kept; ties go to the face seen first.

use std::collections::BinaryHeap;

use facerec_contract::{Gallery, Threshold};

use super::{FaceStore, FaceStoreError, SeenFilter, SeenRecord};

/// Seen faces read at a time.
const PAGE: usize = 8192;
/// The most faces one search answers.
pub const MAX_K: usize = 1000;

/// A seen face near the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Similar {
    pub face: SeenRecord,
    pub distance: f32,
    /// How sure it is the same person (`Threshold::confidence`, by both faces' sizes).
    pub confidence: f32,
    /// Whether the same-person rule holds.
    pub same: bool,
}

/// What to search with.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// A face's embedding and its size (`FaceBox::side`), e.g. an upload's largest face.
    Face { embedding: Vec<f32>, side: f32 },
    /// A seen face by id (itself left out of the answer).
    Seen(i64),
}

/// The `k` (1 to [`MAX_K`]) seen faces of `filter` nearest to `query`, nearest first.
/// `NotFound` for a seen face id that does not exist.
pub async fn nearest_seen(
    store: &dyn FaceStore,
    query: &Query,
    k: usize,
    filter: &SeenFilter,
    rule: Threshold,
) -> Result<Vec<Similar>, FaceStoreError> {
    if !(1..=MAX_K).contains(&k) {
        return Err(FaceStoreError::Invalid(format!("k is 1 to {MAX_K}")));
    }
    let (embedding, side, itself) = match query {
        Query::Face { embedding, side } => (embedding.clone(), *side, None),
        Query::Seen(id) => {
            let face = store
                .seen_faces(&[*id])
                .await?
                .pop()
                .ok_or_else(|| FaceStoreError::NotFound(format!("no seen face {id}")))?;
            (face.embedding, face.side, Some(*id))
        }
    };
    super::check_faces(&[super::NewFace {
        embedding: embedding.clone(),
        side,
        source: None,
    }])?;
    let mut one = Gallery::new("search");
    one.add_face("query", &embedding, side);
    // A max-heap of the best k: (distance, id), the worst on top.
    let mut best: BinaryHeap<(Ordered, i64)> = BinaryHeap::new();
    let mut after = 0;
    loop {
        let page = store.seen_embeddings(filter, after, PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        let queries: Vec<&[f32]> = page.iter().map(|(_, e)| &e[..]).collect();
        for ((id, _), m) in page.iter().zip(one.nearest(&queries)) {
            let Some(m) = m else { continue };
            if Some(*id) == itself {
                continue;
            }
            let entry = (Ordered(m.distance), *id);
            if best.len() < k {
                best.push(entry);
            } else if best.peek().is_some_and(|worst| entry < *worst) {
                best.pop();
                best.push(entry);
            }
        }
    }
    let ranked = best.into_sorted_vec();
    let ids: Vec<i64> = ranked.iter().map(|(_, id)| *id).collect();
    let mut found: std::collections::HashMap<i64, SeenRecord> = store
        .seen_faces(&ids)
        .await?
        .into_iter()
        .map(|f| (f.at.id, f))
        .collect();
    Ok(ranked
        .into_iter()
        // A face forgotten meanwhile (retention) is left out.
        .filter_map(|(Ordered(distance), id)| {
            let face = found.remove(&id)?;
            Some(Similar {
                confidence: rule.confidence(distance, side, face.side),
                same: rule.is_same(distance, side, face.side),
                distance,
                face,
            })
        })
        .collect())
}

/// A distance ordered totally (distances are finite: embeddings are checked).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f32);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
