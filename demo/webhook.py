"""A stand-in budget webhook receiver for the compose stack: prints every notification."""
import http.server


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(body.decode("utf-8", "replace"), flush=True)
        self.send_response(204)
        self.end_headers()


http.server.ThreadingHTTPServer(("0.0.0.0", 9099), Hook).serve_forever()
