//! Matching detected faces against a gallery and the JSON shapes every front end shares
//! (CLI `--json`, HTTP answers, worker result messages), as fixed in DESIGN.md.

use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Face};
use crate::error::ImageError;
use crate::gallery::{Gallery, Match};
use crate::matcher::Matcher;
use crate::threshold::Threshold;

/// A face as reported to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceReport {
    /// `[x, y, w, h]` in pixels of the original (upright) image.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Detector confidence (0 for a whole-frame face crop).
    pub score: f32,
    /// Best matching identity, or `null` when below the threshold or no gallery.
    pub identity: Option<String>,
    /// 0..1, ≥ 0.5 exactly when the distance is within the pair's threshold
    /// (`1 - distance / (2 * threshold)`, clamped); 0 without a gallery.
    pub similarity: f32,
    /// 0..1, how sure it is that the nearest enrolled face is this person: calibrated on
    /// real pairs (`Threshold::confidence`); absent without a gallery.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confidence: Option<f32>,
    /// Euclidean distance to the nearest enrolled face, when there is a gallery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    /// Name of the nearest enrolled identity even when it is not a match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest: Option<String>,
    /// True when no face was detected and the whole frame was used as a face crop.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub whole_frame: bool,
    /// The 128-d descriptor (`embed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// One image's answer: faces, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces: Option<Vec<FaceReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageError>,
}

impl ImageReport {
    /// The name of the largest face: its identity, `unknown` when it matches nobody,
    /// `no-face` when there is none; `None` for an error.
    pub fn best_name(&self) -> Option<&str> {
        let faces = self.faces.as_ref()?;
        Some(match faces.first() {
            None => "no-face",
            Some(f) => f.identity.as_deref().unwrap_or("unknown"),
        })
    }
}

/// Maps a distance to the 0..1 similarity reported to users.
pub fn similarity(distance: f32, threshold: f32) -> f32 {
    (1.0 - distance / (2.0 * threshold)).clamp(0.0, 1.0)
}

/// The nearest enrolled face to every face of a batch of images, found in one search
/// (`matcher`, CPU or GPU): per image, one entry per face, largest first; none for an
/// image that failed, all `None` without a gallery.
pub fn match_faces(
    matcher: &Matcher,
    gallery: Option<&Gallery>,
    results: &[Result<&Analysis, &ImageError>],
) -> Vec<Vec<Option<Match>>> {
    let faces = |r: &Result<&Analysis, &ImageError>| r.as_ref().map_or(0, |a| a.faces.len());
    let queries: Vec<&[f32]> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|a| a.faces.iter().map(|f| f.embedding.as_slice()))
        .collect();
    let mut found = match gallery {
        Some(g) => matcher.nearest(g, &queries),
        None => vec![None; queries.len()],
    }
    .into_iter();
    results
        .iter()
        .map(|r| found.by_ref().take(faces(r)).collect())
        .collect()
}

/// Builds the report of one analysed image from its faces' matches (`match_faces`).
pub fn report(
    image: &str,
    result: Result<&Analysis, &ImageError>,
    matches: Vec<Option<Match>>,
    threshold: Threshold,
    with_embeddings: bool,
) -> ImageReport {
    let analysis = match result {
        Ok(a) => a,
        Err(e) => {
            return ImageReport {
                image: image.to_string(),
                faces: None,
                error: Some(e.clone()),
            };
        }
    };
    debug_assert_eq!(matches.len(), analysis.faces.len(), "one match per face");
    let faces = analysis
        .faces
        .iter()
        .zip(matches.into_iter().chain(std::iter::repeat(None)))
        .map(|(face, m)| face_report(face, m, threshold, with_embeddings))
        .collect();
    ImageReport {
        image: image.to_string(),
        faces: Some(faces),
        error: None,
    }
}

fn face_report(
    face: &Face,
    nearest: Option<Match>,
    threshold: Threshold,
    with_embedding: bool,
) -> FaceReport {
    let b = face.bbox;
    let (identity, similarity_v, confidence, distance, nearest_name) = match nearest {
        Some(m) => {
            let (side, t) = (b.side(), threshold.for_sides(b.side(), m.side));
            (
                threshold
                    .is_same(m.distance, side, m.side)
                    .then(|| m.name.clone()),
                similarity(m.distance, t),
                Some((threshold.confidence(m.distance, side, m.side) * 1000.0).round() / 1000.0),
                Some(m.distance),
                Some(m.name),
            )
        }
        None => (None, 0.0, None, None, None),
    };
    FaceReport {
        bbox: [b.x, b.y, b.w, b.h].map(|v| (v * 10.0).round() / 10.0),
        score: b.score,
        identity,
        similarity: similarity_v,
        confidence,
        distance,
        nearest: nearest_name,
        whole_frame: face.whole_frame,
        embedding: with_embedding.then(|| face.embedding.clone()),
    }
}

/// Euclidean distance between two descriptors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_one_half_at_the_threshold() {
        assert_eq!(similarity(0.0, 0.6), 1.0);
        assert!((similarity(0.6, 0.6) - 0.5).abs() < 1e-6);
        assert_eq!(similarity(5.0, 0.6), 0.0);
    }

    #[test]
    fn best_name_rules() {
        let face = |identity: Option<&str>| FaceReport {
            bbox: [0.0; 4],
            score: 1.0,
            identity: identity.map(str::to_string),
            similarity: 0.0,
            confidence: None,
            distance: None,
            nearest: None,
            whole_frame: false,
            embedding: None,
        };
        let r = |faces| ImageReport {
            image: "x".into(),
            faces,
            error: None,
        };
        assert_eq!(r(Some(vec![])).best_name(), Some("no-face"));
        assert_eq!(r(Some(vec![face(None)])).best_name(), Some("unknown"));
        assert_eq!(
            r(Some(vec![face(Some("ann")), face(None)])).best_name(),
            Some("ann")
        );
        assert_eq!(r(None).best_name(), None);
    }
}
