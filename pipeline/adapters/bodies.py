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

Two shapes are not JSON at all. LiteLLM's v1 payloads and its DataDog / GCS loggers write
``messages`` as a Python ``repr`` string, often cut at a length limit: the last user
content is recovered from it (:func:`repr_prompt`). Raw completion prompts (Bedrock Llama
and Mistral) carry the model's chat template: the last user turn's text is kept
(:func:`strip_chat_template`), not the special tokens, which would look alike in every
prompt and drown the signals built on text.

>>> prompt_of("[{'role': 'user', 'content': 'What is the capital of Fra")
Prompt(text='What is the capital of Fra', missing=None, truncated=True)
>>> strip_chat_template("<|begin_of_text|><|start_header_id|>user<|end_header_id|>Hi there"
...                     "<|eot_id|><|start_header_id|>assistant<|end_header_id|>")
'Hi there'
"""
from __future__ import annotations

import ast
import re
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


# Llama 3 header blocks, Llama 2 / Mistral [INST] blocks, and the tokens around them.
_LLAMA3_TURN = re.compile(r"<\|start_header_id\|>\s*(\w+)\s*<\|end_header_id\|>(.*?)"
                          r"(?=<\|eot_id\|>|<\|start_header_id\|>|$)", re.S)
_INST = re.compile(r"\[INST\](.*?)(?:\[/INST\]|$)", re.S)
_SYS2 = re.compile(r"<<SYS>>.*?<</SYS>>", re.S)
_SPECIAL = re.compile(r"<\|[a-z_]+\|>|</?s>")


def strip_chat_template(text: str) -> str:
    """The last user turn of a prompt rendered with a Llama 3 or Llama 2 / Mistral chat
    template; text without a template comes back unchanged."""
    if "<|start_header_id|>" in text:
        users = [body for role, body in _LLAMA3_TURN.findall(text) if role.lower() == "user"]
        if users:
            return _SPECIAL.sub("", users[-1]).strip()
    if "[INST]" in text:
        turns = _INST.findall(text)
        if turns:
            return _SPECIAL.sub("", _SYS2.sub("", turns[-1])).strip()
    if "<|begin_of_text|>" in text or text.startswith("<s>"):
        return _SPECIAL.sub("", text).strip()
    return text


def text_prompt(text: str) -> Prompt:
    t = text.strip()
    if "<|" in t or "[INST]" in t or t.startswith("<s>"):
        t = strip_chat_template(t)
    if not t:
        return Prompt(None, "no_text")
    if t.lower() in REDACTION_MARKERS:
        return Prompt(None, "redacted")
    if len(t) > PROMPT_MAX_CHARS:
        return Prompt(t[:PROMPT_MAX_CHARS], None, True)
    return Prompt(t)


def load(body: Any) -> Any:
    """A body as logged (object, JSON string or bytes) -> decoded JSON; text stays text.

    A Python-repr string (LiteLLM's ``str(messages)``) is read as the literal it is; one
    that was cut off is returned as a :class:`_Repr` for :func:`repr_prompt`."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        if _REPR_ROLE.search(body[:2000]):
            try:
                if len(body) <= _REPR_MAX_CHARS:
                    return ast.literal_eval(body)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
            return _Repr(body)
        return _Unparseable
    return body


class _Repr(str):
    """A Python-repr string of messages that does not parse (cut at a length limit)."""


_REPR_MAX_CHARS = 1_048_576
_REPR_ROLE = re.compile(r"""['"]role['"]\s*:""")
# A Python string literal, closed or running to the end of the text.
_PY_STR = r"""'(?:[^'\\]|\\.)*(?:'|\\?$)|"(?:[^"\\]|\\.)*(?:"|\\?$)"""
_REPR_USER = re.compile(r"""['"]role['"]\s*:\s*['"](?:user|human)['"]""")
_REPR_TEXT = re.compile(r"""['"](?:content|text)['"]\s*:\s*(""" + _PY_STR + ")", re.S)


def _py_string(literal: str) -> tuple[str, bool]:
    """A Python string literal, possibly unterminated -> (its value, whether it was cut)."""
    quote, body = literal[0], literal[1:]
    closed = body.endswith(quote) and (len(body) - 1 - len(body[:-1].rstrip("\\"))) % 2 == 0
    if not closed:
        body = body.rstrip("\\") + quote          # a cut escape sequence is dropped
    try:
        return ast.literal_eval(quote + body), not closed
    except (ValueError, SyntaxError):
        return body[:-1], not closed


# What loggers append where they cut a field ("...truncated by litellm", "... (truncated)").
_CUT_MARK = re.compile(r"\s*(?:\.\.\.|…)\s*\(?\s*truncated[\w\s,.:()]*$", re.I)


def repr_prompt(text: str) -> Prompt:
    """The last user content of a cut-off Python-repr message list, as far as it goes."""
    marked = _CUT_MARK.search(text[-200:])
    if marked:
        text = text[:len(text) - 200 + marked.start()] if len(text) > 200 else text[
            :marked.start()]
    starts = [m.end() for m in _REPR_USER.finditer(text)]
    for start in reversed(starts):
        # the user's content follows its role (same dict) or precedes it (dict key order)
        nxt = _REPR_ROLE.search(text, start)
        window = text[start:nxt.start() if nxt else len(text)]
        m = _REPR_TEXT.search(window)
        if m is None:
            before = text[max(0, start - 20_000):start]
            found = list(_REPR_TEXT.finditer(before))
            m = found[-1] if found else None
        if m is not None:
            value, cut = _py_string(m.group(1))
            p = text_prompt(value)
            if p.text:
                return Prompt(p.text, None, cut or p.truncated)
            if p.missing == "redacted":
                return p
    return Prompt(None, "unparseable")


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
    # Redaction replaces the whole list, in any role (LiteLLM's per-callback redaction
    # writes an assistant message): no user text because it was redacted, not absent.
    for msg in messages:
        if isinstance(msg, dict) and isinstance(msg.get("content"), str) and (
                msg["content"].strip().lower() in REDACTION_MARKERS):
            return Prompt(None, "redacted")
    return Prompt(None, "no_text")


def prompt_of(body: Any) -> Prompt:
    """The user's query text in a request body (any shape above), or why there is none."""
    body = load(body)
    if body is _Unparseable:
        return Prompt(None, "unparseable")
    if isinstance(body, _Repr):
        return repr_prompt(body)
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
