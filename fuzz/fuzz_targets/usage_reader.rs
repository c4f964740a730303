//! `keygate::usage::parse::UsageReader`: token usage read from upstream responses (SSE and
//! JSON) as they pass through, and OpenAI's usage chunk cut out when keygate asked for it.
//!
//! Input: a flag byte (bits 0–1: 0 or 3 SSE, 1 JSON, 2 other; bit 2: drop the usage chunk), a
//! split seed, then the body. The body is read twice: in one frame, and in frames of 0–16
//! bytes cut by a generator seeded from the split seed, as a network delivers them.
//!
//! Checked: never panics; frame boundaries change nothing (the same bytes passed on, the same
//! tokens, the same content-event count); every byte is counted; outside drop mode every frame
//! is passed on as it came; in drop mode what is passed on (plus `rest()`) is the body with
//! some bytes cut out, exactly the body when it never says `"usage"`, the same usage is read as
//! without dropping, and a second pass over what was passed on drops nothing more.

#![no_main]

use bytes::Bytes;
use keygate::usage::parse::{Format, Tokens, UsageReader};
use libfuzzer_sys::fuzz_target;

struct Run {
    out: Vec<u8>,
    passed_each_frame: bool,
    rest: Option<Bytes>,
    tokens: Tokens,
    content_events: u64,
    bytes: u64,
}

fn read(format: Format, drop: bool, frames: &[&[u8]]) -> Run {
    let mut reader = UsageReader::new(format, drop);
    let mut out = Vec::new();
    let mut passed_each_frame = true;
    for frame in frames {
        let passed = reader.feed(Bytes::copy_from_slice(frame));
        passed_each_frame &= passed.as_deref() == Some(*frame);
        if let Some(passed) = passed {
            out.extend_from_slice(&passed);
        }
    }
    let rest = reader.rest();
    Run {
        out,
        passed_each_frame,
        rest,
        tokens: reader.finish(),
        content_events: reader.content_events(),
        bytes: reader.bytes(),
    }
}

/// Frames of 0–16 bytes from a small LCG, so the fuzzer picks the cuts through the seed.
fn frames(body: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = ((state >> 16) % 17) as usize;
        let end = (at + len).min(body.len());
        frames.push(&body[at..end]);
        at = end;
    }
    frames
}

fn is_subsequence(small: &[u8], big: &[u8]) -> bool {
    let mut big = big.iter();
    small.iter().all(|b| big.any(|c| c == b))
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, body @ ..] = data else {
        return;
    };
    let format = match flags & 3 {
        1 => Format::Json,
        2 => Format::Other,
        _ => Format::Sse,
    };
    let drop = flags & 4 != 0;
    let whole = read(format, drop, &[body]);
    let split = read(format, drop, &frames(body, *seed));

    assert_eq!(whole.tokens, split.tokens, "tokens depend on the framing");
    assert_eq!(whole.content_events, split.content_events);
    assert_eq!(whole.bytes, body.len() as u64);
    assert_eq!(split.bytes, body.len() as u64);
    let joined = |run: &Run| {
        let mut all = run.out.clone();
        all.extend_from_slice(run.rest.as_deref().unwrap_or_default());
        all
    };
    assert_eq!(
        joined(&whole),
        joined(&split),
        "output depends on the framing"
    );

    if drop && format == Format::Sse {
        let all = joined(&split);
        assert!(
            is_subsequence(&all, body),
            "drop mode passed on bytes it was not given"
        );
        if !body.windows(7).any(|w| w == b"\"usage\"") {
            assert_eq!(all, body, "drop mode changed a stream without usage");
        }
        // Dropping reads the same usage as not dropping, and what it passes on has nothing
        // left to drop.
        let kept = read(format, false, &frames(body, *seed));
        assert_eq!(kept.tokens, split.tokens, "dropping changed the usage read");
        assert_eq!(kept.content_events, split.content_events);
        let again = read(format, true, &[&all]);
        assert_eq!(joined(&again), all, "a second pass dropped more");
    } else {
        assert!(whole.passed_each_frame && split.passed_each_frame);
        assert_eq!(split.out, body);
        assert!(split.rest.is_none());
    }
});
