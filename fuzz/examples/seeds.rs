//! Writes the seed corpora under `fuzz/corpus/`: real keys from `keygate::keys::generate`,
//! the shipped `config.example.toml` and small configs, OpenAI and Anthropic streams shaped like
//! `tests/common/upstream.rs` sends them, and chat and messages bodies. Each seed is laid out as
//! its target's input (see the target's module doc). Rerun after changing an input layout:
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```

use std::fs;
use std::path::Path;

use serde_json::json;

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn with_flags(flags: &[u8], rest: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = flags.to_vec();
    out.extend_from_slice(rest.as_ref());
    out
}

fn key(prefix: &str) -> String {
    keygate::keys::generate(prefix)
        .expect("OS randomness")
        .secret
        .expose()
        .to_owned()
}

fn keys_parse() {
    let t = "keys_parse";
    for (name, prefix) in [
        ("default", "sk-kg-"),
        ("underscore", "acme_"),
        ("one_letter", "a"),
        ("longest_prefix", "Abcdefghijklm_-9"),
    ] {
        write(t, &format!("valid_{name}"), with_flags(&[0], key(prefix)));
    }
    let k = key("sk-kg-");
    let mut typo = k.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    write(t, "checksum_typo", with_flags(&[0], typo));
    write(t, "too_short", with_flags(&[0], &k[..20]));
    write(t, "too_long", with_flags(&[0], format!("{k}{k}")));
    write(t, "digit_prefix", with_flags(&[0], format!("9{}", &k[1..])));
    write(t, "non_ascii", with_flags(&[0], format!("é{}", &k[2..])));
    write(
        t,
        "bad_body_char",
        with_flags(&[0], k.replacen('k', "!", 2)),
    );
    // Mode 1: the harness appends the right checksum to prefix + body.
    write(t, "fixup_default", with_flags(&[1], &k[..k.len() - 6]));
    write(
        t,
        "fixup_odd_prefix",
        with_flags(&[1], "x-_Y0123456789abcdefghijKL"),
    );
}

fn auth_header() {
    let t = "auth_header";
    let k = key("sk-kg-");
    let other = key("sk-kg-");
    write(t, "bearer", with_flags(&[1], format!("Bearer {k}")));
    write(
        t,
        "bearer_lowercase_spaces",
        with_flags(&[1], format!("bearer   {k}  ")),
    );
    write(t, "x_api_key", with_flags(&[2], format!("\n{k}")));
    write(
        t,
        "both_equal",
        with_flags(&[3], format!("Bearer {k}\n{k}")),
    );
    write(
        t,
        "both_different",
        with_flags(&[3], format!("Bearer {k}\n{other}")),
    );
    write(
        t,
        "basic_scheme",
        with_flags(&[1], "Basic dXNlcjpwYXNzd29yZA=="),
    );
    write(t, "scheme_only", with_flags(&[1], "Bearer"));
    write(t, "tab_separated", with_flags(&[1], format!("Bearer\t{k}")));
    write(
        t,
        "obs_text",
        with_flags(&[1], b"Bearer sk-kg-\xff\xfe\x80"),
    );
    write(
        t,
        "two_authorizations",
        with_flags(&[5], format!("Bearer {k}\n\nBearer {other}")),
    );
    write(t, "no_headers", [0u8]);
    write(t, "anthropic_sdk", with_flags(&[2], format!("\n  {k}\t")));
}

fn config_parse() {
    let t = "config_parse";
    let example = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config.example.toml"
    ))
    .expect("config.example.toml");
    write(t, "example", example);
    write(t, "empty", "");
    write(
        t,
        "minimal",
        "[upstreams.openai]\nbase_url = \"https://api.openai.com\"\napi_key_env = \"OPENAI_API_KEY\"\n\n\
         [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\n",
    );
    write(
        t,
        "presets",
        "[upstreams.anthropic]\nbase_url = \"https://api.anthropic.com\"\nauth = \"x-api-key\"\n\
         headers = { \"anthropic-version\" = \"2023-06-01\" }\n\n\
         [[routes]]\npath = \"/v1/messages\"\nupstream = \"anthropic\"\nerrors = \"anthropic\"\n\
         models = [\"claude-*\", \"claude-3-?-sonnet*\"]\n\n\
         [presets.support-bot]\nupstream = \"anthropic\"\nmodel = \"claude-3-5-haiku-latest\"\n\
         system_prompt = \"\"\"You are the support assistant.\nBe brief.\"\"\"\n",
    );
    write(
        t,
        "listeners_tls_missing_files",
        "[[listeners]]\naddr = \"127.0.0.1:8080\"\n\n[[listeners]]\naddr = \"[::]:8443\"\n\
         tls_cert = \"missing-cert.pem\"\ntls_key = \"missing-key.pem\"\n",
    );
    write(
        t,
        "server_limits",
        "[server]\nstate_dir = \"./keygate-data\"\nmax_body_bytes = 1048576\n\
         trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nshutdown_grace = \"1h30m\"\n\
         header_read_timeout = \"500ms\"\nmax_header_bytes = 8192\nmax_headers = 50\n\
         auth_failure_limit = { requests = 5, interval = \"10s\" }\n\n\
         [limits]\nrate_limit = { requests = 60, interval = \"60s\" }\n\
         token_limit = { tokens = 100000, interval = \"1m\" }\nreserve_tokens = 512\n\n\
         [usage]\nflush_interval = \"1s\"\nhourly_retention = \"90d\"\ndaily_retention = \"730d\"\n",
    );
    write(
        t,
        "admin_keys_log_metrics",
        "[admin]\nsocket = \"/run/keygate/admin.sock\"\nallowed_uids = [1000]\nallowed_gids = [0]\n\n\
         [keys]\nprefix = \"acme_\"\nmax_active_per_account = 3\ndefault_scopes = [\"chat\", \"read\", \"admin\"]\n\n\
         [log]\nformat = \"json\"\nlevel = \"info,keygate=debug\"\n\n[metrics]\naddr = \"127.0.0.1:9090\"\n",
    );
    write(
        t,
        "errors_everywhere",
        "[server]\nmax_body_bytes = \"lots\"\n\n[upstreams.openai]\nbase_url = \"https://api.openai.com\"\n\n\
         [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\nscop = \"chat\"\n\n\
         [[routes]]\npath = \"/v2/\"\nupstream = \"opnai\"\n",
    );
    write(
        t,
        "syntax_errors",
        "[server\nmax_body_bytes = = 3\n[[routes]]\npath = \"/v1/\npath = 1\n",
    );
    write(
        t,
        "duplicate_key",
        "[log]\nlevel = \"info\"\nlevel = \"debug\"\n",
    );
    write(
        t,
        "unknown_section",
        "[serverr]\nx = 1\n\n[\"weird\\nsection\"]\n",
    );
    write(
        t,
        "api_key_file_relative",
        "[upstreams.local]\nbase_url = \"http://127.0.0.1:11434/ollama/\"\napi_key_file = \"no-such.key\"\n\
         connect_timeout = \"5s\"\ntimeout = \"600s\"\nca_file = \"no-such-ca.pem\"\n",
    );
    write(
        t,
        "duplicate_routes_bad_methods",
        "[upstreams.a]\nbase_url = \"https://a.example\"\n\n[[routes]]\npath = \"/v1/\"\nupstream = \"a\"\n\
         methods = [\"GET\", \"P O S T\"]\n\n[[routes]]\npath = \"/v1/\"\nupstream = \"a\"\nmethods = [\"GET\"]\n\
         scope = \"webhook\"\n",
    );
    write(
        t,
        "unicode_columns",
        "[log]\nlevel = \"ünïcödé 🦀\"\n[keys]\nprefix = \"🔑\"\n",
    );
}

fn openai_stream(events: usize, usage: bool) -> String {
    let mut s = String::new();
    for i in 0..events {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": format!("t{i}")}}]});
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    if usage {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": events, "total_tokens": 11 + events}});
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    s.push_str("data: [DONE]\n\n");
    s
}

fn anthropic_stream(events: usize, eol: &str) -> String {
    let ev =
        |name: &str, data: serde_json::Value| format!("event: {name}{eol}data: {data}{eol}{eol}");
    let mut s = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "claude",
            "usage": {"input_tokens": 13, "cache_creation_input_tokens": 2,
                      "cache_read_input_tokens": 4, "output_tokens": 1}}}),
    );
    s += &ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for i in 0..events {
        s += &ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("t{i}")}}),
        );
    }
    s += &ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    s += &ev("ping", json!({"type": "ping"}));
    s += &ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": events}}),
    );
    s += &ev("message_stop", json!({"type": "message_stop"}));
    s
}

fn usage_reader() {
    let t = "usage_reader";
    // Flags: 0 SSE, 1 JSON, 2 other, +4 drop the usage chunk. Second byte: split seed.
    write(
        t,
        "openai_sse_usage",
        with_flags(&[0, 7], openai_stream(3, true)),
    );
    write(
        t,
        "openai_sse_usage_drop",
        with_flags(&[4, 42], openai_stream(3, true)),
    );
    write(
        t,
        "openai_sse_no_usage_drop",
        with_flags(&[4, 3], openai_stream(2, false)),
    );
    write(
        t,
        "openai_sse_crlf_drop",
        with_flags(&[4, 9], openai_stream(2, true).replace('\n', "\r\n")),
    );
    write(
        t,
        "anthropic_sse",
        with_flags(&[0, 1], anthropic_stream(3, "\n")),
    );
    write(
        t,
        "anthropic_sse_crlf",
        with_flags(&[0, 200], anthropic_stream(2, "\r\n")),
    );
    let responses = format!(
        "event: response.output_text.delta\ndata: {}\n\nevent: response.completed\ndata: {}\n\n",
        json!({"type": "response.output_text.delta", "delta": "hi"}),
        json!({"type": "response.completed", "response": {"id": "resp_1",
            "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}}),
    );
    write(t, "responses_sse", with_flags(&[0, 5], responses));
    write(
        t,
        "sse_comments_and_unterminated",
        with_flags(
            &[4, 11],
            ": keep-alive\n\nretry: 100\nid: 1\ndata:{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\ndata: {\"delta\"",
        ),
    );
    let openai_json = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}});
    write(
        t,
        "openai_json",
        with_flags(&[1, 13], openai_json.to_string()),
    );
    let anthropic_json = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 5}});
    write(
        t,
        "anthropic_json_pretty",
        with_flags(
            &[1, 77],
            serde_json::to_string_pretty(&anthropic_json).unwrap(),
        ),
    );
    write(
        t,
        "error_json",
        with_flags(
            &[1, 0],
            r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ),
    );
    write(t, "other_format", with_flags(&[2, 3], "plain text body\n"));
    write(t, "empty_sse", [0u8, 0]);
}

fn json_body() {
    let t = "json_body";
    let preset = |flags: u8, body: serde_json::Value| {
        with_flags(
            &[flags],
            format!("gpt-4o-mini\0You are the support assistant.\0{body}"),
        )
    };
    let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 256, "temperature": 0.7});
    write(t, "chat_plain", with_flags(&[0], chat.to_string()));
    write(
        t,
        "chat_pretty_unchanged",
        with_flags(&[0], serde_json::to_string_pretty(&chat).unwrap()),
    );
    let chat_stream =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    write(
        t,
        "chat_stream_usage",
        with_flags(&[4], chat_stream.to_string()),
    );
    let asked = json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "messages": []});
    write(
        t,
        "chat_stream_already_asked",
        with_flags(&[4], asked.to_string()),
    );
    let bad_options = json!({"model": "gpt-4o", "stream": true, "stream_options": "yes"});
    write(
        t,
        "chat_stream_options_not_object",
        with_flags(&[4], bad_options.to_string()),
    );
    let assistant = json!({"assistant_id": "support-bot", "stream": true,
        "messages": [{"role": "system", "content": "client prompt"}, {"role": "user", "content": "Hi"}]});
    write(t, "chat_preset_then_usage", preset(6, assistant.clone()));
    write(t, "chat_usage_then_preset", preset(14, assistant));
    let messages = json!({"model": "claude-3-5-sonnet-latest", "max_tokens": 1024,
        "system": "Client system prompt", "messages": [{"role": "user", "content": "Hello"}]});
    write(t, "messages_preset_system_string", preset(3, messages));
    let blocks = json!({"assistant_id": "bot", "max_tokens": 64,
        "system": [{"type": "text", "text": "Client block", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]});
    write(t, "messages_preset_system_blocks", preset(3, blocks));
    write(
        t,
        "messages_preset_system_number",
        preset(3, json!({"system": 5, "messages": []})),
    );
    write(
        t,
        "preset_empty_prompt",
        with_flags(
            &[2],
            format!(
                "claude-3-haiku\0\0{}",
                json!({"model": "x", "assistant_id": "a"})
            ),
        ),
    );
    let responses =
        json!({"model": "gpt-4.1", "input": "Hi", "max_output_tokens": 100, "stream": false});
    write(t, "responses_api", with_flags(&[0], responses.to_string()));
    write(
        t,
        "numbers_and_escapes",
        with_flags(
            &[6],
            r#"{"seed":12345678901234567890,"temperature":1e-7,"top_p":0.1,"name":"\u00e9\ud83e\udd80","n":-0}"#,
        ),
    );
    write(t, "not_an_object", with_flags(&[2], "[1,2,3]"));
    write(
        t,
        "duplicate_keys",
        with_flags(&[4], r#"{"model":"a","model":"b","stream":true}"#),
    );
}

fn policy_match() {
    let t = "policy_match";
    for (name, a, b) in [
        ("exact_origin", "app.example.com", "https://app.example.com"),
        (
            "full_origin_pattern",
            "https://app.example.com:8443",
            "https://APP.example.com:8443/path?q#f",
        ),
        ("subdomains", "*.example.com", "https://api.example.com"),
        ("subdomains_bare", "*.example.com", "https://example.com"),
        ("any", "*", "null"),
        ("ipv4", "http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        (
            "userinfo",
            "https://user:pw@host.example",
            "https://evil.example@host.example",
        ),
        ("model_star", "gpt-4o*", "gpt-4o-mini"),
        (
            "model_question",
            "claude-3-?-sonnet*",
            "claude-3-5-sonnet-20241022",
        ),
        ("model_stars", "*o1*mini*", "o1-mini-2024-09-12"),
        ("model_exact", "gpt-4", "gpt-4"),
        ("model_miss", "gpt-4?", "gpt-4"),
    ] {
        write(t, name, format!("{a}\0{b}"));
    }
}

fn main() {
    keys_parse();
    auth_header();
    config_parse();
    usage_reader();
    json_body();
    policy_match();
}
