"""What the Python benchmarks share: free ports, awaiting a condition, process liveness, posting
one usage event. Imported by the scripts beside it."""
import json
import socket
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, condition, limit=90, every=0.05):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def alive(pid):
    """Running: the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def post(port, usd):
    """One llm_usage event of `usd` to the daemon on `port`."""
    body = json.dumps({"type": "llm_usage", "agent": "coder", "model": "gpt-5", "input_tokens": 100,
                       "output_tokens": 10, "cost_usd": usd}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", body,
                                                  {"Content-Type": "application/json"}), timeout=5)
