"""Prompt text and token usage out of the request/response bodies that gateways log.

One parser for every adapter, because LiteLLM, Kong, Bedrock and the OTel content attributes
all carry the same few body shapes: OpenAI chat completions / Responses / embeddings / legacy
completions, Anthropic Messages, Bedrock Converse and InvokeModel bodies (Anthropic, Nova,
Titan, Llama, Mistral, Cohere), Gemini contents and OTel GenAI message lists. The prompt is
the last user turn with text (earlier turns and system prompts repeat across a conversation
and would drown the per-query signal); images, audio and tool results are dropped.

>>> prompt_of({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
...            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}]})
Prompt(text='What is 2+2?', missing=None, truncated=False)
>>> prompt_of([{"role": "user", "content": "redacted-by-litellm"}]).missing
'redacted'
>>> usage_of({"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}})
(12, 3)
"""
from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from pipeline.adapters.common import count

PROMPT_MAX_CHARS = 32_768
# What gateways write in place of content they were told not to log.
REDACTION_MARKERS = frozenset({"redacted-by-litellm", "__redacted__", "[redacted]", "<redacted>",
                               "redacted", "***"})
_TEXT_PARTS = (None, "text", "input_text")
_USER_ROLES = ("user", "human")


class Prompt(NamedTuple):
    """The prompt text, or why there is none (``not_logged``, ``redacted``, ``no_text``,
    ``unparseable``)."""

    text: str | None
    missing: str | None = None
    truncated: bool = False


def text_prompt(text: str) -> Prompt:
    t = text.strip()
    if not t:
        return Prompt(None, "no_text")
    if t.lower() in REDACTION_MARKERS:
        return Prompt(None, "redacted")
    if len(t) > PROMPT_MAX_CHARS:
        return Prompt(t[:PROMPT_MAX_CHARS], None, True)
    return Prompt(t)


def load(body: Any) -> Any:
    """A body as logged (object, JSON string or bytes) -> decoded JSON; text stays text."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return _Unparseable
    return body


class _Unparseable:
    """A JSON body that did not parse (gateways truncate logged payloads)."""


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
        t = part.get("text", part.get("content"))
        return t if isinstance(t, str) else None
    return None


def content_text(content: Any) -> str | None:
    """Message content (string or list of parts) -> its text parts joined, or None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [t for t in map(_part_text, content) if t]
        return "\n".join(texts) if texts else None
    return None


def _from_messages(messages: list) -> Prompt:
    for msg in reversed(messages):
        if isinstance(msg, dict) and str(msg.get("role", "user")).lower() in _USER_ROLES:
            text = content_text(msg["content"] if "content" in msg else msg.get("parts"))
            if text and text.strip():
                return text_prompt(text)
    return Prompt(None, "no_text")


def prompt_of(body: Any) -> Prompt:
    """The user's query text in a request body (any shape above), or why there is none."""
    body = load(body)
    if body is _Unparseable:
        return Prompt(None, "unparseable")
    if body in (None, "", [], {}):
        return Prompt(None, "not_logged")
    if isinstance(body, str):
        return text_prompt(body)
    if isinstance(body, list):
        if all(isinstance(x, str) for x in body):          # embeddings / completions input
            return text_prompt("\n".join(body))
        if any(isinstance(x, dict) for x in body):          # a message (or Responses item) list
            return _from_messages(body)
        return Prompt(None, "no_text")                     # token ids
    if not isinstance(body, dict):
        return Prompt(None, "no_text")
    for key in ("messages", "contents"):                   # chat, Anthropic, Converse, Gemini
        if isinstance(body.get(key), list):
            return _from_messages(body[key])
    for key in ("input", "prompt", "inputText", "message", "texts"):
        if key in body:                                    # Responses, embeddings, Titan, ...
            return prompt_of(body[key])
    if "role" in body and ("content" in body or "parts" in body):
        return _from_messages([body])
    return Prompt(None, "no_text")


def usage_of(body: Any) -> tuple[int | None, int | None]:
    """(input_tokens, output_tokens) from a response body, None where it does not say."""
    body = load(body)
    if not isinstance(body, dict):
        return None, None
    u = body.get("usage") or body.get("usageMetadata")
    if isinstance(u, dict):
        return (_first(u, "prompt_tokens", "input_tokens", "inputTokens", "promptTokenCount"),
                _first(u, "completion_tokens", "output_tokens", "outputTokens",
                       "candidatesTokenCount"))
    results = body.get("results")                          # Titan text
    out = results[0].get("tokenCount") if isinstance(results, list) and results and isinstance(
        results[0], dict) else None
    return (_first(body, "inputTextTokenCount", "prompt_token_count"),
            count(out) if out is not None else _first(body, "generation_token_count"))


def model_of(body: Any) -> str | None:
    body = load(body)
    m = body.get("model") if isinstance(body, dict) else None
    return m if isinstance(m, str) and m else None


def _first(d: dict, *names: str) -> int | None:
    for n in names:
        v = count(d.get(n))
        if v is not None:
            return v
    return None
