//! axum's extractors with the frontend's errors: [`Checked`] wraps `Json`, `Form`, `Path` or
//! `Query`, and whatever axum refuses becomes an [`AppError`] here, in one place, instead of
//! axum's plain-text 400/413/415/422. A body over `MAX_BODY_BYTES` is 413 naming the limit;
//! anything else the caller sent wrong is 400 with axum's reason (which names the field).
//!
//! The rejection is an [`ApiError`], so an API handler that takes `Checked<Json<T>>` answers the
//! API's JSON error by itself; a page handler takes `Result<Checked<Form<T>>, ApiError>` and
//! shows the error page instead.
//!
//! A refused body is still read, a bounded amount ([`linger`]), so that the client reads the 413
//! instead of a reset connection.

use std::{
    future::poll_fn,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{
        FromRequest, FromRequestParts, Request, State,
        rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, header, request::Parts},
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};

use crate::{
    errors::{ApiError, AppError},
    state::AppState,
};

/// `T`, extracted with the frontend's errors (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked<T>(pub T);

/// What the frontend needs of one of axum's rejections.
pub trait Refusal {
    fn status(&self) -> StatusCode;
    /// axum's reason, e.g. "Failed to deserialize the JSON body into the target type: items[0]:
    /// missing field `quantity`".
    fn body_text(&self) -> String;
}

macro_rules! refusal {
    ($($t:ty),* $(,)?) => {$(
        impl Refusal for $t {
            fn status(&self) -> StatusCode {
                <$t>::status(self)
            }
            fn body_text(&self) -> String {
                <$t>::body_text(self)
            }
        }
    )*};
}

refusal!(JsonRejection, FormRejection, PathRejection, QueryRejection);

/// The one mapping of a refused request to the frontend's error. `max_body_bytes` is the limit
/// the router's `DefaultBodyLimit` enforces: axum's rejection says only "length limit exceeded".
pub fn refused(r: &impl Refusal, max_body_bytes: usize) -> AppError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::payload_too_large(max_body_bytes)
    } else {
        AppError::bad_request(r.body_text())
    }
}

/// What both extractor impls answer a refusal with.
fn reject(r: &impl Refusal, state: &AppState) -> ApiError {
    ApiError(refused(r, state.max_body_bytes))
}

/// The body extractors (`Json`, `Form`).
impl<T> FromRequest<AppState> for Checked<T>
where
    T: FromRequest<AppState>,
    T::Rejection: Refusal,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        T::from_request(req, state)
            .await
            .map(Checked)
            .map_err(|r| reject(&r, state))
    }
}

/// The parts extractors (`Path`, `Query`).
impl<T> FromRequestParts<AppState> for Checked<T>
where
    T: FromRequestParts<AppState>,
    T::Rejection: Refusal,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        T::from_request_parts(parts, state)
            .await
            .map(Checked)
            .map_err(|r| reject(&r, state))
    }
}

/// How much of a body left unread by an answer is still read: `LINGER_MAX_BYTES`,
/// `LINGER_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Closing a connection whose client is still sending makes the kernel reset it, and a client
/// that sends its whole body before reading (Python's http.client, many scripts) then never sees
/// the answer. So after an answer that left the request body unread (a 413, or a refusal before
/// the body was read), up to `max_bytes` more of it are read and discarded within `timeout`
/// before the answer goes out, as nginx's lingering close does. A body whose Content-Length says
/// more is left is not read at all; neither is one the client has not started sending because it
/// waits for `100 Continue` (curl does for bodies over 1 MiB): the answer tells it not to.
pub async fn linger(State(l): State<Linger>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let waits_for_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let shared = Arc::new(Mutex::new(Unread { body, polled: false }));
    let res = next
        .run(Request::from_parts(parts, Body::new(SharedBody(shared.clone()))))
        .await;
    let Unread { body, polled } = std::mem::take(&mut *lock(&shared));
    if waits_for_continue && !polled {
        return res;
    }
    drain(body, l, res.status()).await;
    res
}

/// Reads `body` to its end, at most `l.max_bytes` of it within `l.timeout`.
async fn drain(mut body: Body, l: Linger, status: StatusCode) {
    if body.is_end_stream() || body.size_hint().upper().is_some_and(|left| left > l.max_bytes as u64) {
        return;
    }
    let mut read = 0usize;
    let finished = tokio::time::timeout(l.timeout, async {
        while read <= l.max_bytes {
            match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => return true,
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    tracing::debug!(
        status = status.as_u16(),
        read,
        finished,
        "read the rest of a request body the answer left unread"
    );
}

#[derive(Default)]
struct Unread {
    body: Body,
    /// Whether the handler started reading it (and so hyper sent `100 Continue`).
    polled: bool,
}

/// The request body, shared by the handler, which reads what it needs, and [`linger`], which
/// reads what it left.
struct SharedBody(Arc<Mutex<Unread>>);

fn lock(m: &Mutex<Unread>) -> MutexGuard<'_, Unread> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut unread = lock(&self.0);
        unread.polled = true;
        Pin::new(&mut unread.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0).body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.0).body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(StatusCode);

    impl Refusal for Fake {
        fn status(&self) -> StatusCode {
            self.0
        }
        fn body_text(&self) -> String {
            "Failed to deserialize the JSON body into the target type: items: missing field `items`".into()
        }
    }

    #[test]
    fn too_large_is_413_naming_the_limit_and_the_rest_is_400_with_axums_reason() {
        let e = refused(&Fake(StatusCode::PAYLOAD_TOO_LARGE), 64 << 10);
        assert_eq!(e.http_status(), 413);
        assert!(e.detail.contains("64 KiB (MAX_BODY_BYTES)"), "{}", e.detail);
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::UNPROCESSABLE_ENTITY,
        ] {
            let e = refused(&Fake(status), 64 << 10);
            assert_eq!(e.http_status(), 400, "{status}");
            assert!(e.detail.contains("missing field `items`"), "{}", e.detail);
        }
    }
}
