//! The request and result messages exchanged between the edge and the workers (docs/interfaces.md,
//! "AWS resources and messages"). Both are JSON with a version field `"v": 1`.

use crate::error::ImageError;
use crate::report::{FaceReport, ImageReport};
use serde::{Deserialize, Serialize};

/// The message format version this build writes and understands.
pub const VERSION: u32 = 1;

/// Why a queue message is not one this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("unsupported message version {0}")]
    Version(u64),
    #[error("missing message version \"v\"")]
    NoVersion,
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("invalid request_id {0:?}")]
    RequestId(String),
    #[error("invalid object key {0:?}")]
    Key(String),
}

/// A recognition request: which uploaded object to analyse, under which request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    /// Unique per upload; the result is stored and matched under it.
    pub request_id: String,
    /// Key of the uploaded image in the input bucket (derived from the request id).
    pub key: String,
    /// The client's file name, only echoed back.
    pub filename: String,
    /// Batch job this image belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// Include each face's 128-d descriptor in the result (enrollment, verification).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embeddings: bool,
    /// A probe (an enrolment, a verification, a search), not an upload of the archive: its
    /// faces are not recorded as seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    /// The collection whose gallery the faces are matched against and recorded in
    /// (`None`: the default one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
}

impl Request {
    pub fn new(request_id: impl Into<String>, filename: impl Into<String>) -> Self {
        let request_id = request_id.into();
        Self {
            v: VERSION,
            key: input_key(&request_id),
            request_id,
            filename: filename.into(),
            batch: None,
            embeddings: false,
            probe: false,
            collection: None,
        }
    }

    /// Parses and validates a request body.
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(MessageError::Version(v)),
            None => return Err(MessageError::NoVersion),
        }
        let req: Request = serde_json::from_value(value).map_err(|e| MessageError::Malformed {
            what: "request",
            detail: e.to_string(),
        })?;
        if !valid_id(&req.request_id) {
            return Err(MessageError::RequestId(req.request_id));
        }
        if req.key.is_empty() || req.key.contains("..") || req.key.starts_with('/') {
            return Err(MessageError::Key(req.key));
        }
        Ok(req)
    }

    /// Best-effort request id of a body that failed to parse, so that the client can
    /// still be told about the failure.
    pub fn salvage_id(body: &str) -> Option<(String, String)> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let id = value.get("request_id")?.as_str()?;
        let filename = value
            .get("filename")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        valid_id(id).then(|| (id.to_string(), filename.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request always serialises")
    }
}

/// Request ids are what we generate (UUIDs) or what a client may reasonably send:
/// short, and safe inside an object key.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where an upload is stored in the input bucket.
pub fn input_key(request_id: &str) -> String {
    format!("uploads/{request_id}")
}

/// Where a result is stored in the output bucket: one object per request id.
pub fn result_key(request_id: &str) -> String {
    format!("results/{request_id}.json")
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub v: u32,
    pub request_id: String,
    pub filename: String,
    /// The file name without its extension (the original `<stem>:<name>` answer's left part).
    pub stem: String,
    /// Identity of the largest face, `unknown`, or `no-face`; absent on error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces: Option<Vec<FaceReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

impl ResultMessage {
    pub fn from_report(req: &Request, report: ImageReport, size: Option<(u32, u32)>) -> Self {
        let name = report.best_name().map(str::to_string);
        Self {
            v: VERSION,
            request_id: req.request_id.clone(),
            stem: stem(&req.filename),
            filename: req.filename.clone(),
            name,
            faces: report.faces,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            error: report.error,
            batch: req.batch.clone(),
        }
    }

    pub fn error(request_id: &str, filename: &str, error: ImageError) -> Self {
        Self {
            v: VERSION,
            request_id: request_id.to_string(),
            stem: stem(filename),
            filename: filename.to_string(),
            name: None,
            faces: None,
            width: None,
            height: None,
            error: Some(error),
            batch: None,
        }
    }

    /// An error result for a parsed request.
    pub fn error_for(req: &Request, error: ImageError) -> Self {
        Self {
            batch: req.batch.clone(),
            ..Self::error(&req.request_id, &req.filename, error)
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a result always serialises")
    }

    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let r: Self = serde_json::from_slice(body).map_err(|e| MessageError::Malformed {
            what: "result",
            detail: e.to_string(),
        })?;
        if r.v != VERSION {
            return Err(MessageError::Version(r.v.into()));
        }
        Ok(r)
    }

    /// The original web tier's answer: `<stem>:<name>`.
    pub fn plain(&self) -> String {
        let name = match (&self.name, &self.error) {
            (Some(n), _) => n.as_str(),
            (None, Some(e)) => e.kind.as_str(),
            (None, None) => "error",
        };
        format!("{}:{name}", self.stem)
    }
}

/// A message parked in the dead-letter queue by a worker, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub v: u32,
    /// Machine-readable reason (`malformed`, `missing_object`, `retries_exhausted`, an
    /// image error kind, ...).
    pub reason: String,
    pub message: String,
    /// How many times the message had been received.
    pub receive_count: u32,
    /// The original message body, unchanged.
    pub body: String,
}

/// The file name without directories and without its last extension.
pub fn stem(filename: &str) -> String {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    match base.rfind('.') {
        Some(i) if i > 0 => base[..i].to_string(),
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_validation() {
        let r = Request::new("abc-123", "test_000.jpg");
        assert_eq!(Request::parse(&r.to_json()).unwrap(), r);
        assert!(matches!(Request::parse("{"), Err(MessageError::NotJson(_))));
        assert_eq!(
            Request::parse(r#"{"request_id":"a"}"#),
            Err(MessageError::NoVersion)
        );
        assert_eq!(
            Request::parse(r#"{"v":2,"request_id":"a","key":"k","filename":"f"}"#),
            Err(MessageError::Version(2))
        );
        assert_eq!(
            Request::parse(r#"{"v":1,"request_id":"../x","key":"k","filename":"f"}"#),
            Err(MessageError::RequestId("../x".into()))
        );
        assert_eq!(
            Request::parse(r#"{"v":1,"request_id":"a","key":"../k","filename":"f"}"#),
            Err(MessageError::Key("../k".into()))
        );
        assert!(matches!(
            Request::parse(r#"{"v":1,"request_id":"a"}"#),
            Err(MessageError::Malformed {
                what: "request",
                ..
            })
        ));
        assert_eq!(
            Request::salvage_id(r#"{"request_id":"a1","filename":"x.png"}"#),
            Some(("a1".into(), "x.png".into()))
        );
    }

    #[test]
    fn stems() {
        assert_eq!(stem("test_000.jpg"), "test_000");
        assert_eq!(stem("dir/a.b.png"), "a.b");
        assert_eq!(stem(".hidden"), ".hidden");
        assert_eq!(stem("noext"), "noext");
    }
}
