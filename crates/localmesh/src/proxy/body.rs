//! Request and response bodies of the data plane: a buffered request body that can be replayed
//! for retries, a streaming one with the frames already read in front, and a response body that
//! records metrics and the access log when the stream ends (so streams are never buffered).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use tokio::time::Sleep;

use super::{BoxError, Record};

/// A request body read to its end: replayed once per attempt.
#[derive(Debug)]
pub(crate) struct Replay(VecDeque<Frame<Bytes>>);

impl Replay {
    pub(crate) fn new(frames: &[Frame<Bytes>]) -> Self {
        Replay(
            frames
                .iter()
                .filter_map(|f| {
                    if let Some(d) = f.data_ref() {
                        Some(Frame::data(d.clone()))
                    } else {
                        f.trailers_ref().map(|t| Frame::trailers(t.clone()))
                    }
                })
                .collect(),
        )
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A streaming request body: the frames read while deciding whether it could be buffered, then
/// the rest as it arrives, counted (for the spans' `request_size`) when a counter is attached.
#[derive(Debug)]
pub(crate) struct Prefixed {
    pub(crate) prefix: VecDeque<Frame<Bytes>>,
    pub(crate) rest: Incoming,
    pub(crate) counter: Option<Arc<AtomicU64>>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match self.prefix.pop_front() {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None => Pin::new(&mut self.rest).poll_frame(cx).map_err(Into::into),
        };
        if let (Some(c), Poll::Ready(Some(Ok(f)))) = (&self.counter, &frame)
            && let Some(d) = f.data_ref()
        {
            c.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

/// An upstream response body passed through frame by frame; the request is recorded when it ends
/// (trailers, end of stream, error, the route timeout, or the client going away).
pub(crate) struct Observed {
    inner: Incoming,
    deadline: Option<Pin<Box<Sleep>>>,
    record: Option<Record>,
    timed_out: bool,
}

impl Observed {
    pub(crate) fn new(inner: Incoming, record: Record, deadline: Option<tokio::time::Instant>) -> Self {
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
                Poll::Ready(Some(Err(e.into())))
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
