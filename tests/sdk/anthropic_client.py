"""Drives keygate with the official Anthropic Python SDK, for tests/sdk.rs.

Usage: ``python anthropic_client.py SCENARIO`` with ``KEYGATE_BASE_URL`` (keygate's root URL)
and the keys the scenario needs in ``KEYGATE_KEY``, ``KEYGATE_IP_KEY`` and
``KEYGATE_RATE_KEY``. It prints one JSON object: what the SDK handed back (the message, the
stream's events and text, or the exception it raised, described). tests/sdk.rs asserts on
that; anything unexpected raises and exits non-zero with a traceback. Clients never retry
(``max_retries=0``), so a 429 reaches the test as the SDK raises it.
"""

import json
import os
import sys

import anthropic

MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "hi"}]


def client(key):
    return anthropic.Anthropic(
        api_key=key,
        base_url=os.environ["KEYGATE_BASE_URL"],
        max_retries=0,
        timeout=10,
    )


def messages():
    """A plain call, ``create(stream=True)`` and the ``messages.stream`` helper."""
    c = client(os.environ["KEYGATE_KEY"])
    raw = c.messages.with_raw_response.create(
        model=MODEL, max_tokens=16, messages=MESSAGES
    )
    message = raw.parse()
    events = list(
        c.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES, stream=True)
    )
    with c.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return {
        "text": message.content[0].text,
        "model": message.model,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
        "x_request_id": raw.headers.get("x-request-id"),
        "limit_requests": raw.headers.get("anthropic-ratelimit-requests-limit"),
        "event_types": [event.type for event in events],
        "deltas": [
            event.delta.text for event in events if event.type == "content_block_delta"
        ],
        "stream_text": text,
        "final_text": final.content[0].text,
        "final_stop_reason": final.stop_reason,
        "final_input_tokens": final.usage.input_tokens,
        "final_output_tokens": final.usage.output_tokens,
    }


def refusal(key):
    """Calls messages expecting an HTTP error; describes the exception raised."""
    try:
        client(key).messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    except anthropic.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "type": e.type,
            "body": e.body,
            "x_request_id": e.response.headers["x-request-id"],
            "retry_after": e.response.headers.get("retry-after"),
        }
    raise AssertionError("the call succeeded; an HTTP error was expected")


def errors():
    """The exceptions for 401 (bad key), 403 (IP not allowed) and 429 (rate limited)."""
    rate_key = os.environ["KEYGATE_RATE_KEY"]
    first = client(rate_key).messages.create(
        model=MODEL, max_tokens=16, messages=MESSAGES
    )
    return {
        "bad_key": refusal(os.environ["KEYGATE_KEY"] + "x"),
        "ip": refusal(os.environ["KEYGATE_IP_KEY"]),
        "rate_first": first.content[0].text,
        "rate": refusal(rate_key),
    }


SCENARIOS = {
    "messages": messages,
    "errors": errors,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
