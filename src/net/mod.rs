//! Sockets: the admin Unix socket with its peer checks (`unix`), the data-plane listeners
//! (`tcp`, `tls`) and the threads that serve them (`workers`), and what every accept loop
//! shares, such as backing off on accept errors instead of exiting or spinning.

pub mod idle;
pub mod tcp;
pub mod tls;
pub mod unix;
pub mod workers;

use std::time::Duration;

/// Exponential back-off for accept loops: errors such as `EMFILE` are transient, and retrying at
/// once would spin a core while the condition lasts.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// 5 ms first: long enough for a closing connection to free its descriptor.
    const FIRST: Duration = Duration::from_millis(5);
    /// 1 s at most: a recovered listener resumes serving within a second.
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// Forget past errors after a successful accept.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Logs `error` and sleeps for the current delay, doubling it for next time.
    pub async fn wait(&mut self, listener: &str, error: &std::io::Error) {
        tracing::warn!(listener, error = %error, delay_ms = self.next.as_millis() as u64, "accept failed; backing off");
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let err = std::io::Error::other("EMFILE");
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            b.wait("test", &err).await;
        }
        // 5+10+20+40+80+160+320+640+1000+1000 ms
        assert_eq!(start.elapsed(), Duration::from_millis(3275));
        b.reset();
        let t = tokio::time::Instant::now();
        b.wait("test", &err).await;
        assert_eq!(t.elapsed(), Duration::from_millis(5));
    }
}
