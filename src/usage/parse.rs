//! Reading token usage from upstream responses as they pass, without holding them back.
//!
//! SSE streams are scanned line by line: only a partial line is kept between frames, and only
//! `data:` lines that mention `"usage"` are parsed as JSON (OpenAI's final usage chunk,
//! Anthropic's `message_start` and `message_delta`, the Responses API's `response.completed`).
//! When keygate itself asked an OpenAI stream for its usage chunk, that chunk is cut out of what
//! the client receives: then whole events are kept until their blank line, and every other event
//! is passed on the moment it is complete. JSON bodies are kept (as shared `Bytes`, bounded) and
//! their `usage` is found at the end.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::scan;

/// Longest SSE line kept across frames; a longer line is skipped, not buffered without bound.
const MAX_LINE: usize = 1024 * 1024;
/// Largest JSON body kept for its `usage`; larger bodies are counted by estimate.
const MAX_JSON: usize = 4 * 1024 * 1024;

/// Tokens reported by the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Tokens {
    pub fn is_known(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    /// Reads a `usage` object: OpenAI (`prompt_tokens`/`completion_tokens`), Anthropic and the
    /// Responses API (`input_tokens`/`output_tokens`, plus Anthropic's cache tokens, which are
    /// input too). Fields it carries overwrite earlier ones: Anthropic's `message_delta` repeats
    /// the cumulative output count. A count that is not a whole number is ignored.
    fn merge(&mut self, usage: &[u8]) {
        let Some(
            [
                prompt,
                completion,
                input,
                output,
                cache_creation,
                cache_read,
            ],
        ) = scan::members(usage, USAGE_FIELDS)
        else {
            return;
        };
        let field = |raw: Option<&[u8]>| {
            raw.and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.parse::<u64>().ok())
        };
        let input = field(prompt).or_else(|| field(input)).map(|base| {
            // Saturating: the numbers are the upstream's, and may be anything.
            base.saturating_add(field(cache_creation).unwrap_or(0))
                .saturating_add(field(cache_read).unwrap_or(0))
        });
        if input.is_some() {
            self.input = input;
        }
        if let Some(output) = field(completion).or_else(|| field(output)) {
            self.output = Some(output);
        }
    }

    /// Finds `usage` in a response or event object, wherever the format puts it: at the top,
    /// in `message` (Anthropic's `message_start`) or in `response` (the Responses API).
    /// Returns the object's shape, or `None` when it is not a JSON object.
    fn read<'a>(&mut self, json: &'a [u8]) -> Option<Envelope<'a>> {
        let envelope: Envelope<'a> = object(json)?;
        let span = |raw: Option<&'a RawValue>| raw.map(|r| r.get().as_bytes());
        self.collect(
            span(envelope.usage),
            span(envelope.message),
            span(envelope.response),
        );
        Some(envelope)
    }

    /// [`Tokens::read`] for a whole JSON response: the reply in its `choices` is skipped by a
    /// structural scan (see [`super::scan`]), not checked byte by byte by serde_json; the
    /// usage found is parsed as usual.
    fn read_response(&mut self, json: &[u8]) {
        if let Some([usage, message, response]) =
            scan::members(json, [b"usage", b"message", b"response"])
        {
            self.collect(usage, message, response);
        }
    }

    /// Merges the usage found at the top, in `message` and in `response`.
    fn collect(&mut self, usage: Option<&[u8]>, message: Option<&[u8]>, response: Option<&[u8]>) {
        fn nested(object: Option<&[u8]>) -> Option<&[u8]> {
            object
                .and_then(|o| scan::members(o, [b"usage"]))
                .and_then(|[usage]| usage)
        }
        let found = [usage, nested(message), nested(response)];
        for usage in found.into_iter().flatten() {
            self.merge(usage);
        }
    }
}

/// Reads one JSON object into `T`. Only an object: a derived struct would also read a JSON
/// array, its fields by position.
pub(crate) fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Where usage can be in an SSE event; everything else is skipped. `choices` tells OpenAI's
/// usage-only chunk apart. (An event is parsed whole, so that one whose JSON is broken is never
/// taken for the usage-only chunk and cut out of the stream.)
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<&'a RawValue>,
}

/// The counts a `usage` object may carry, in the order [`Tokens::merge`] reads them.
const USAGE_FIELDS: [&[u8]; 6] = [
    b"prompt_tokens",
    b"completion_tokens",
    b"input_tokens",
    b"output_tokens",
    b"cache_creation_input_tokens",
    b"cache_read_input_tokens",
];

/// How the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sse,
    Json,
    /// Neither: only bytes are counted.
    Other,
}

/// The usage reader for one response body.
#[derive(Debug)]
pub struct UsageReader {
    format: Format,
    /// Cut OpenAI's usage-only chunk out of the stream (keygate asked for it, the client did not).
    drop_usage_chunk: bool,
    tokens: Tokens,
    /// Data events that carried content (deltas): the basis of an estimate when usage never
    /// arrives, as a delta carries about one token.
    content_events: u64,
    bytes: u64,
    /// The unfinished line at the end of the last frame.
    line: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    /// In drop mode: the unfinished event, and whether it is the usage-only chunk.
    event: BytesMut,
    event_is_usage_only: bool,
    /// JSON mode: the body so far.
    json: Vec<Bytes>,
    json_len: usize,
}

impl UsageReader {
    pub fn new(format: Format, drop_usage_chunk: bool) -> UsageReader {
        UsageReader {
            format,
            drop_usage_chunk: drop_usage_chunk && format == Format::Sse,
            tokens: Tokens::default(),
            content_events: 0,
            bytes: 0,
            line: Vec::new(),
            skipping: false,
            event: BytesMut::new(),
            event_is_usage_only: false,
            json: Vec::new(),
            json_len: 0,
        }
    }

    /// Reads a frame and returns what to pass on to the client: the frame itself, except in
    /// drop mode, where complete events are passed on (`None` while an event is unfinished).
    pub fn feed(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.bytes += chunk.len() as u64;
        match self.format {
            Format::Other => Some(chunk),
            Format::Json => {
                if self.json_len + chunk.len() <= MAX_JSON {
                    self.json_len += chunk.len();
                    self.json.push(chunk.clone());
                } else {
                    self.json.clear();
                    self.json_len = usize::MAX / 2;
                }
                Some(chunk)
            }
            Format::Sse if !self.drop_usage_chunk => {
                self.scan(&chunk, None);
                Some(chunk)
            }
            Format::Sse => {
                let mut out = BytesMut::new();
                self.scan(&chunk, Some(&mut out));
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }

    /// Splits `chunk` into lines; `out` collects complete events to pass on (drop mode).
    fn scan(&mut self, chunk: &[u8], mut out: Option<&mut BytesMut>) {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (piece, after) = rest.split_at(nl + 1);
            rest = after;
            if out.is_some() {
                self.event.extend_from_slice(piece);
            }
            if std::mem::take(&mut self.skipping) {
                self.line.clear();
            } else if self.line.is_empty() {
                self.on_line(trim_eol(piece), out.as_deref_mut());
            } else {
                // The line began in an earlier frame: complete it, then reuse the buffer.
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(piece);
                self.on_line(trim_eol(&line), out.as_deref_mut());
                line.clear();
                self.line = line;
            }
        }
        if !rest.is_empty() {
            if out.is_some() {
                self.event.extend_from_slice(rest);
            }
            if self.line.len() + rest.len() > MAX_LINE {
                self.line.clear();
                self.skipping = true;
            } else if !self.skipping {
                self.line.extend_from_slice(rest);
            }
        }
    }

    fn on_line(&mut self, line: &[u8], out: Option<&mut BytesMut>) {
        if line.is_empty() {
            if let Some(out) = out {
                let event = self.event.split();
                if !std::mem::take(&mut self.event_is_usage_only) {
                    out.extend_from_slice(&event);
                }
            }
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            return;
        }
        if memchr::memmem::find(data, b"\"usage\"").is_none() {
            // Content arrives in deltas (OpenAI chunks, Anthropic content_block_delta).
            if memchr::memmem::find(data, b"\"delta\"").is_some() {
                self.content_events += 1;
            }
            return;
        }
        let Some(envelope) = self.tokens.read(data) else {
            return;
        };
        // OpenAI's usage chunk: a usage object and no choices.
        let usage_only = envelope.usage.is_some_and(|u| u.get().starts_with('{'))
            && envelope
                .choices
                .is_some_and(|c| c.get().trim_start_matches('[').trim_start() == "]");
        if usage_only {
            self.event_is_usage_only = true;
        }
    }

    /// In drop mode, what is left of an event the stream did not finish with a blank line.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.event.is_empty()).then(|| self.event.split().freeze())
    }

    /// The usage when the body ended. For JSON it is parsed now.
    pub fn finish(&mut self) -> Tokens {
        if self.format == Format::Json && self.json_len <= MAX_JSON {
            let parts = std::mem::take(&mut self.json);
            // Most bodies arrive in one frame: read it where it is.
            if let [only] = parts.as_slice() {
                self.tokens.read_response(only);
            } else {
                let mut whole = Vec::with_capacity(self.json_len);
                for part in &parts {
                    whole.extend_from_slice(part);
                }
                self.tokens.read_response(&whole);
            }
        }
        self.tokens
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Content events seen: an output-token estimate (an event carries about one token).
    pub fn content_events(&self) -> u64 {
        self.content_events
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
