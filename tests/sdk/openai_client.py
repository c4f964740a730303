"""Drives keygate with the official OpenAI Python SDK, for tests/sdk.rs.

Usage: ``python openai_client.py SCENARIO`` with ``KEYGATE_BASE_URL`` (keygate's root URL) and
the keys the scenario needs in ``KEYGATE_KEY``, ``KEYGATE_IP_KEY`` and ``KEYGATE_RATE_KEY``.
It prints one JSON object: what the SDK handed back (content, chunks, or the exception it
raised, described). tests/sdk.rs asserts on that; anything unexpected (a failed call where
none was expected, no exception where one was) raises and exits non-zero with a traceback.
Clients never retry (``max_retries=0``), so a 429 reaches the test as the SDK raises it.
"""

import json
import os
import sys

import openai

MODEL = "gpt-4o"
MESSAGES = [{"role": "user", "content": "hi"}]


def client(key):
    return openai.OpenAI(
        api_key=key,
        base_url=os.environ["KEYGATE_BASE_URL"] + "/v1",
        max_retries=0,
        timeout=10,
    )


def chunk_facts(chunk):
    """What a test needs to know of one streamed chunk."""
    return {
        "content": chunk.choices[0].delta.content if chunk.choices else None,
        "choices": len(chunk.choices),
        "usage": chunk.usage.model_dump(exclude_none=True) if chunk.usage else None,
    }


def chat():
    """A plain call, a streamed call, and a streamed call that asks for usage."""
    c = client(os.environ["KEYGATE_KEY"])
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    stream = c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    streamed = [chunk_facts(chunk) for chunk in stream]
    with_usage = c.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    return {
        "content": completion.choices[0].message.content,
        "model": completion.model,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "x_request_id": raw.headers.get("x-request-id"),
        "limit_requests": raw.headers.get("x-ratelimit-limit-requests"),
        "remaining_requests": raw.headers.get("x-ratelimit-remaining-requests"),
        "stream": streamed,
        "stream_with_usage": [chunk_facts(chunk) for chunk in with_usage],
    }


def stream_without_usage():
    """A streamed call that leaves ``stream_options`` unset."""
    c = client(os.environ["KEYGATE_KEY"])
    stream = c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    return {"stream": [chunk_facts(chunk) for chunk in stream]}


def refusal(key):
    """Calls chat completions expecting an HTTP error; describes the exception raised."""
    try:
        client(key).chat.completions.create(model=MODEL, messages=MESSAGES)
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "code": e.code,
            "type": e.type,
            "request_id": e.request_id,
            "x_request_id": e.response.headers["x-request-id"],
            "retry_after": e.response.headers.get("retry-after"),
        }
    raise AssertionError("the call succeeded; an HTTP error was expected")


def errors():
    """The exceptions for 401 (bad key), 403 (IP not allowed) and 429 (rate limited)."""
    rate_key = os.environ["KEYGATE_RATE_KEY"]
    first = client(rate_key).chat.completions.create(model=MODEL, messages=MESSAGES)
    return {
        "bad_key": refusal(os.environ["KEYGATE_KEY"] + "x"),
        "ip": refusal(os.environ["KEYGATE_IP_KEY"]),
        "rate_first": first.choices[0].message.content,
        "rate": refusal(rate_key),
    }


SCENARIOS = {
    "chat": chat,
    "stream_without_usage": stream_without_usage,
    "errors": errors,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
