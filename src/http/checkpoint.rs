//! `GET /v1/checkpoint`: the latest signed checkpoint, for witnesses and monitors. Public: it
//! holds the tree's size and root and the log's signatures, nothing about any token.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::policy::path;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(path::CHECKPOINT, get(latest))
}

/// The latest signed checkpoint: `<origin>\n<size>\n<base64 root>\n`, a blank line, then one
/// `— <origin> <signature>` line per key (a C2SP signed note).
#[utoipa::path(get, path = path::CHECKPOINT, operation_id = "latest_checkpoint", tag = "transparency", responses(
    (status = 200, description = "the signed note", content_type = "text/plain", body = String),
    (status = 404, description = "no checkpoint has been signed yet", body = super::error::ErrorBody),
    (status = 503, description = "the checkpoints could not be read", body = super::error::ErrorBody),
))]
pub(super) async fn latest(State(state): State<AppState>) -> Result<Response, ApiError> {
    let latest = state.queries.checkpoints(1).await?.into_iter().next();
    match latest {
        Some(c) => Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            c.note,
        )
            .into_response()),
        None => Err(ApiError::NothingYet("No checkpoint has been signed yet")),
    }
}
