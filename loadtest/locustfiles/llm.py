"""An LLM-stream user: streaming chat completions from the OpenAI-compatible stream service.

Reported to Locust as request events of type ``LLM``:

* ``chat ttft``: time to the first content token;
* ``chat stream``: the whole completion, response length = content tokens received; a completion
  without ``[DONE]``, without tokens, or with a non-200 status is a failure.

    STREAM_URL=http://127.0.0.1:8081 locust -f loadtest/locustfiles/llm.py --headless -u 20 -r 10 -t 30s
"""

from __future__ import annotations

import json
import random
import time

from _support import STREAM_URL, iter_sse_data, now, report
from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

#: Tokens asked for per completion, and the pace the service streams them at.
MAX_TOKENS = 24
TOKENS_PER_SECOND = 200

PROMPTS = ("Say hello.", "Tell me about event loops.", "What is an HTTP/1.1 chunk?", "Count to ten.")


class IncompleteCompletion(Exception):
    """The completion stream ended without ``[DONE]`` or without any token."""


class ChatStreamUser(FastHttpUser):
    """Asks for streamed chat completions, one at a time, like a chat front end."""

    host = STREAM_URL
    wait_time = between(0.05, 0.2)
    network_timeout = 10.0
    connection_timeout = 5.0

    @task
    def chat_completion(self) -> None:
        """POST /v1/chat/completions with ``stream: true`` and read the chunks to ``[DONE]``."""
        body = {
            "model": "flowno-test",
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "stream": True,
            "max_tokens": MAX_TOKENS,
            "tokens_per_second": TOKENS_PER_SECOND,
        }
        started, t0 = now()
        tokens = 0
        done = False
        try:
            response = self.client.post(
                "/v1/chat/completions",
                json=body,
                name="chat open",
                stream=True,
                headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
            )
            if response.status_code != 200:
                raise IncompleteCompletion(f"status {response.status_code}")
            for data in iter_sse_data(response.stream):
                if data == "[DONE]":
                    done = True
                    continue
                chunk = json.loads(data)
                choices = chunk.get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    tokens += 1
                    if tokens == 1:
                        report(self.environment, "LLM", "chat ttft", started, time.perf_counter() - t0)
            if not done or tokens == 0:
                raise IncompleteCompletion(f"{tokens} tokens, [DONE] {'seen' if done else 'missing'}")
        except Exception as exc:  # every failure is reported, then the user goes on
            report(self.environment, "LLM", "chat stream", started, time.perf_counter() - t0, tokens, exc)
            return
        report(self.environment, "LLM", "chat stream", started, time.perf_counter() - t0, tokens)
