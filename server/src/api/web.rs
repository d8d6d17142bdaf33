//! The dashboard: `web/` embedded in the binary, served at `/`. No page of it
//! may be framed (clickjacking); the focus page (`focus.rs`) is the one that
//! may, and sets its own policy.

use super::AppState;
use super::error::ApiError;
use axum::Router;
use axum::http::Uri;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../web");

/// An embedded file of the dashboard.
pub(super) fn page(path: &str) -> Option<&'static [u8]> {
    WEB.get_file(path).map(|file| file.contents())
}

/// Static files for any path the other routes do not take; 404 otherwise.
pub fn router() -> Router<AppState> {
    Router::new().fallback(serve)
}

async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    if path.starts_with("api/") {
        return ApiError::NotFound(format!("no such route: /{path}")).into_response();
    }
    match WEB.get_file(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            (
                [
                    (CONTENT_TYPE, mime.essence_str().to_string()),
                    (CACHE_CONTROL, "no-cache".to_string()),
                    (X_FRAME_OPTIONS, "DENY".to_string()),
                    (
                        CONTENT_SECURITY_POLICY,
                        "frame-ancestors 'none'".to_string(),
                    ),
                ],
                file.contents(),
            )
                .into_response()
        }
        None => ApiError::NotFound(format!("no such page or route: /{path}")).into_response(),
    }
}
