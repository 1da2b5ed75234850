"""A stand-in for the LLM providers, speaking each one's documented wire format.

Anthropic Messages (POST /v1/messages), OpenAI Chat Completions (POST /v1/chat/completions)
and Responses (POST /v1/responses), Gemini generateContent / streamGenerateContent
(POST /v1beta/models/MODEL:ACTION or /v1/…, `?alt=sse` for server-sent events, else a JSON array),
whole and streamed, over TLS when given a certificate. Only the parts a client and a metering
proxy read are modelled: ids, model, text, usage.

Every answer's usage is written, as the provider reported it, to a JSON-lines log with the
path, the credentials header seen and whether the client went away mid-stream. Tests compare
what costmeter recorded with this log.

    provider.py PORT LOG [CERT KEY]

Request knobs (headers): `x-standin-delay-ms` between streamed events (default 0);
`x-standin-events` the number of text deltas (default 3); `x-standin-status` an error status
to answer instead (in the provider's error shape); `x-standin-stall-ms` a wait before the
answer's headers.
"""

import gzip
import http.server
import json
import socket
import ssl
import sys
import threading
import time
import uuid

PORT, LOG = int(sys.argv[1]), sys.argv[2]
CERT, KEY = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
LOCK = threading.Lock()
WORDS = ["The", " stand", "-in", " says", " hello", " again", " and", " again"]


def log(entry):
    with LOCK:
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def text_of(deltas):
    return "".join(WORDS[i % len(WORDS)] for i in range(deltas))


def tokens(text):
    """About four characters a token, as the providers' tokenizers count English."""
    return (len(text) + 3) // 4


def within_limit(body, deltas):
    """The deltas a provider sends before the request's own output limit stops it."""
    limit = (body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
             or (body.get("generationConfig") or {}).get("maxOutputTokens"))
    if limit:
        while deltas > 0 and tokens(text_of(deltas)) > limit:
            deltas -= 1
    return deltas


def counts(body, deltas):
    """Deterministic counts from the request, realistic in size (tests read them from the log):
    `input` is all input, cache included; `text` the tokens of the answer's text."""
    size = len(json.dumps(body))
    total = (size + 3) // 4 + 4
    return {"input": total, "cached": min(16 + size % 5, total // 3), "written": min(7 + size % 3, total // 4),
            "text": tokens(text_of(deltas)), "reasoning": deltas // 2}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body in separate writes would wait on Nagle and delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def credentials(self):
        for name in ("x-api-key", "authorization", "x-goog-api-key"):
            if self.headers.get(name):
                return self.headers.get(name)
        return None

    def send_json(self, status, value, headers=()):
        data = json.dumps(value).encode()
        encoded = "gzip" in (self.headers.get("accept-encoding") or "")
        if encoded:
            data = gzip.compress(data)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if encoded:
            self.send_header("content-encoding", "gzip")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        return encoded

    def start_stream(self, headers=()):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        deltas = within_limit(body, int(self.headers.get("x-standin-events", 3)))
        delay = int(self.headers.get("x-standin-delay-ms", 0)) / 1000
        entry = {"path": self.path, "credentials": self.credentials(),
                 "anthropic_version": self.headers.get("anthropic-version"),
                 "stream": False, "gone": False}
        # Before the answer's headers, as a slow provider's first byte.
        time.sleep(int(self.headers.get("x-standin-stall-ms", 0)) / 1000)
        error = self.headers.get("x-standin-status")
        try:
            if error:
                entry["status"] = int(error)
                self.error(int(error))
            elif self.path.startswith("/v1/messages"):
                self.anthropic(body, deltas, delay, entry)
            elif self.path.startswith("/v1/chat/completions"):
                self.chat(body, deltas, delay, entry)
            elif self.path.startswith("/v1/responses"):
                self.openai_responses(body, deltas, delay, entry)
            elif self.path.startswith(("/v1beta/models/", "/v1/models/")):
                self.gemini(body, deltas, delay, entry)
            else:
                entry["status"] = 404
                self.send_json(404, {"error": {"message": "no such route"}})
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            entry["gone"] = True
            self.close_connection = True
        log(entry)

    def error(self, status):
        if self.path.startswith("/v1/messages"):
            value = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        elif "/models/" in self.path:
            value = {"error": {"code": status, "message": "Unavailable", "status": "UNAVAILABLE"}}
        else:
            value = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
        self.send_json(status, value)

    def anthropic(self, body, deltas, delay, entry):
        n = counts(body, deltas)
        message_id = "msg_" + uuid.uuid4().hex[:24]
        request_id = "req_" + uuid.uuid4().hex[:24]
        model = body.get("model", "claude-sonnet-4-5")
        usage = {"input_tokens": n["input"] - n["cached"] - n["written"], "cache_read_input_tokens": n["cached"],
                 "cache_creation_input_tokens": n["written"], "output_tokens": n["text"]}
        text = text_of(deltas)
        entry.update(provider="anthropic", response_id=message_id, request_id=request_id,
                     model=model, usage=usage, text=text)
        headers = [("request-id", request_id)]
        if not body.get("stream"):
            self.send_json(200, {"id": message_id, "type": "message", "role": "assistant", "model": model,
                                 "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                 "stop_sequence": None, "usage": usage}, headers)
            return
        entry["stream"] = True
        self.start_stream(headers)

        def event(name, data):
            self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(data)))

        start_usage = dict(usage, output_tokens=1)
        event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})
        event("ping", {"type": "ping"})
        for i in range(deltas):
            time.sleep(delay)
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]}})
            entry["generated_output"] = tokens(text_of(i + 1))
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": n["text"]}})
        event("message_stop", {"type": "message_stop"})
        self.end_stream()

    def chat(self, body, deltas, delay, entry):
        n = counts(body, deltas)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        request_id = "req_" + uuid.uuid4().hex[:24]
        model = body.get("model", "gpt-5.2")
        output = n["text"] + n["reasoning"]
        usage = {"prompt_tokens": n["input"], "completion_tokens": output,
                 "total_tokens": n["input"] + output,
                 "prompt_tokens_details": {"cached_tokens": n["cached"]},
                 "completion_tokens_details": {"reasoning_tokens": n["reasoning"]}}
        text = text_of(deltas)
        headers = [("x-request-id", request_id)]
        entry.update(provider="openai", response_id=completion_id, request_id=request_id, model=model, text=text)
        if not body.get("stream"):
            entry["usage"] = usage
            entry["gzip"] = self.send_json(200, {
                "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage}, headers)
            return
        entry["stream"] = True
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        entry["include_usage"] = include
        # Without include_usage the real API sends no usage at all: nothing to meter.
        entry["usage"] = usage if include else None
        self.start_stream(headers)

        def chunk(choices, with_usage=None):
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": choices}
            if include:
                data["usage"] = with_usage
            self.chunk("data: %s\n\n" % json.dumps(data))

        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(deltas):
            time.sleep(delay)
            chunk([{"index": 0, "delta": {"content": WORDS[i % len(WORDS)]}, "finish_reason": None}])
            entry["generated_output"] = tokens(text_of(i + 1))
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include:
            chunk([], usage)
        self.chunk("data: [DONE]\n\n")
        self.end_stream()

    def openai_responses(self, body, deltas, delay, entry):
        n = counts(body, deltas)
        response_id = "resp_" + uuid.uuid4().hex[:24]
        model = body.get("model", "gpt-5.2")
        output = n["text"] + n["reasoning"]
        usage = {"input_tokens": n["input"], "input_tokens_details": {"cached_tokens": n["cached"]},
                 "output_tokens": output, "output_tokens_details": {"reasoning_tokens": n["reasoning"]},
                 "total_tokens": n["input"] + output}
        text = text_of(deltas)
        entry.update(provider="openai", response_id=response_id, model=model, usage=usage, text=text)
        item = {"id": "msg_" + uuid.uuid4().hex[:16], "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}

        def response(status, with_usage, output):
            return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
                    "model": model, "output": output, "usage": with_usage, "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": []}

        if not body.get("stream"):
            self.send_json(200, response("completed", usage, [item]))
            return
        entry["stream"] = True
        self.start_stream()
        seq = [0]

        def event(name, data):
            data = dict(data, type=name, sequence_number=seq[0])
            seq[0] += 1
            self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(data)))

        event("response.created", {"response": response("in_progress", None, [])})
        for i in range(deltas):
            time.sleep(delay)
            event("response.output_text.delta", {"item_id": item["id"], "output_index": 0, "content_index": 0,
                                                 "delta": WORDS[i % len(WORDS)], "logprobs": []})
            entry["generated_output"] = tokens(text_of(i + 1))
        event("response.completed", {"response": response("completed", usage, [item])})
        self.end_stream()

    def gemini(self, body, deltas, delay, entry):
        n = counts(body, deltas)
        path = self.path.split("?")[0]
        model, action = path.split("/models/", 1)[1].split(":", 1)
        response_id = uuid.uuid4().hex[:20]
        text = text_of(deltas)
        final = {"promptTokenCount": n["input"], "cachedContentTokenCount": n["cached"],
                 "candidatesTokenCount": n["text"], "thoughtsTokenCount": n["reasoning"],
                 "totalTokenCount": n["input"] + n["text"] + n["reasoning"]}
        entry.update(provider="gemini", response_id=response_id, model=model, usage=final, text=text)

        def chunk(part, candidates):
            usage = dict(final, candidatesTokenCount=candidates,
                         totalTokenCount=n["input"] + candidates + n["reasoning"])
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": part}]}, "index": 0}],
                    "usageMetadata": usage, "modelVersion": model, "responseId": response_id}

        if action == "generateContent":
            whole = chunk(text, n["text"])
            whole["candidates"][0]["finishReason"] = "STOP"
            self.send_json(200, whole)
            return
        entry["stream"] = True
        sse = "alt=sse" in self.path
        if sse:
            self.start_stream()
        else:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.chunk("[")
        for i in range(deltas):
            time.sleep(delay)
            candidates = tokens(text_of(i + 1))
            entry["generated_output"] = candidates
            data = json.dumps(chunk(WORDS[i % len(WORDS)], candidates))
            if sse:
                self.chunk("data: %s\r\n\r\n" % data)
            else:
                self.chunk(("," if i else "") + data)
        if not sse:
            self.chunk("]")
        self.end_stream()


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
if CERT:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    context.set_alpn_protocols(["http/1.1"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
