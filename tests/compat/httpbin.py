"""The few httpbin.org endpoints the proxy-wasm Rust SDK's examples call, on loopback.

Usage: python3 httpbin.py PORT

/bytes/N answers N bytes whose first byte is even on the 1st, 3rd, ... call and odd on the
2nd, 4th, ... (http_auth_random grants even, denies odd: a fixed order makes both outcomes
testable); /delay/S waits S seconds; /status/N answers N (302 with a Location); /base64/X
answers X decoded; /secret answers a text holding the word "secret"; anything else echoes the
request as JSON.
"""

import base64
import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls = itertools.count()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain", extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "bytes":
            with lock:
                n = next(calls)
            first = 2 if n % 2 == 0 else 3
            data = bytes([first]) + bytes(max(int(parts[1]) - 1, 0))
            return self.reply(200, data, "application/octet-stream")
        if parts[0] == "delay":
            time.sleep(float(parts[1]))
            return self.reply(200, b'{"delayed": true}', "application/json")
        if parts[0] == "status":
            status = int(parts[1])
            extra = [("location", "/redirect-to")] if status == 302 else []
            return self.reply(status, b"", extra=extra)
        if parts[0] == "base64":
            return self.reply(200, base64.b64decode(parts[1]))
        if parts[0] == "secret":
            return self.reply(200, b"this text holds a secret\n")
        echo = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body.decode("latin1"),
        }
        return self.reply(200, json.dumps(echo).encode() + b"\n", "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
