//! The JSON shapes every front end shares (CLI `--json`, HTTP answers, worker result
//! messages), as fixed in docs/interfaces.md.

use serde::{Deserialize, Serialize};

use crate::error::ImageError;

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

/// How usable a face is for recognition, measured where it was found (the seen faces keep
/// it): its pose from the 68 landmarks and its sharpness. The face's size is its box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceQuality {
    /// Left-right turn: -1..1, 0 for a frontal face (the nose tip as far from both sides
    /// of the jaw), the sign saying which way (positive: the nose nearer the jaw's last
    /// landmark, the image's right).
    pub yaw: f32,
    /// Tilt: the angle of the line between the eye centres, degrees, positive clockwise in
    /// the image.
    pub roll: f32,
    /// The variance of the Laplacian of the face's luma, the box resampled to 64x64
    /// (0..255 levels): under about 50 the face is blurred.
    pub sharpness: f32,
}
