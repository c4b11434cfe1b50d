"""A TLS listener that records whether each client completed the handshake.

    python3 tls_listener.py CERT KEY SECONDS

Prints `port N` once listening on 127.0.0.1, then one line per connection:
`handshake ok` when the client accepted the server's certificate, or
`handshake failed: REASON` (e.g. `tlsv1 alert unknown ca` when the client
did not trust the CA that signed it). It speaks no Kafka: after the
handshake it closes, which the client sees as a broker that went away.
Exits after SECONDS.
"""

import socket
import ssl
import sys
import time


def main() -> None:
    cert, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.5)
    print(f"port {srv.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        conn.settimeout(5)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
            print("handshake ok", flush=True)
            tls.close()
        except (ssl.SSLError, OSError) as e:
            reason = getattr(e, "reason", None) or str(e)
            print(f"handshake failed: {reason}", flush=True)
            conn.close()


if __name__ == "__main__":
    main()
