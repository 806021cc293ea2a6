//! One image's answer, checked against its expected name.

use std::sync::Arc;

use crate::config::Route;
use crate::items::Item;

/// The name an answer carries: `<stem>:<name>` for `/`, `results[0].name` for recognize,
/// `name` of a batch result line.
fn answered_name(route: Route, body: &[u8]) -> Option<String> {
    match route {
        Route::Original => String::from_utf8_lossy(body)
            .trim()
            .split_once(':')
            .map(|(_, n)| n.to_string()),
        Route::Recognize => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["results"][0]["name"].as_str().map(str::to_string)
        }
        Route::Batch => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["name"].as_str().map(str::to_string)
        }
        Route::Health => None,
    }
}

/// One image's (or health request's) answer.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: String,
    pub ms: f64,
    /// Checked against the expected name: right, or what was answered instead.
    pub verdict: Option<Result<(), Mismatch>>,
}

/// An answer that names someone other than the expected person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub file: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} → {}", self.file, self.expected, self.got)
    }
}

impl Outcome {
    /// A 2xx answer (or batch result line) with `body`, checked when `item` has a name.
    pub(crate) fn answered(route: Route, item: &Item, status: u16, body: &[u8], ms: f64) -> Self {
        let verdict = match (&item.expected, (200..300).contains(&status)) {
            (Some(want), true) if route != Route::Health => {
                let got = answered_name(route, body).unwrap_or_default();
                Some(if &got == want {
                    Ok(())
                } else {
                    Err(Mismatch {
                        file: item.filename.clone(),
                        expected: want.clone(),
                        got,
                    })
                })
            }
            _ => None,
        };
        Outcome {
            status: status.to_string(),
            ms,
            verdict,
        }
    }

    pub(crate) fn failed(status: impl Into<String>, ms: f64) -> Self {
        Outcome {
            status: status.into(),
            ms,
            verdict: None,
        }
    }
}

/// Called after every answer (progress bars).
pub(crate) type OnDone = Arc<dyn Fn() + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_answers_of_both_routes() {
        assert_eq!(
            answered_name(Route::Original, b"test_000:Paul\n").as_deref(),
            Some("Paul")
        );
        let json = br#"{"results":[{"name":"Bob","faces":[]}]}"#;
        assert_eq!(
            answered_name(Route::Recognize, json).as_deref(),
            Some("Bob")
        );
    }
}
