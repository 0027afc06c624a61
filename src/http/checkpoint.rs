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

async fn latest(State(state): State<AppState>) -> Result<Response, ApiError> {
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
