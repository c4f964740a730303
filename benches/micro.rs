//! Micro-benchmarks of the data plane's per-request work (issue 7), with divan:
//!
//! - key verification: parse + checksum, blake3, and the lookup in a [`Keyring`] of 1M keys;
//! - the policy check: stages 1 and 2 of `proxy::pipeline` on a typical config;
//! - the rate-limit take: one `Bucket::take`, and the whole stage 3 (`pipeline::limit`);
//! - the SSE usage parser, per MB of an OpenAI stream fed in realistic frame sizes;
//! - reading `usage` from a whole JSON response, by the size of its reply text.
//!
//! ```sh
//! cargo bench --bench micro
//! ```
//!
//! `cargo test --all-targets` also runs this file, each benchmark once and unoptimised: without
//! `--bench` on the command line the keyring holds [`TEST_KEYS`] keys instead of a million, so
//! that the test run stays quick.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use http::Method;
use keygate::config::Snapshot;
use keygate::keyring::{KeyState, Keyring};
use keygate::keys::{self, KeyHash};
use keygate::limits::{Bucket, Params};
use keygate::proxy::pipeline::{self, Mode};
use keygate::store::{KeyRecord, LimitsRecord, RateRecord};
use keygate::usage::parse::{Format, UsageReader};

fn main() {
    divan::main();
}

/// Keys in the ring under `cargo bench`.
const BENCH_KEYS: usize = 1_000_000;
/// Keys in the ring when `cargo test` runs this file once.
const TEST_KEYS: usize = 1_000;
/// Real keys spread through the ring, presented in turn so that lookups miss the cache as
/// they would with many clients.
const PRESENTED: usize = 4_096;
/// A fixed "now" in Unix ms: no key here expires.
const NOW_MS: i64 = 1_750_000_000_000;

/// A typical config: the routes of `config.example.toml`.
const CONFIG: &str = r#"
[server]
state_dir = "/nonexistent/keygate-bench"
[admin]
socket = "/nonexistent/keygate-bench/admin.sock"
[upstreams.openai]
base_url = "https://api.openai.com"
[upstreams.anthropic]
base_url = "https://api.anthropic.com"
auth = "x-api-key"
headers = { "anthropic-version" = "2023-06-01" }
[[routes]]
path = "/v1/messages"
upstream = "anthropic"
errors = "anthropic"
[[routes]]
path = "/v1/models"
methods = ["GET"]
upstream = "openai"
scope = "read"
[[routes]]
path = "/v1/"
upstream = "openai"
"#;

struct Fixture {
    keyring: Keyring,
    /// Secrets of keys in the ring.
    present: Secrets,
    /// Well-formed secrets (valid checksum) of no key in the ring.
    unknown: Secrets,
    /// Secrets whose checksum is wrong.
    bad_checksum: Secrets,
    config: Snapshot,
    route_order: Vec<usize>,
    /// A key with allowed origins, IPs and models, for the restricted policy check.
    restricted: Arc<KeyState>,
}

/// Secrets of one length stored back to back in one buffer. A presented key sits in a request
/// buffer that was just read, so in cache; strings allocated while a million keyring entries
/// were would each miss it, and the benchmark would time the miss (about 200 ns here).
struct Secrets {
    all: String,
    len: usize,
}

impl Secrets {
    fn new(keys: &[String]) -> Secrets {
        let len = keys[0].len();
        assert!(keys.iter().all(|k| k.len() == len));
        Secrets {
            all: keys.concat(),
            len,
        }
    }

    fn count(&self) -> usize {
        self.all.len() / self.len
    }

    fn get(&self, i: usize) -> &str {
        &self.all[i * self.len..(i + 1) * self.len]
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.count()).map(|i| self.get(i))
    }
}

fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// splitmix64: fast, good enough to make distinct synthetic hashes.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn record(j: usize, hash: [u8; 32]) -> KeyRecord {
    KeyRecord {
        id: format!("key_{j:016}"),
        account: format!("acct-{}", j % 10_000),
        name: String::new(),
        hash,
        previous: None,
        key_prefix: "sk-kg-bench".into(),
        scopes: 3,
        is_active: true,
        primary: false,
        created_at_ms: NOW_MS - 1,
        expires_at_ms: None,
        revoked_at_ms: None,
        allowed_origins: Vec::new(),
        allowed_ips: Vec::new(),
        allowed_models: Vec::new(),
        limits: LimitsRecord {
            rate_limit: Some(RateRecord {
                amount: 100_000_000,
                interval_ms: 1_000,
            }),
            ..LimitsRecord::default()
        },
        metadata: "{}".into(),
    }
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let n = if benching() { BENCH_KEYS } else { TEST_KEYS };
    let keyring = Keyring::new();
    let presented = PRESENTED.min(n);
    let mut present = Vec::with_capacity(presented);
    let mut rng = 0x006b_6579_6761_7465_u64;
    for j in 0..n {
        let hash = if j % (n / presented) == 0 && present.len() < presented {
            let new = keys::generate("sk-kg-").expect("OS randomness");
            present.push(new.secret.expose().to_owned());
            new.hash.0
        } else {
            let mut h = [0u8; 32];
            for chunk in h.chunks_mut(8) {
                chunk.copy_from_slice(&splitmix(&mut rng).to_le_bytes());
            }
            h
        };
        keyring
            .apply(None, &record(j, hash))
            .expect("a valid record");
    }
    let unknown = (0..PRESENTED)
        .map(|_| keys::generate("sk-kg-").map(|k| k.secret.expose().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .expect("OS randomness");
    let bad_checksum: Vec<String> = present
        .iter()
        .map(|k| {
            let last = if k.ends_with('x') { 'y' } else { 'x' };
            format!("{}{last}", &k[..k.len() - 1])
        })
        .collect();
    let restricted_key = keys::generate("sk-kg-").expect("OS randomness");
    let mut restricted = record(n, restricted_key.hash.0);
    restricted.allowed_origins = vec!["*.acme.example".into(), "app.example.com".into()];
    restricted.allowed_ips = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
    restricted.allowed_models = vec!["gpt-4o*".into(), "o1*".into()];
    keyring
        .apply(None, &restricted)
        .expect("a valid restricted record");
    let restricted = keyring
        .find(&restricted_key.hash, NOW_MS)
        .expect("the restricted key");
    let config = Snapshot::parse(CONFIG, std::path::Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    let route_order = keygate::proxy::route::order(&config.routes);
    Fixture {
        keyring,
        present: Secrets::new(&present),
        unknown: Secrets::new(&unknown),
        bad_checksum: Secrets::new(&bad_checksum),
        config,
        route_order,
        restricted,
    }
});

/// The next of `items` in turn.
fn cycle<'a, T>(items: &'a [T], i: &mut usize) -> &'a T {
    *i = (*i + 1) % items.len();
    &items[*i]
}

/// The next secret of `keys` in turn.
fn next<'a>(keys: &'a Secrets, i: &mut usize) -> &'a str {
    *i = (*i + 1) % keys.count();
    keys.get(*i)
}

fn verify(f: &Fixture, key: &str) -> Option<Arc<KeyState>> {
    keys::parse(key)
        .ok()
        .and_then(|parsed| f.keyring.find(&parsed.hash(), NOW_MS))
}

mod verify {
    use super::*;

    /// What the data plane does with a presented key: parse + checksum, blake3, lookup.
    #[divan::bench]
    fn known_key(bencher: Bencher) {
        let f = &*FIXTURE;
        assert!(f.present.iter().all(|k| verify(f, k).is_some()));
        let mut i = 0;
        bencher.bench_local(|| verify(f, black_box(next(&f.present, &mut i))));
    }

    #[divan::bench]
    fn unknown_key(bencher: Bencher) {
        let f = &*FIXTURE;
        let mut i = 0;
        bencher.bench_local(|| verify(f, black_box(next(&f.unknown, &mut i))));
    }

    #[divan::bench]
    fn bad_checksum(bencher: Bencher) {
        let f = &*FIXTURE;
        assert!(f.bad_checksum.iter().all(|k| keys::parse(k).is_err()));
        let mut i = 0;
        bencher.bench_local(|| verify(f, black_box(next(&f.bad_checksum, &mut i))));
    }

    /// The parts: parse and checksum only.
    #[divan::bench]
    fn parse_only(bencher: Bencher) {
        let f = &*FIXTURE;
        let mut i = 0;
        bencher.bench_local(|| keys::parse(black_box(next(&f.present, &mut i))).is_ok());
    }

    /// blake3 of a whole key only.
    #[divan::bench]
    fn hash_only(bencher: Bencher) {
        let f = &*FIXTURE;
        let mut i = 0;
        bencher.bench_local(|| keys::hash(black_box(next(&f.present, &mut i))));
    }

    /// The map lookup only, hashes computed beforehand.
    #[divan::bench]
    fn lookup_only(bencher: Bencher) {
        let f = &*FIXTURE;
        let hashes: Vec<KeyHash> = f.present.iter().map(keys::hash).collect();
        let mut i = 0;
        bencher.bench_local(|| {
            f.keyring
                .find(black_box(cycle(&hashes, &mut i)), NOW_MS)
                .is_some()
        });
    }
}

mod policy {
    use super::*;

    fn check(f: &Fixture, key: &KeyState, origin: Option<&str>) -> bool {
        let policy = key.policy();
        pipeline::before_body(
            &policy,
            NOW_MS,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            origin,
        )
        .is_ok()
            && pipeline::route_request(
                &f.config,
                &f.route_order,
                &policy,
                &Method::POST,
                "/v1/chat/completions",
                Some("gpt-4o-mini"),
                None,
            )
            .is_ok()
    }

    /// Stages 1 and 2 for a key without allow-lists: status, IP, origin, route, scope, model.
    #[divan::bench]
    fn typical_key(bencher: Bencher) {
        let f = &*FIXTURE;
        let key = verify(f, f.present.get(0)).expect("a present key");
        assert!(check(f, &key, None));
        bencher.bench_local(|| check(f, black_box(&key), black_box(None)));
    }

    /// The same for a key with allowed origins, IPs and models, from a browser origin.
    #[divan::bench]
    fn restricted_key(bencher: Bencher) {
        let f = &*FIXTURE;
        let origin = Some("https://app.acme.example");
        assert!(check(f, &f.restricted, origin));
        bencher.bench_local(|| check(f, black_box(&f.restricted), black_box(origin)));
    }
}

mod rate_limit {
    use super::*;

    /// One GCRA take on one bucket (a compare-and-swap).
    #[divan::bench]
    fn bucket_take(bencher: Bencher) {
        let bucket = Bucket::new();
        let p = Params {
            amount: 100_000_000,
            interval: Duration::from_secs(1),
        };
        // A microsecond per call: far below the bucket's rate, so it never runs dry.
        let mut now = 1_000_000_000u64;
        bencher.bench_local(|| {
            now += 1_000;
            bucket.take(black_box(p), now, 1).is_ok()
        });
    }

    /// Stage 3 as the data plane runs it: the buckets that apply, then quotas.
    #[divan::bench]
    fn pipeline_limit(bencher: Bencher) {
        let f = &*FIXTURE;
        let key = verify(f, f.present.get(0)).expect("a present key");
        let policy = key.policy();
        let mut now = 1_000_000_000u64;
        bencher.bench_local(|| {
            now += 1_000;
            pipeline::limit(&f.config, &key, &policy, Mode::Take, 0, now, NOW_MS).is_ok()
        });
    }
}

mod sse_usage {
    use super::*;

    /// About 1 MB of an OpenAI chat stream: content chunks, the usage chunk, `[DONE]`.
    fn stream() -> (Bytes, Vec<usize>) {
        let mut out = Vec::with_capacity(1 << 20);
        let mut ends = Vec::new();
        let mut i = 0;
        while out.len() < (1 << 20) - 512 {
            out.extend_from_slice(format!(
                "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            ).as_bytes());
            ends.push(out.len());
            i += 1;
        }
        out.extend_from_slice(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":{i},\"total_tokens\":{}}}}}\n\n",
            i + 11
        ).as_bytes());
        ends.push(out.len());
        out.extend_from_slice(b"data: [DONE]\n\n");
        ends.push(out.len());
        (Bytes::from(out), ends)
    }

    /// The stream cut into frames: one per event, or fixed sizes (cutting through events).
    fn frames(size: usize) -> (Vec<Bytes>, u64) {
        let (all, ends) = stream();
        let mut frames = Vec::new();
        if size == 0 {
            let mut start = 0;
            for end in ends {
                frames.push(all.slice(start..end));
                start = end;
            }
        } else {
            frames = all.chunks(size).map(|c| all.slice_ref(c)).collect();
        }
        (frames, all.len() as u64)
    }

    fn feed(frames: &[Bytes], drop_usage_chunk: bool) -> u64 {
        let mut reader = UsageReader::new(Format::Sse, drop_usage_chunk);
        let mut passed = 0;
        for frame in frames {
            if let Some(out) = reader.feed(frame.clone()) {
                passed += out.len() as u64;
            }
        }
        let tokens = reader.finish();
        assert!(tokens.output.is_some());
        passed
    }

    /// Frame size 0 is one frame per event, as an upstream writing each event at once sends
    /// them; 1460 is one TCP segment; 16384 is a full read buffer.
    #[divan::bench(args = [0, 1460, 16384])]
    fn per_mb(bencher: Bencher, frame: usize) {
        let (frames, len) = frames(frame);
        bencher
            .counter(BytesCount::new(len))
            .bench_local(|| feed(black_box(&frames), false));
    }

    /// The same when keygate asked for the usage chunk and cuts it out (whole events kept).
    #[divan::bench(args = [0, 1460, 16384])]
    fn per_mb_dropping_usage_chunk(bencher: Bencher, frame: usize) {
        let (frames, len) = frames(frame);
        bencher
            .counter(BytesCount::new(len))
            .bench_local(|| feed(black_box(&frames), true));
    }
}

mod json_usage {
    use super::*;

    /// A whole chat completion with `choices` holding `content` bytes of reply text (as an
    /// upstream escapes it: some quotes and newlines) and the usage after them.
    fn completion(content: usize) -> Bytes {
        let mut text = String::with_capacity(content);
        while text.len() < content {
            text.push_str(r#"The \"usage\" of tokens: {\"see\": [1, 2]} and more words.\n"#);
        }
        Bytes::from(format!(
            r#"{{"id":"chatcmpl-bench0000000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20,"prompt_tokens_details":{{"cached_tokens":0}}}},"system_fingerprint":"fp_bench"}}"#
        ))
    }

    /// Reading the usage of one response body, arrived in one frame: `content` is the length of
    /// the reply text (30 B is the bench upstream's canned answer; 4 KB a typical reply).
    #[divan::bench(args = [30, 4096, 65536])]
    fn per_body(bencher: Bencher, content: usize) {
        let body = completion(content);
        bencher
            .counter(BytesCount::new(body.len()))
            .bench_local(|| {
                let mut reader = UsageReader::new(Format::Json, false);
                reader.feed(black_box(body.clone()));
                let tokens = reader.finish();
                assert_eq!(tokens.output, Some(9));
                tokens
            });
    }
}

mod json_request {
    use super::*;
    use keygate::proxy::inspect::JsonBody;

    /// A chat request whose `messages` hold one short message, then exchanges until they are
    /// at least `content` bytes.
    fn request(content: usize) -> Bytes {
        let mut messages = String::from(r#"{"role":"user","content":"Say hello."}"#);
        while messages.len() < content {
            messages.push_str(r#",{"role":"assistant","content":"Hello! The \"usage\" is {\"a\": [1]}.\n"},{"role":"user","content":"And again, with more words this time."}"#);
        }
        Bytes::from(format!(
            r#"{{"model":"gpt-4o-mini","messages":[{messages}],"max_tokens":16,"stream":false}}"#
        ))
    }

    /// Reading a request body for its model and limits: one message (a 104 B body, like the
    /// bench's request), 4 KB of conversation, 64 KB.
    #[divan::bench(args = [0, 4096, 65536])]
    fn parse(bencher: Bencher, content: usize) {
        let body = request(content);
        bencher
            .counter(BytesCount::new(body.len()))
            .bench_local(|| {
                let json = JsonBody::parse(black_box(body.clone())).expect("a JSON object");
                assert_eq!(json.model(), Some("gpt-4o-mini"));
                json
            });
    }
}
