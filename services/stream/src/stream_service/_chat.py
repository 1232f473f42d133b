"""An OpenAI-compatible chat completion, with deterministic text: parsing, text, chunks, errors.

The request is the ``POST /v1/chat/completions`` body of the OpenAI API; the fields used are
``model``, ``messages``, ``stream``, ``stream_options.include_usage``, ``max_tokens`` (or
``max_completion_tokens``), ``n`` (only 1), and this service's own ``tokens_per_second``. Other
fields (``temperature``...) are accepted and ignored.

The reply is deterministic: words of a fixed text, starting at a place chosen by the CRC-32 of the
last message's content, so the same request always gets the same reply. Without ``max_tokens``
the reply has :data:`DEFAULT_REPLY_TOKENS` tokens and ``finish_reason`` ``"stop"``; with it,
exactly ``max_tokens`` tokens and ``"length"``. A token is one word (with its leading space).

Example:
    >>> request = parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, 50.0)
    >>> tokens = reply_tokens(request)
    >>> len(tokens), "".join(tokens) == "".join(reply_tokens(request))
    (32, True)
    >>> parse_request({"messages": []}, 50.0)
    Traceback (most recent call last):
    ...
    stream_service._chat.InvalidRequest: messages must be a non-empty list
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_REPLY_TOKENS",
    "MAX_TOKENS",
    "MAX_TOKENS_PER_SECOND",
    "ChatRequest",
    "CompletionChunks",
    "InvalidRequest",
    "completion",
    "error_body",
    "finish_reason",
    "new_completion_id",
    "parse_request",
    "reply_tokens",
]

#: The model name used when the request names none, and listed by ``GET /v1/models``.
DEFAULT_MODEL = "flowno-echo-1"
#: Tokens in a reply when the request sets no ``max_tokens``.
DEFAULT_REPLY_TOKENS = 32
#: Largest ``max_tokens`` accepted (more → 400).
MAX_TOKENS = 100_000
#: Largest ``tokens_per_second`` accepted (more → 400).
MAX_TOKENS_PER_SECOND = 1_000_000.0
#: Messages in one request at most (more → 400).
MAX_MESSAGES = 1_000

_TEXT = (
    "Flowno streams tokens the way a language model would: one small piece at a time, at a steady "
    "pace, over Server-Sent Events. Each chunk is a chat completion chunk that the OpenAI client "
    "reads as it arrives, and the stream ends with a done marker. The words are always the same for "
    "the same question, so tests can check them, and load tests can count them. Ask again and the "
    "reply starts from the same word; ask something else and it starts somewhere new in this text, "
    "which goes round and round for as long as the reply needs."
)
_WORDS = _TEXT.split()


class InvalidRequest(ValueError):
    """The request body is not a valid chat completion request (→ 400).

    Attributes:
        param: the offending field, when there is one.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat completion request that shape the reply."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tokens_per_second: float
    prompt_tokens: int
    seed_text: str


def error_body(
    message: str, param: str | None = None, kind: str = "invalid_request_error", *, status: int = 400
) -> dict[str, Any]:
    """An error body in the OpenAI API's shape (which the ``openai`` client reads into its exception),
    with the ``status`` every other error body of the services carries.

    >>> error_body("bad", "messages")["status"], error_body("bad", "messages")["error"]
    (400, {'message': 'bad', 'type': 'invalid_request_error', 'param': 'messages', 'code': None})
    """
    return {"error": {"message": message, "type": kind, "param": param, "code": None}, "status": status}


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}, ...]
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise InvalidRequest(f"messages[{index}].content parts must be objects", "messages")
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
        return " ".join(texts)
    raise InvalidRequest(f"messages[{index}].content must be a string, a list of parts or null", "messages")


def _positive_int(body: dict[str, Any], name: str, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidRequest(f"{name} must be an integer within 1-{high}", name)
    return value


def parse_request(body: Any, default_tokens_per_second: float) -> ChatRequest:
    """Check a request body and keep what the reply needs.

    Args:
        body: the parsed JSON body.
        default_tokens_per_second: the pace when the body sets no ``tokens_per_second``.

    Raises:
        InvalidRequest: a field is missing or has the wrong type or range.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"messages may hold at most {MAX_MESSAGES} items", "messages")
    texts = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a string role", "messages")
        texts.append(_content_text(message.get("content"), index))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", "stream_options")
    include_usage = bool(options.get("include_usage", False))
    n = body.get("n", 1)
    if n not in (1, None):
        raise InvalidRequest("only n=1 is supported", "n")
    max_tokens = _positive_int(body, "max_tokens", MAX_TOKENS)
    if max_tokens is None:
        max_tokens = _positive_int(body, "max_completion_tokens", MAX_TOKENS)
    pace = body.get("tokens_per_second", default_tokens_per_second)
    if isinstance(pace, bool) or not isinstance(pace, int | float) or not 0 < pace <= MAX_TOKENS_PER_SECOND:
        raise InvalidRequest(
            f"tokens_per_second must be a number within (0, {MAX_TOKENS_PER_SECOND:g}]", "tokens_per_second"
        )
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        tokens_per_second=float(pace),
        prompt_tokens=sum(len(text.split()) for text in texts),
        seed_text=texts[-1],
    )


def reply_tokens(request: ChatRequest) -> list[str]:
    """The reply's tokens: words of a fixed text, the first without a leading space."""
    count = request.max_tokens or DEFAULT_REPLY_TOKENS
    start = zlib.crc32(request.seed_text.encode()) % len(_WORDS)
    words = [_WORDS[(start + i) % len(_WORDS)] for i in range(count)]
    return [words[0], *(" " + word for word in words[1:])]


def finish_reason(request: ChatRequest) -> str:
    """``"length"`` when ``max_tokens`` cut the reply, else ``"stop"``."""
    return "length" if request.max_tokens is not None else "stop"


def _usage(request: ChatRequest, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": request.prompt_tokens + completion_tokens,
    }


def new_completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(request: ChatRequest, tokens: list[str], created: int) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streaming reply."""
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": "fp_flowno",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(request),
            }
        ],
        "usage": _usage(request, len(tokens)),
    }


class CompletionChunks:
    """The ``chat.completion.chunk`` objects of one streamed reply, sharing one id.

    Example:
        >>> request = parse_request({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}, 1.0)
        >>> chunks = CompletionChunks(request, created=0)
        >>> chunks.first()["choices"][0]["delta"], chunks.last()["choices"][0]["finish_reason"]
        ({'role': 'assistant', 'content': ''}, 'length')
    """

    def __init__(self, request: ChatRequest, created: int) -> None:
        self.request = request
        self.base = {
            "id": new_completion_id(),
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "system_fingerprint": "fp_flowno",
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        chunk = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.request.include_usage:
            chunk["usage"] = None
        return chunk

    def first(self) -> dict[str, Any]:
        """The opening chunk: the role, empty content."""
        return self._chunk({"role": "assistant", "content": ""}, None)

    def token(self, text: str) -> dict[str, Any]:
        """A chunk carrying one token."""
        return self._chunk({"content": text}, None)

    def last(self) -> dict[str, Any]:
        """The closing chunk: empty delta and the finish reason."""
        return self._chunk({}, finish_reason(self.request))

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        """The usage chunk sent after the last one when ``stream_options.include_usage`` is set."""
        return {**self.base, "choices": [], "usage": _usage(self.request, completion_tokens)}
