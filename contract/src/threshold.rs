//! When two descriptors are the same person, and how sure that is: the decision rule and
//! the match confidence, both calibrated on real faces (`benches/threshold.py` on
//! `tests/data/eval/faces.csv`; the figures are in `models/face_recognition.md`).
//!
//! Descriptors of small faces are less distinct: on the evaluation faces, different
//! people whose smaller face is under 64 px (PASCAL VOC group photos, the 64x64 CSE546
//! crops) come as close as 0.47, while with both faces at 64 px or more the closest
//! different people are 0.575 apart and the farthest same person 0.593. So the threshold
//! depends on the smaller face of the pair, measured as the shorter side of its detector
//! box in source pixels (`FaceBox::side`).

use std::fmt;
use std::str::FromStr;

/// Faces whose detector box has a shorter side under this many source pixels are small.
pub const SMALL_FACE_SIDE: f32 = 64.0;

/// The same-person rule: a pair is the same person when its euclidean distance is at most
/// `large`, or at most `small` when the smaller face of the pair is under
/// `SMALL_FACE_SIDE`. A face of unknown size (an enrolled face from a gallery file older
/// than the sizes) counts as small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    large: f32,
    small: f32,
}

/// Slope of the match confidence (`Threshold::confidence`), per unit of distance: a
/// logistic fit of same-person against different-person pairs of the evaluation faces,
/// class-balanced, on each pair's distance minus its threshold (`benches/threshold.py`:
/// 30.05).
const CONFIDENCE_SLOPE: f32 = 30.0;
/// Where the confidence is one half, past the pair's threshold (the same fit: 0.0367).
const CONFIDENCE_OFFSET: f32 = 0.037;

impl Threshold {
    /// The calibrated default (`auto`): 0.6 for faces of 64 px and more, 0.5 when the
    /// smaller face of the pair is under 64 px. On the evaluation faces: 0.099% false
    /// matches (11 of 11,061 different-person pairs), identification top-1 0.973,
    /// verification accuracy 0.997 (`models/face_recognition.md`).
    pub const DEFAULT: Threshold = Threshold {
        large: 0.6,
        small: 0.5,
    };

    /// One threshold for every face size.
    pub fn fixed(distance: f32) -> Result<Self, ThresholdError> {
        if !(distance > 0.0 && distance <= 2.0) {
            return Err(ThresholdError::OutOfRange(distance));
        }
        Ok(Self {
            large: distance,
            small: distance,
        })
    }

    /// The threshold for a pair whose faces have these sides (`FaceBox::side`; 0 or NaN
    /// when unknown).
    pub fn for_sides(&self, a: f32, b: f32) -> f32 {
        // An unknown side (0, or NaN, which compares false) is small.
        if a >= SMALL_FACE_SIDE && b >= SMALL_FACE_SIDE {
            self.large
        } else {
            self.small
        }
    }

    /// Whether a pair at `distance` with faces of these sides is the same person.
    pub fn is_same(&self, distance: f32, a: f32, b: f32) -> bool {
        distance <= self.for_sides(a, b)
    }

    /// How sure a same-person answer is, in [0, 1]: the logistic fit of the evaluation's
    /// pairs, `1 / (1 + exp(30 (d - t - 0.037)))` with `t` the pair's threshold. It is
    /// 0.75 at the threshold, 0.95 at 0.06 under it and 0.05 at 0.135 over it, and reads
    /// as the chance that a pair at this distance from its threshold is one person when
    /// both answers are equally likely beforehand.
    pub fn confidence(&self, distance: f32, a: f32, b: f32) -> f32 {
        let t = self.for_sides(a, b);
        1.0 / (1.0 + (CONFIDENCE_SLOPE * (distance - t - CONFIDENCE_OFFSET)).exp())
    }
}

impl Default for Threshold {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A threshold that is not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error(
        "threshold must be a distance in (0, 2] (descriptors of the same person are about \
         0.3 apart, of different people about 0.9), got {0}"
    )]
    OutOfRange(f32),
    #[error("threshold must be `auto` or a distance, got {0:?}")]
    NotANumber(String),
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    /// `auto` (the calibrated default) or one distance for every face size.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::DEFAULT);
        }
        let d: f32 = s
            .trim()
            .parse()
            .map_err(|_| ThresholdError::NotANumber(s.into()))?;
        Self::fixed(d)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::DEFAULT {
            write!(f, "auto")
        } else if self.large == self.small {
            write!(f, "{}", self.large)
        } else {
            write!(
                f,
                "{} ({} under {SMALL_FACE_SIDE} px)",
                self.large, self.small
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_face_decides() {
        let t = Threshold::DEFAULT;
        assert_eq!(t.for_sides(200.0, 64.0), 0.6);
        assert_eq!(t.for_sides(200.0, 63.9), 0.5);
        assert_eq!(t.for_sides(f32::NAN, 200.0), 0.5);
        assert!(t.is_same(0.58, 100.0, 100.0));
        assert!(!t.is_same(0.58, 40.0, 100.0));
    }

    #[test]
    fn parses_auto_and_validates_distances() {
        assert_eq!("auto".parse::<Threshold>(), Ok(Threshold::DEFAULT));
        let t: Threshold = "0.55".parse().expect("a distance");
        assert_eq!(t.for_sides(10.0, 10.0), 0.55);
        assert_eq!(t.for_sides(300.0, 300.0), 0.55);
        for bad in ["7", "0", "-0.1", "NaN", "half"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
        assert_eq!(Threshold::DEFAULT.to_string(), "auto");
        assert_eq!(t.to_string(), "0.55");
    }

    #[test]
    fn confidence_is_monotone_and_about_even_at_the_threshold() {
        let t = Threshold::DEFAULT;
        let at = t.confidence(0.6, 100.0, 100.0);
        assert!((0.7..0.8).contains(&at), "{at}");
        assert!(t.confidence(0.3, 100.0, 100.0) > 0.99);
        assert!(t.confidence(0.9, 100.0, 100.0) < 0.01);
        // The small-face curve moves with its threshold.
        assert!((t.confidence(0.5, 40.0, 100.0) - at).abs() < 1e-6);
        let mut last = 1.0;
        for i in 0..100 {
            let c = t.confidence(i as f32 * 0.02, 100.0, 100.0);
            assert!(c <= last && (0.0..=1.0).contains(&c));
            last = c;
        }
    }
}
