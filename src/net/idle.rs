//! Closing connections that sit idle: no request in flight for `server.idle_timeout`.
//!
//! The service counts requests in and out; a response body holds its count until it has
//! been sent (or dropped), so a long stream keeps its connection open however quiet it is. A
//! watchdog per connection wakes at the idle deadline and, if nothing is in flight and nothing
//! happened since, ends the connection. (On HTTP/1, hyper's header-read timeout also bounds the
//! wait for the next request, so the shorter of the two applies there.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Activity of one connection.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` of the last request start or end.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// A request started; the returned guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// Resolves once the connection has had nothing in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            tokio::time::sleep_until(last + idle).await;
            let quiet = self.origin.elapsed()
                >= Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + idle;
            if quiet && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again one idle period from now.
                self.touch();
            }
        }
    }
}

/// One request in flight; ends it when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let a = Activity::new();
        let idle = Duration::from_secs(60);
        let guard = a.begin();
        let watchdog = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.idle_for(idle).await }
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(
            !watchdog.is_finished(),
            "a request in flight keeps the connection"
        );
        drop(guard);
        let ended = Instant::now();
        watchdog.await.unwrap();
        assert_eq!(ended.elapsed(), idle);
    }
}
