//! The API's own answer types. A result arrives from a worker as a queue message
//! (`facerec_contract::ResultMessage`, versioned between separately deployed tiers); what a
//! client reads is `Recognition`, built from it here, so the message can change without
//! changing the API and the API can change without changing the message. The faces inside
//! are the shape every front end shares (`FaceReport`: `identify --json` prints the same).

use facerec_contract::report::FaceReport;
use facerec_contract::{ImageError, ResultMessage};
use facerec_seams::faces::Appearance;
use facerec_seams::faces::search::Similar;
use serde::Serialize;

/// One image's answer in `/v1/recognize` and in a batch's NDJSON results.
#[derive(Debug, Clone, Serialize)]
pub struct Recognition<'a> {
    pub request_id: &'a str,
    pub filename: &'a str,
    /// The file name without its extension (the original `<stem>:<name>` answer's left part).
    pub stem: &'a str,
    /// Identity of the largest face, `unknown`, or `no-face`; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces: Option<&'a [FaceReport]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a ImageError>,
    /// The bulk job the image belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<&'a str>,
}

impl<'a> From<&'a ResultMessage> for Recognition<'a> {
    fn from(r: &'a ResultMessage) -> Self {
        Self {
            request_id: &r.request_id,
            filename: &r.filename,
            stem: &r.stem,
            name: r.name.as_deref(),
            faces: r.faces.as_deref(),
            width: r.width,
            height: r.height,
            error: r.error.as_ref(),
            batch: r.batch.as_deref(),
        }
    }
}

/// One image's answer as JSON.
pub(crate) fn recognition_json(r: &ResultMessage) -> serde_json::Value {
    serde_json::to_value(Recognition::from(r)).expect("answers serialise")
}

/// A seen face's place as every front end answers it (appearances, searches, `facerec
/// faces`): `quality` is `{"yaw", "roll", "sharpness"}`, or null for a face recorded
/// without it.
pub fn appearance_json(a: &Appearance) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "request_id": a.request_id,
        "face": a.face_index,
        "filename": a.filename,
        "batch": a.batch,
        "box": a.bbox,
        "score": a.score,
        "distance": a.distance,
        "seen_ms": a.seen_ms,
        "quality": a.quality,
    })
}

/// A seen face a search found: its place, whom it is tagged with now, and how near it is
/// to the query (`distance`, `confidence`, `same_person` by the same-person rule).
pub fn similar_json(s: &Similar) -> serde_json::Value {
    let mut v = appearance_json(&s.face.at);
    v["identity"] = serde_json::json!(s.face.identity);
    v["distance"] = serde_json::json!(s.distance);
    v["confidence"] = serde_json::json!((s.confidence * 1000.0).round() / 1000.0);
    v["same_person"] = serde_json::json!(s.same);
    v
}

/// One NDJSON line of batch results.
pub(crate) fn result_line(r: &ResultMessage) -> String {
    serde_json::to_string(&Recognition::from(r)).expect("answers serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use facerec_contract::ErrorKind;

    #[test]
    fn an_answer_is_the_message_without_its_version() {
        let mut r = ResultMessage::error(
            "rid-1",
            "a.jpg",
            ImageError::new(ErrorKind::Corrupt, "truncated"),
        );
        r.batch = Some("job".into());
        let mut expected = serde_json::to_value(&r).unwrap();
        expected.as_object_mut().unwrap().remove("v");
        assert_eq!(recognition_json(&r), expected);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&result_line(&r)).unwrap(),
            expected
        );
    }
}
