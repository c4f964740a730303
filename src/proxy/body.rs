//! The bodies keygate sends: to the upstream ([`RequestBody`]) and to the client
//! ([`ResponseBody`]).
//!
//! Both stream frame by frame: nothing is buffered unless keygate had to read the request body.
//! The request body enforces `server.max_body_bytes` as it streams, and fails when the client
//! goes quiet for `server.idle_timeout`. The response body relays the
//! upstream's frames as they arrive, gives up when the upstream goes quiet for its `timeout`,
//! and, when an SSE stream fails part way, ends it with one SSE `error` event in the route's
//! style instead of cutting it off. A [`Tap`] sees every data frame and the end of the stream,
//! which is where metering and the access log hook in. A response body read to its end hands
//! its HTTP/1.1 upstream connection back to the pool.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Full, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::error::{Code, sse_event};
use super::pool::Lease;
use crate::config::ErrorStyle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the upstream receives.
pub enum RequestBody {
    /// A body keygate read (and maybe changed), or an empty one.
    Full(Full<Bytes>),
    /// The client's body, streamed through.
    Stream(Box<Streamed>),
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody::Full(Full::new(Bytes::new()))
    }

    /// Streams `incoming` through, cut off past `max` bytes or when the client sends nothing
    /// for `idle`: a body that stalls must not hold a connection, its slot and an upstream
    /// connection until the upstream's timeout.
    pub fn streamed(incoming: Incoming, max: usize, idle: Duration) -> RequestBody {
        RequestBody::Stream(Box::new(Streamed {
            inner: Limited::new(incoming, max),
            idle,
            timer: None,
            waiting: false,
            failed: Arc::default(),
        }))
    }

    /// Where a streamed body records why it failed, for the forwarder to read once the
    /// upstream exchange has failed; `None` for a body that cannot fail. The error a body
    /// yields does not always come back with the failed exchange (hyper's HTTP/2 client only
    /// logs it and reports the stream as reset), so the body records it here as well.
    pub fn failure(&self) -> Option<Arc<OnceLock<BodyFault>>> {
        match self {
            RequestBody::Full(_) => None,
            RequestBody::Stream(b) => Some(Arc::clone(&b.failed)),
        }
    }
}

/// Why the client's body could not be sent: it went over `server.max_body_bytes`, or the
/// client stopped sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    TooLarge,
    Stalled,
}

/// The client stopped sending its body for longer than `server.idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than server.idle_timeout")]
pub struct BodyStalled;

/// A client's body on its way to the upstream.
pub struct Streamed {
    inner: Limited<Incoming>,
    idle: Duration,
    /// Armed the first time the client makes us wait (most bodies arrive in one go).
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    waiting: bool,
    /// Set when the body fails for one of the client's faults.
    failed: Arc<OnceLock<BodyFault>>,
}

impl Streamed {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.waiting = false;
            if let Some(Err(e)) = &frame
                && e.is::<http_body_util::LengthLimitError>()
            {
                let _ = self.failed.set(BodyFault::TooLarge);
            }
            return Poll::Ready(frame);
        }
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.idle;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let stalled = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if stalled {
            let _ = self.failed.set(BodyFault::Stalled);
            return Poll::Ready(Some(Err(Box::new(BodyStalled))));
        }
        Poll::Pending
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            RequestBody::Stream(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(b) => b.is_end_stream(),
            RequestBody::Stream(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(b) => b.size_hint(),
            RequestBody::Stream(b) => b.inner.size_hint(),
        }
    }
}

/// Observes a relayed response: each data frame, then how the stream ended (also when the
/// client went away mid-stream). It may hold back or cut out data: what it returns is what the
/// client receives.
pub trait Tap: Send + 'static {
    /// Sees a data frame; returns what to pass on now (`None`: nothing yet).
    fn data(&mut self, chunk: Bytes) -> Option<Bytes>;
    /// The stream ended; returns anything held back, to pass on last.
    fn end(&mut self, outcome: StreamEnd) -> Option<Bytes>;
}

/// How a relayed response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Complete,
    /// The upstream failed or went quiet mid-stream.
    UpstreamFailed,
    /// The client went away before the end.
    ClientGone,
}

/// What the client receives.
pub enum ResponseBody {
    Full(Full<Bytes>),
    Upstream(Box<Relay>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }
}

/// An upstream response body being relayed.
pub struct Relay {
    inner: Incoming,
    /// Longest wait for the next frame.
    idle: Duration,
    /// Armed the first time the upstream makes us wait: a body that arrives in one go (most
    /// JSON answers) never pays for a timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// SSE streams end with an error event on failure; other bodies end with an error.
    sse: bool,
    /// The tap may change the body's length, so the upstream's size is no guide.
    resized: bool,
    style: ErrorStyle,
    request_id: Arc<str>,
    tap: Option<Box<dyn Tap>>,
    /// The upstream connection, returned to its pool when the body has been read to the end.
    lease: Option<Lease>,
    state: RelayState,
}

enum RelayState {
    Streaming,
    Done,
}

impl Relay {
    pub fn new(
        inner: Incoming,
        idle: Duration,
        sse: bool,
        resized: bool,
        style: ErrorStyle,
        request_id: Arc<str>,
        tap: Option<Box<dyn Tap>>,
    ) -> Relay {
        Relay {
            inner,
            idle,
            timer: None,
            sse,
            resized,
            style,
            request_id,
            tap,
            lease: None,
            state: RelayState::Streaming,
        }
    }

    /// Returns `lease` to its pool once the upstream's body has been read to its end.
    pub fn return_on_end(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    fn finish(&mut self, outcome: StreamEnd) -> Option<Bytes> {
        if outcome == StreamEnd::Complete
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
        self.tap.take().and_then(|mut tap| tap.end(outcome))
    }

    /// The upstream failed mid-stream: end an SSE stream with an error event, anything else
    /// with an error (which resets the client's stream or connection).
    fn fail(&mut self, code: Code, cause: &str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!(request_id = %self.request_id, cause, "upstream failed mid-stream");
        // Anything held back is an unfinished event: it is dropped, not sent half.
        let _ = self.finish(StreamEnd::UpstreamFailed);
        self.state = RelayState::Done;
        if self.sse {
            let event = sse_event(self.style, code, code.default_message(), &self.request_id);
            Poll::Ready(Some(Ok(Frame::data(event))))
        } else {
            Poll::Ready(Some(Err(
                format!("upstream failed mid-body: {cause}").into()
            )))
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ResponseBody::Upstream(relay) => relay.poll_relay(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_end_stream(),
            ResponseBody::Upstream(relay) => matches!(relay.state, RelayState::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Upstream(relay) if relay.resized => SizeHint::default(),
            ResponseBody::Upstream(relay) => relay.inner.size_hint(),
        }
    }
}

impl Relay {
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if matches!(self.state, RelayState::Done) {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(timer) = self.timer.as_mut() {
                        timer.as_mut().reset(Instant::now() + self.idle);
                    }
                    let frame = match (frame.into_data(), self.tap.as_mut()) {
                        (Ok(data), Some(tap)) => tap.data(data).map(Frame::data),
                        (Ok(data), None) => Some(Frame::data(data)),
                        (Err(other), _) => Some(other),
                    };
                    // A body of known length is over with its last byte, and hyper may never
                    // poll it again: end it here, so the tap learns it was complete.
                    let rest = if self.inner.is_end_stream() {
                        self.state = RelayState::Done;
                        self.finish(StreamEnd::Complete)
                    } else {
                        None
                    };
                    match (frame, rest) {
                        (Some(f), None) => return Poll::Ready(Some(Ok(f))),
                        (None, Some(r)) => return Poll::Ready(Some(Ok(Frame::data(r)))),
                        (Some(f), Some(r)) => {
                            let mut both = f.into_data().map(Vec::from).unwrap_or_default();
                            both.extend_from_slice(&r);
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(both)))));
                        }
                        // Held back (an unfinished event) and not the end: read on.
                        (None, None) => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.fail(Code::UpstreamError, &e.to_string()),
                Poll::Ready(None) => {
                    self.state = RelayState::Done;
                    return match self.finish(StreamEnd::Complete) {
                        Some(rest) => Poll::Ready(Some(Ok(Frame::data(rest)))),
                        None => Poll::Ready(None),
                    };
                }
                Poll::Pending => {
                    let idle = self.idle;
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    ready!(timer.as_mut().poll(cx));
                    return self.fail(Code::UpstreamTimeout, "no data within the upstream timeout");
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A body hyper never polled because it was empty still frees its connection.
        if self.inner.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
        // The client went away before the end: the tap still learns how far the stream got.
        let _ = self.finish(StreamEnd::ClientGone);
    }
}
