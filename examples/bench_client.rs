//! The latency client of the benchmark harness (`bench/run.sh`), for what wrk and h2load cannot
//! do: requests at a fixed rate (h2load's `--rate` paces connections, not requests, and wrk has
//! no rate at all), exact percentiles at one connection, and SSE timings. Throughput is measured
//! with wrk and h2load instead.
//!
//! ```text
//! bench_client seq  URL [--h2] [--ca PEM] [--key KEY] [--duration S] [--warmup S]
//! bench_client rate URL --rate N [--conns C] [same options]
//! bench_client sse  URL [same options]
//! ```
//!
//! - `seq`: one connection, one request after another; latency of each.
//! - `rate`: N requests a second, sent on schedule whatever the answers do (open loop), paced
//!   by an OS thread (tokio's timer has a 1 ms grain, too coarse at 5k/s). HTTP/1.1 spreads
//!   them over C connections (default 32, opened beforehand), a request waiting for a free one;
//!   HTTP/2 multiplexes one connection. Latency runs from the moment the runtime picks a
//!   request up (the wait for a free connection included) to its last body byte.
//! - `sse`: one connection, streaming requests one after another; the time to the first body
//!   byte of each, and each event's transit: its arrival here minus the `bench_sent_us` the
//!   upstream wrote into it (same machine, same clock).
//!
//! Every request is the same small chat completion with `Authorization: Bearer KEY`, sent to
//! all arms alike. A non-200 answer or a failed request is an error; the output is one JSON
//! line with counts and percentiles in microseconds.

use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::net::TcpStream;

const PATH: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"stream":true,"stream_options":{"include_usage":true}}"#;

struct Options {
    mode: String,
    uri: Uri,
    h2: bool,
    tls: Option<tokio_rustls::TlsConnector>,
    key: Option<String>,
    duration: Duration,
    warmup: Duration,
    rate: u32,
    /// HTTP/1.1 connections of a fixed-rate run.
    conns: usize,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context("missing MODE (seq, rate or sse)")?;
    let uri: Uri = args.next().context("missing URL")?.parse()?;
    let (mut h2, mut ca, mut key, mut duration, mut warmup, mut rate, mut conns) =
        (false, None, None, 5.0, 1.0, 0, 32);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--h2" => h2 = true,
            "--ca" => ca = Some(value()?),
            "--key" => key = Some(value()?),
            "--duration" => duration = value()?.parse()?,
            "--warmup" => warmup = value()?.parse()?,
            "--rate" => rate = value()?.parse()?,
            "--conns" => conns = value()?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    let tls = match uri.scheme_str() {
        Some("https") => Some(tls_connector(ca.as_deref(), h2)?),
        Some("http") => None,
        _ => bail!("URL must be http:// or https://"),
    };
    if mode == "rate" && rate == 0 {
        bail!("rate mode needs --rate N");
    }
    Ok(Options {
        mode,
        uri,
        h2,
        tls,
        key,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        rate,
        conns,
    })
}

fn tls_connector(ca: Option<&str>, h2: bool) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = ca.context("https:// needs --ca PEM")?;
    let file = std::fs::File::open(ca).with_context(|| format!("open {ca}"))?;
    for cert in CertificateDer::pem_reader_iter(&mut BufReader::new(file)) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One client connection.
#[derive(Clone)]
enum Conn {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(o: &Options) -> anyhow::Result<Conn> {
    // An IPv6 literal comes with its brackets, which neither connect nor TLS names take.
    let host = o
        .uri
        .host()
        .context("URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = o
        .uri
        .port_u16()
        .unwrap_or(if o.tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    match &o.tls {
        None => handshake(TokioIo::new(tcp), o.h2).await,
        Some(tls) => {
            let name = ServerName::try_from(host.to_owned())?;
            let stream = tls.connect(name, tcp).await?;
            handshake(TokioIo::new(stream), o.h2).await
        }
    }
}

async fn handshake<I>(io: I, h2: bool) -> anyhow::Result<Conn>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Conn::H1(Arc::new(tokio::sync::Mutex::new(send))))
    }
}

fn request(o: &Options, body: &'static str) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::post(if o.h2 {
        o.uri.clone()
    } else {
        Uri::from_static(PATH)
    })
    .header(header::CONTENT_TYPE, "application/json");
    if !o.h2 {
        builder = builder.header(
            header::HOST,
            o.uri.authority().context("URL has no host")?.as_str(),
        );
    }
    if let Some(key) = &o.key {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    Ok(builder.body(Full::new(Bytes::from_static(body.as_bytes())))?)
}

impl Conn {
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        Ok(match self {
            Conn::H1(send) => {
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(req).await?
            }
            Conn::H2(send) => {
                let mut send = send.clone();
                send.ready().await?;
                send.send_request(req).await?
            }
        })
    }

    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(send) => send.try_lock().map(|s| s.is_closed()).unwrap_or(false),
            Conn::H2(send) => send.is_closed(),
        }
    }
}

/// Sends one request and reads its whole answer; `Ok` only for a 200.
async fn exchange(conn: &Conn, req: Request<Full<Bytes>>) -> anyhow::Result<()> {
    let resp = conn.send(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if status != StatusCode::OK {
        bail!("status {status}");
    }
    Ok(())
}

/// Latency samples in nanoseconds, and failures.
#[derive(Default)]
struct Samples {
    ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn record(&mut self, result: anyhow::Result<()>, took: Duration) {
        match result {
            Ok(()) => self.ns.push(took.as_nanos() as u64),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn summary(&mut self) -> serde_json::Value {
        self.ns.sort_unstable();
        let q = |q: f64| -> Option<f64> {
            if self.ns.is_empty() {
                return None;
            }
            let rank = ((q * self.ns.len() as f64).ceil() as usize).clamp(1, self.ns.len());
            Some(self.ns[rank - 1] as f64 / 1000.0)
        };
        json!({
            "count": self.ns.len(),
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_us": q(0.50),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": q(1.0),
        })
    }
}

async fn seq(o: &Options) -> anyhow::Result<serde_json::Value> {
    let conn = connect(o).await?;
    let mut samples = Samples::default();
    let start = Instant::now();
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        let result = exchange(&conn, request(o, BODY)?).await;
        if t >= measure_from {
            samples.record(result, t.elapsed());
        } else {
            result?;
        }
        if conn.is_closed() {
            bail!("the server closed the connection");
        }
    }
    let mut out = samples.summary();
    out["rps"] = json!(samples.ns.len() as f64 / o.duration.as_secs_f64());
    Ok(out)
}

/// The connections of a fixed-rate run: a request waits for a free one (HTTP/1.1), or all share
/// the one (HTTP/2).
struct Pool {
    free: Mutex<Vec<Conn>>,
    /// One permit per connection in `free`.
    permits: tokio::sync::Semaphore,
}

async fn rate(o: Arc<Options>) -> anyhow::Result<serde_json::Value> {
    let pool = Arc::new(Pool {
        free: Mutex::new(Vec::new()),
        permits: tokio::sync::Semaphore::new(0),
    });
    // All connections are opened before the first request: opening them on demand lets a
    // stall turn into a storm of TLS handshakes on two cores.
    let conns = if o.h2 { 1 } else { o.conns };
    for _ in 0..conns {
        let conn = connect(&o).await?;
        pool.free.lock().unwrap().push(conn);
        pool.permits.add_permits(1);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let period = Duration::from_secs_f64(1.0 / f64::from(o.rate));
    let warm = (o.warmup.as_secs_f64() * f64::from(o.rate)) as u64;
    let total = warm + (o.duration.as_secs_f64() * f64::from(o.rate)) as u64;
    let late = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pacer_late = Arc::clone(&late);
    std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            let due = start + period * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(1) {
                pacer_late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if tx.send(i >= warm).is_err() {
                return;
            }
        }
    });
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut measured_from = None;
    while let Some(measured) = rx.recv().await {
        if measured && measured_from.is_none() {
            measured_from = Some(Instant::now());
        }
        let (o, pool, samples) = (Arc::clone(&o), Arc::clone(&pool), Arc::clone(&samples));
        tasks.spawn(async move {
            // From here on the request is late by the server's fault: waiting for a free
            // connection counts.
            let t = Instant::now();
            // HTTP/2 streams share the connection; an HTTP/1.1 request needs one to itself.
            let permit = if o.h2 {
                None
            } else {
                match pool.permits.acquire().await {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                }
            };
            let conn = {
                let mut free = pool.free.lock().unwrap();
                if o.h2 {
                    free[0].clone()
                } else {
                    free.pop().expect("a permit per connection")
                }
            };
            let result = match request(&o, BODY) {
                Ok(req) => exchange(&conn, req).await,
                Err(e) => Err(e),
            };
            let took = t.elapsed();
            let broken = conn.is_closed();
            if measured {
                samples.lock().unwrap().record(result, took);
            }
            let conn = if broken {
                connect(&o).await.ok()
            } else {
                Some(conn)
            };
            match conn {
                Some(conn) if !o.h2 => pool.free.lock().unwrap().push(conn),
                Some(conn) => pool.free.lock().unwrap()[0] = conn,
                // Could not reconnect: one connection fewer from now on.
                None => {
                    if let Some(permit) = permit {
                        permit.forget();
                    }
                    return;
                }
            }
            drop(permit);
        });
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = measured_from.map_or(Duration::ZERO, |t| t.elapsed());
    let mut samples = samples.lock().unwrap();
    let mut out = samples.summary();
    out["rps"] = json!(samples.ns.len() as f64 / elapsed.as_secs_f64().max(1e-9));
    out["target_rps"] = json!(o.rate);
    out["late_sends"] = json!(late.load(std::sync::atomic::Ordering::Relaxed));
    out["connections"] = json!(conns);
    out["wall_s"] = json!(started.elapsed().as_secs_f64());
    Ok(out)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

async fn sse(o: &Options) -> anyhow::Result<serde_json::Value> {
    let conn = connect(o).await?;
    let mut ttfb = Samples::default();
    let mut transit = Samples::default();
    let (mut streams, mut events) = (0u64, 0u64);
    let start = Instant::now();
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    while Instant::now() < end {
        let measured = Instant::now() >= measure_from;
        let t = Instant::now();
        let resp = conn.send(request(o, STREAM_BODY)?).await?;
        if resp.status() != StatusCode::OK {
            bail!("status {}", resp.status());
        }
        let mut body = resp.into_body();
        let mut first = true;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let now_us = unix_us();
            if first {
                first = false;
                if measured {
                    ttfb.record(Ok(()), t.elapsed());
                }
            }
            pending.extend_from_slice(&data);
            // Whole events only: an event cut between frames waits for its end.
            while let Some(end) = memchr::memmem::find(&pending, b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                if let Some(sent) = sent_us(&event)
                    && measured
                {
                    events += 1;
                    transit.record(Ok(()), Duration::from_micros(now_us.saturating_sub(sent)));
                }
            }
        }
        if measured {
            streams += 1;
        }
    }
    Ok(json!({
        "streams": streams,
        "events": events,
        "ttfb": ttfb.summary(),
        "event_transit": transit.summary(),
    }))
}

/// The `bench_sent_us` stamp of an SSE event, if it has one.
fn sent_us(event: &[u8]) -> Option<u64> {
    const TAG: &[u8] = b"\"bench_sent_us\":";
    let at = memchr::memmem::find(event, TAG)? + TAG.len();
    let digits = event[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn main() -> anyhow::Result<()> {
    let o = Arc::new(parse_args()?);
    // One thread: the least CPU taken from the servers under test, and no cross-thread hops.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(async {
        match o.mode.as_str() {
            "seq" => seq(&o).await,
            "rate" => rate(Arc::clone(&o)).await,
            "sse" => sse(&o).await,
            other => bail!("unknown mode {other}"),
        }
    })?;
    println!("{out}");
    Ok(())
}
