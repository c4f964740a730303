//! Prometheus metrics, served as text on `GET /metrics` of the admin socket and, when
//! `[metrics] addr` is set, on a plain-HTTP listener of their own.
//!
//! Counters are updated where things happen (the data plane, reloads, the flusher); gauges that
//! are cheap to compute from state (active keys, uptime, config generation, flush backlog) are
//! read when the page is rendered. Labels come from config (route paths, upstream names) or
//! fixed sets (status codes, error codes), never from request input, so cardinality is bounded.
//! No label or value ever holds a secret.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Upstream latency buckets (seconds): from a local model's milliseconds to a long generation.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Every metric keygate keeps.
pub struct Metrics {
    registry: Registry,
    /// Data-plane requests by route, status and upstream (`-` where there is none).
    pub requests: IntCounterVec,
    /// Refused authentications by code.
    pub auth_failures: IntCounterVec,
    /// Time from sending a request upstream to its response headers.
    pub upstream_latency: HistogramVec,
    /// Config reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// Usage flushes by result, read from the flusher's stats at render.
    flushes: IntCounterVec,
    active_keys: IntGauge,
    accounts: IntGauge,
    generation: IntGauge,
    uptime: IntGauge,
    flush_failing: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_latency_seconds",
                "Time from forwarding a request to the upstream's response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("metric names are valid");
        r.register(Box::new(upstream_latency.clone()))
            .expect("each metric is registered once");
        Metrics {
            requests: counter(
                &r,
                "keygate_requests_total",
                "Data-plane requests answered, by route, status and upstream",
                &["route", "status", "upstream"],
            ),
            auth_failures: counter(
                &r,
                "keygate_auth_failures_total",
                "Requests refused at authentication, by code",
                &["code"],
            ),
            upstream_latency,
            reloads: counter(
                &r,
                "keygate_config_reloads_total",
                "Config reloads by result",
                &["result"],
            ),
            flushes: counter(
                &r,
                "keygate_usage_flushes_total",
                "Usage flushes by result",
                &["result"],
            ),
            active_keys: gauge(
                &r,
                "keygate_active_keys",
                "Key secrets the data plane accepts now",
            ),
            accounts: gauge(&r, "keygate_accounts", "Accounts known to the data plane"),
            generation: gauge(
                &r,
                "keygate_config_generation",
                "Generation of the config in force",
            ),
            uptime: gauge(
                &r,
                "keygate_uptime_seconds",
                "Seconds since keygate started",
            ),
            flush_failing: gauge(
                &r,
                "keygate_usage_flush_failures_in_a_row",
                "Consecutive failed usage flushes (0 when healthy)",
            ),
            registry: r,
        }
    }

    /// The Prometheus text page, with the gauges read from `app` now.
    pub fn render(&self, app: &crate::app::App) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        self.active_keys.set(app.keyring.len() as i64);
        self.accounts.set(app.keyring.account_count() as i64);
        self.generation.set(app.generation() as i64);
        self.uptime.set(app.uptime_ms() / 1000);
        let stats = &app.flush_stats;
        self.flush_failing.set(stats.failing.load(Relaxed) as i64);
        for (result, n) in [
            ("ok", stats.ok.load(Relaxed)),
            ("error", stats.failed.load(Relaxed)),
        ] {
            let c = self.flushes.with_label_values(&[result]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The `content-type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` (and nothing else) on a plain-HTTP listener until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: std::sync::Arc<crate::app::App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    let mut backoff = crate::net::Backoff::new();
    loop {
        let stream = tokio::select! {
            _ = crate::net::stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => { backoff.reset(); s }
                Err(e) => { backoff.wait("metrics", &e).await; continue; }
            },
        };
        let app = std::sync::Arc::clone(&app);
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let app = std::sync::Arc::clone(&app);
                async move {
                    let mut resp = if req.uri().path() == "/metrics"
                        && req.method() == http::Method::GET
                    {
                        let mut r = http::Response::new(Full::new(bytes::Bytes::from(
                            app.metrics.render(&app),
                        )));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(CONTENT_TYPE),
                        );
                        r
                    } else {
                        http::Response::new(Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    if req.uri().path() != "/metrics" || req.method() != http::Method::GET {
                        *resp.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, service)
                .await;
        });
    }
}
