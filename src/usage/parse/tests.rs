//! Tests of the usage reader, on the exact shapes OpenAI and Anthropic send, split at every
//! possible byte offset.

use super::*;

fn openai_stream(usage: bool) -> String {
    let mut s = String::new();
    for i in 0..3 {
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
        ));
    }
    if usage {
        s.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3,\"total_tokens\":14}}\n\n");
    }
    s.push_str("data: [DONE]\n\n");
    s
}

const ANTHROPIC: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":13,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\r\n\r\n\
event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

/// Feeds `text` split at `at`, returning what was passed on and the reader.
fn feed_split(text: &str, at: usize, format: Format, drop: bool) -> (String, UsageReader) {
    let mut r = UsageReader::new(format, drop);
    let mut out = Vec::new();
    for part in [&text.as_bytes()[..at], &text.as_bytes()[at..]] {
        if let Some(b) = r.feed(Bytes::copy_from_slice(part)) {
            out.extend_from_slice(&b);
        }
    }
    if let Some(b) = r.rest() {
        out.extend_from_slice(&b);
    }
    (String::from_utf8(out).unwrap(), r)
}

#[test]
fn the_openai_usage_chunk_is_read_at_every_split() {
    let text = openai_stream(true);
    for at in 0..=text.len() {
        let (out, mut r) = feed_split(&text, at, Format::Sse, false);
        assert_eq!(out, text, "passed on unchanged");
        assert_eq!(
            r.finish(),
            Tokens {
                input: Some(11),
                output: Some(3)
            },
            "split at {at}"
        );
        assert_eq!(r.content_events(), 3);
    }
}

#[test]
fn the_chunk_keygate_asked_for_is_cut_out_at_every_split() {
    let with = openai_stream(true);
    let without = openai_stream(false);
    for at in 0..=with.len() {
        let (out, mut r) = feed_split(&with, at, Format::Sse, true);
        assert_eq!(out, without, "split at {at}");
        assert_eq!(r.finish().output, Some(3));
    }
}

#[test]
fn anthropic_usage_comes_from_message_start_and_message_delta_at_every_split() {
    for at in 0..=ANTHROPIC.len() {
        let (out, mut r) = feed_split(ANTHROPIC, at, Format::Sse, false);
        assert_eq!(out, ANTHROPIC);
        // 13 input + 4 read from cache; the final cumulative output count wins.
        assert_eq!(
            r.finish(),
            Tokens {
                input: Some(17),
                output: Some(9)
            },
            "split at {at}"
        );
        assert_eq!(r.content_events(), 1, "one content_block_delta");
    }
}

#[test]
fn json_bodies_are_read_at_the_end() {
    let openai = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;
    let (_, mut r) = feed_split(openai, 7, Format::Json, false);
    assert_eq!(
        r.finish(),
        Tokens {
            input: Some(5),
            output: Some(6)
        }
    );
    let anthropic = r#"{"type":"message","usage":{"input_tokens":2,"output_tokens":3}}"#;
    let (_, mut r) = feed_split(anthropic, 30, Format::Json, false);
    assert_eq!(
        r.finish(),
        Tokens {
            input: Some(2),
            output: Some(3)
        }
    );
    let (_, mut r) = feed_split("{\"truncated\":", 3, Format::Json, false);
    assert!(!r.finish().is_known());
    // Arrays are not objects: none is read as a response, nor as the usage in one, whatever its
    // length (six usage fields; three places a response's usage can be).
    for body in [
        r#"{"usage":[5,6,null,null,null,null]}"#,
        r#"[{"prompt_tokens":5,"completion_tokens":6},null,null,null]"#,
        "[[5,6,null,null,null,null],null,null,null]",
        "[[5,6,null,null,null,null],null,null]",
    ] {
        let (_, mut r) = feed_split(body, 4, Format::Json, false);
        assert!(!r.finish().is_known(), "{body}");
    }
}

#[test]
fn a_stream_cut_short_still_tells_what_it_saw() {
    let text = openai_stream(true);
    let cut = text.find("\"t2\"").unwrap();
    let mut r = UsageReader::new(Format::Sse, false);
    r.feed(Bytes::copy_from_slice(&text.as_bytes()[..cut]));
    assert!(!r.finish().is_known());
    assert_eq!(r.content_events(), 2);
    assert_eq!(r.bytes(), cut as u64);
}

#[test]
fn an_endless_line_is_skipped_not_buffered() {
    let mut r = UsageReader::new(Format::Sse, false);
    let junk = Bytes::from(vec![b'x'; 600 * 1024]);
    for _ in 0..4 {
        r.feed(junk.clone());
    }
    assert!(r.line.len() <= MAX_LINE);
    r.feed(Bytes::from_static(
        b"\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
    ));
    assert_eq!(r.finish().output, Some(2));
}

#[test]
fn the_responses_api_completion_event_is_read() {
    let text = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":4}}}\n\n";
    let (_, mut r) = feed_split(text, 20, Format::Sse, false);
    assert_eq!(
        r.finish(),
        Tokens {
            input: Some(8),
            output: Some(4)
        }
    );
}
