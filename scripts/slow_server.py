#!/usr/bin/env python3
# A loopback HTTP server that answers every POST after 30 s (for scripts/takeover_bench.py).
import http.server, time, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n=int(self.headers.get('content-length',0)); self.rfile.read(n)
        time.sleep(30)
        self.send_response(200); self.send_header('content-type','application/json'); self.end_headers(); self.wfile.write(b'{}')
    def log_message(self,*a): pass
http.server.ThreadingHTTPServer(('127.0.0.1',18999),H).serve_forever()
