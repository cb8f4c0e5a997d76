#!/usr/bin/env python3
"""A stand-in for an application's metrics: http_requests_total{version, code} counters that grow
at fixed rates, for the step-gate demo (scripts/checks-demo.sh) on a cluster whose pods are kwok
fakes and serve no traffic.

    fake-app-exporter.py PORT VERSION:CODE:RATE ...   e.g. 1.0.1:200:50 1.0.1:500:0.1
"""
import http.server
import sys
import time

START = time.monotonic()
SERIES = []
for arg in sys.argv[2:]:
    version, code, rate = arg.split(":")
    SERIES.append((version, code, float(rate)))


class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        elapsed = time.monotonic() - START
        lines = ["# TYPE http_requests_total counter"]
        for version, code, rate in SERIES:
            lines.append(f'http_requests_total{{version="{version}",code="{code}"}} {rate * elapsed:.3f}')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Metrics).serve_forever()
