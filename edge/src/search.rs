//! The seen-face routes beyond one identity: the seen faces nearest to an uploaded face or
//! to a seen face (`facerec_seams::faces::search`, exact), and forgetting a bulk job's
//! seen faces.

use axum::extract::{Request, State};
use axum::response::Response;
use facerec_seams::faces::SeenFilter;
use facerec_seams::faces::search::{MAX_K, Query, Similar, nearest_seen};
use facerec_seams::gallery::GalleryChangeError;
use hyper::{HeaderMap, StatusCode, Uri};
use serde_json::json;

use crate::api::similar_json;
use crate::collections::InCollection;
use crate::identities::change_error;
use crate::recognize::largest_face;
use crate::response::{ApiError, count_in, json_response, query_pairs};
use crate::routes::{RequestId, Segment, Shared};

/// Faces answered without `k`.
const DEFAULT_K: usize = 10;

/// `POST /v1/faces/search[?k=&batch=&since_ms=&until_ms=]` with one `image`: the seen
/// faces nearest to its largest face.
pub(crate) async fn by_upload(
    State(edge): Shared,
    RequestId(rid): RequestId,
    c: InCollection,
    uri: Uri,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let (k, filter) = options(&uri)?;
    let store = c.store()?;
    let mut parts = edge.files(req).await?;
    if parts.len() != 1 {
        return Err(ApiError::bad_request("a search takes one image file"));
    }
    let part = parts.remove(0);
    let result = edge
        .recognize_parts(vec![part], &rid, true, c.name.as_deref())
        .await
        .pop()
        .ok_or_else(|| ApiError::bad_request("no image file in the request"))??;
    let (embedding, side) = largest_face(result)?;
    let found = nearest_seen(
        store.as_ref(),
        &Query::Face { embedding, side },
        k,
        &filter,
        edge.config.threshold,
    )
    .await
    .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    tracing::info!(
        request_id = rid,
        k,
        found = found.len(),
        "seen faces searched"
    );
    Ok(answer(&found))
}

/// `GET /v1/faces/{id}/similar[?k=&batch=&since_ms=&until_ms=]`: the seen faces nearest to
/// seen face `id` (itself left out).
pub(crate) async fn by_seen(
    State(edge): Shared,
    Segment(id): Segment,
    c: InCollection,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let (k, filter) = options(&uri)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a seen face's id is a number"))?;
    let store = c.store()?;
    let found = nearest_seen(
        store.as_ref(),
        &Query::Seen(id),
        k,
        &filter,
        edge.config.threshold,
    )
    .await
    .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    Ok(answer(&found))
}

/// `DELETE /v1/batches/{id}/faces`: forgets the faces seen in a bulk job.
pub(crate) async fn forget_batch(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(batch): Segment,
    c: InCollection,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let store = c.store()?;
    let forgotten = store
        .forget_seen_of_batch(&batch)
        .await
        .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    tracing::info!(
        request_id = rid,
        batch,
        forgotten,
        "a bulk job's seen faces forgotten"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"batch": batch, "forgotten": forgotten}),
    ))
}

fn answer(found: &[Similar]) -> Response {
    let items: Vec<serde_json::Value> = found.iter().map(similar_json).collect();
    json_response(StatusCode::OK, &json!({"faces": items}))
}

/// `k` (1 to `MAX_K`), `batch`, `since_ms` and `until_ms` of a search's query.
fn options(uri: &Uri) -> Result<(usize, SeenFilter), ApiError> {
    let (mut k, mut filter) = (DEFAULT_K, SeenFilter::default());
    let time = |v: &str, key: &str| {
        v.parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("{key} is milliseconds since 1970")))
    };
    for (key, value) in query_pairs(uri) {
        match key {
            "k" => k = count_in(key, value, MAX_K)?,
            // Bulk job ids are URL-safe (`k-` and hex digits, or a UUID).
            "batch" => filter.batch = Some(value.to_string()),
            "since_ms" => filter.since_ms = Some(time(value, key)?),
            "until_ms" => filter.until_ms = Some(time(value, key)?),
            _ => {}
        }
    }
    Ok((k, filter))
}
