//! Request and response bodies of the data plane: the request body shared by a request's
//! attempts (kept for retries up to a size limit, as Envoy's router keeps it), and a response
//! body that records metrics and the access log when the stream ends (so streams are never
//! buffered).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Bytes;
use tokio::time::Sleep;

use super::{BoxError, ProxyBody, Record};

/// A request body as its attempts share it. Each attempt's body ([`Kept::attempt`]) sends on what
/// the client sent so far, then reads on from the client; while the total stays within the limit
/// every frame is kept, so a retry can send it all again. Past the limit nothing more is kept and
/// the request can no longer be retried, whatever its timing: Envoy's router does the same with
/// its retry buffer (`Filter::decodeData` in envoy `source/common/router/router.cc`: "The request
/// is larger than we should buffer. Give up on the retry/shadow", the limit being the route's
/// `per_request_buffer_limit_bytes` or the listener's 1 MiB buffer limit).
#[derive(Clone)]
pub(crate) struct Kept {
    state: Arc<Mutex<KeptState>>,
    /// The request bytes read from the client (the spans' and access log's request size).
    bytes: Arc<AtomicU64>,
}

struct KeptState {
    source: ProxyBody,
    frames: Vec<Frame<Bytes>>,
    kept_bytes: usize,
    limit: usize,
    /// More than `limit` arrived: the frames are dropped and no retry may start.
    overflowed: bool,
    /// The client's body has ended (all of it is in `frames`, unless `overflowed`).
    ended: bool,
    /// Reading the client's body failed (it went away).
    failed: Option<String>,
    /// The current attempt; an earlier attempt's body that is still polled gets an error.
    generation: u64,
}

impl Kept {
    /// Keeps up to `limit` bytes of `source` (0: nothing, the request is not retriable).
    pub(crate) fn new(source: ProxyBody, limit: usize) -> Self {
        let ended = source.is_end_stream();
        Kept {
            state: Arc::new(Mutex::new(KeptState {
                source,
                frames: Vec::new(),
                kept_bytes: 0,
                limit,
                overflowed: false,
                ended,
                failed: None,
                generation: 0,
            })),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The body of the next attempt: all of the request from its start.
    pub(crate) fn attempt(&self) -> AttemptBody {
        let mut st = crate::lock(&self.state);
        st.generation += 1;
        AttemptBody {
            state: self.state.clone(),
            bytes: self.bytes.clone(),
            generation: st.generation,
            next: 0,
        }
    }

    /// Whether another attempt can still send the whole request.
    pub(crate) fn replayable(&self) -> bool {
        let st = crate::lock(&self.state);
        !st.overflowed && st.failed.is_none()
    }

    /// Why the client's body could not be read, if it could not.
    pub(crate) fn failed(&self) -> Option<String> {
        crate::lock(&self.state).failed.clone()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The running count of request bytes, for a record that outlives the request's head.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }
}

/// One attempt's request body (see [`Kept`]).
pub(crate) struct AttemptBody {
    state: Arc<Mutex<KeptState>>,
    bytes: Arc<AtomicU64>,
    generation: u64,
    /// The next kept frame to send.
    next: usize,
}

fn copy(f: &Frame<Bytes>) -> Frame<Bytes> {
    match f.data_ref() {
        Some(d) => Frame::data(d.clone()),
        None => Frame::trailers(f.trailers_ref().cloned().unwrap_or_default()),
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut guard = crate::lock(&this.state);
        let st = &mut *guard;
        if st.generation != this.generation {
            return Poll::Ready(Some(Err("the attempt was replaced by a retry".into())));
        }
        if let Some(f) = st.frames.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(copy(f))));
        }
        if st.ended || st.source.is_end_stream() {
            st.ended = true;
            return Poll::Ready(None);
        }
        match Pin::new(&mut st.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                st.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                st.failed = Some(crate::error_chain(e.as_ref()));
                st.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                this.bytes.fetch_add(len as u64, Ordering::Relaxed);
                if frame.is_trailers() {
                    st.ended = true;
                }
                if !st.overflowed {
                    if st.kept_bytes + len > st.limit {
                        st.overflowed = true;
                        st.frames = Vec::new();
                        this.next = 0;
                    } else {
                        st.kept_bytes += len;
                        st.frames.push(copy(&frame));
                        this.next += 1;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = crate::lock(&self.state);
        // The source's own end counts at once: hyper then sends the last DATA frame with
        // END_STREAM instead of an empty one after it, which a server that has already answered
        // and reset the stream would take as a protocol error.
        st.generation == self.generation && self.next >= st.frames.len() && (st.ended || st.source.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let st = crate::lock(&self.state);
        if st.generation != self.generation {
            return SizeHint::default();
        }
        if self.next == 0 && st.frames.is_empty() {
            return st.source.size_hint();
        }
        if st.ended && !st.overflowed {
            let left: usize = st.frames[self.next.min(st.frames.len())..]
                .iter()
                .filter_map(|f| f.data_ref())
                .map(Bytes::len)
                .sum();
            return SizeHint::with_exact(left as u64);
        }
        SizeHint::default()
    }
}

/// An upstream response body passed through frame by frame; the request is recorded when it ends
/// (trailers, end of stream, error, the route timeout, or the client going away).
pub(crate) struct Observed {
    inner: ProxyBody,
    deadline: Option<Pin<Box<Sleep>>>,
    record: Option<Record>,
    timed_out: bool,
}

impl Observed {
    pub(crate) fn new(inner: ProxyBody, record: Record, deadline: Option<tokio::time::Instant>) -> Self {
        Observed {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            record: Some(record),
            timed_out: false,
        }
    }

    fn finish(&mut self, trailers: Option<&http::HeaderMap>, flag: Option<&str>) {
        if let Some(r) = self.record.take() {
            r.done(trailers, flag);
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            this.timed_out = true;
            this.finish(None, Some("UT"));
            return Poll::Ready(Some(Err("upstream request timeout".into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(r)) = (frame.data_ref(), this.record.as_mut()) {
                    r.response_bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    this.finish(Some(t), None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(None, Some("UR"));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(None, None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // An empty body (a trailers-only gRPC answer) may never be polled: that is a normal end.
        let flag = (!self.inner.is_end_stream()).then_some("DC");
        self.finish(None, flag);
    }
}
