//! Matching detected faces against a gallery and turning them into the shared reports
//! ([`facerec_contract::report`]).

pub use facerec_contract::report::{FaceReport, ImageReport, distance, similarity};

use crate::error::ImageError;
use crate::gallery::{Gallery, Match};
use crate::matcher::Matcher;
use crate::pipeline::{Analysis, Face};
use crate::threshold::Threshold;

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
