//! Lingering close: read what a client is still sending before answering.
//!
//! When the API answers before it has read a request's body (413 for a body over
//! the limit, 401 before an upload is read) and hyper then closes the
//! connection, the kernel resets it while the client is still writing, and many
//! clients (curl, reqwest) report "broken pipe" or "connection reset" instead of
//! the answer that says what was wrong. Like nginx's lingering close, the rest
//! of an unread body is read and discarded — bounded in bytes and time, so a
//! client cannot hold the server with it — before the answer goes out.

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The longest the server reads a body nobody will use.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// The most it reads of one; past this the connection closes as before.
const LINGER_BYTES: usize = 256 << 20;

/// Middleware: run the request, then drain what its handler left unread.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = Arc::new(Mutex::new(Some(body)));
    let request = Request::from_parts(parts, Body::new(SharedBody(body.clone())));
    let response = next.run(request).await;
    let unread = body.lock().take();
    if let Some(unread) = unread.filter(|b| !b.is_end_stream()) {
        discard(unread).await;
    }
    response
}

async fn discard(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The request's body as the handler sees it, while the middleware keeps a
/// hold on it to drain what the handler leaves.
struct SharedBody(Arc<Mutex<Option<Body>>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.0.lock().as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
