"""The ESPs' side of the feedback tests: signs webhook requests the way each
provider does, with keys of its own, and plays the SNS endpoints Herald
calls back (the signing certificate and the subscription confirmation).

Usage: esp_peer.py PKI_DIR

PKI_DIR is what make_test_pki.py wrote: ca.pem/ca.key (the test CA) and
cert.pem/key.pem (its certificate for localhost and 127.0.0.1). The peer
makes an ECDSA P-256 pair (SendGrid), an RSA 2048 key with a signing
certificate issued by that CA (SNS), a Standard Webhooks secret (Resend)
and an HMAC key (Mailgun), and serves over HTTPS, with the localhost
certificate, on one port of 127.0.0.1 (and of ::1 where it can bind it):

  GET /sns/cert.pem      the SNS signing certificate (any path ending in
                         .pem under /sns/ serves it, so a test can tell its
                         fetches apart by path)
  GET /sns/confirm?...   a SubscribeURL: records the query's Token and
                         answers an SNS-like ConfirmSubscriptionResponse
  anything else          404
Every request's path is recorded, answered or not.

Its first line on stdout, once listening:
  {"port": N, "cert_url": "https://localhost:N/sns/cert.pem",
   "confirm_url": "https://localhost:N/sns/confirm",
   "sendgrid_public_key": BASE64 SPKI DER, "resend_secret": "whsec_...",
   "mailgun_signing_key": "..."}

Then each line on stdin is one JSON command, answered by one JSON line on
stdout, in order ({"error": "..."} when it cannot be done):
  {"op": "sendgrid", "body": STR, "timestamp": STR?}
      -> {"signature": BASE64 DER ECDSA-SHA256 over timestamp + body,
          "timestamp": STR}       (timestamp: now in Unix seconds if absent)
  {"op": "resend", "body": STR, "id": STR, "timestamp": INT?}
      -> {"svix-id", "svix-timestamp", "svix-signature"} signed by the
         standardwebhooks library
  {"op": "mailgun", "timestamp": STR?, "token": STR?}
      -> {"timestamp", "token", "signature": hex HMAC-SHA256(key, ts + token)}
  {"op": "sns", "envelope": {...}, "version": "1" | "2"}
      -> {"body": STR}: the envelope with SignatureVersion, SigningCertURL
         (unless the envelope names one) and Signature (RSA PKCS#1 v1.5,
         SHA1 for "1", SHA256 for "2") over SNS's string to sign
  {"op": "stats"}
      -> {"confirmations": [Token, ...], "requests": [path, ...]}
Runs until stdin closes.
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

# The pairs SNS signs, in this order, for each message type.
NOTIFICATION_KEYS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_KEYS = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]


def sns_string_to_sign(envelope) -> bytes:
    kind = envelope.get("Type")
    keys = NOTIFICATION_KEYS if kind == "Notification" else CONFIRMATION_KEYS
    out = ""
    for key in keys:
        if key in envelope and envelope[key] is not None:
            out += f"{key}\n{envelope[key]}\n"
    return out.encode()


class State:
    def __init__(self, pki_dir):
        with open(os.path.join(pki_dir, "ca.pem"), "rb") as f:
            self.ca = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(pki_dir, "ca.key"), "rb") as f:
            self.ca_key = serialization.load_pem_private_key(f.read(), password=None)
        self.sendgrid_key = ec.generate_private_key(ec.SECP256R1())
        self.sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sns_cert_pem = self.issue_sns_cert()
        self.resend_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.mailgun_key = secrets.token_hex(16) + "-" + secrets.token_hex(4) + "-" + secrets.token_hex(4)
        self.lock = threading.Lock()
        self.confirmations = []
        self.requests = []

    def issue_sns_cert(self) -> bytes:
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]))
            .issuer_name(self.ca.subject)
            .public_key(self.sns_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def sendgrid_public_key(self) -> str:
        der = self.sendgrid_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def record(self, path):
        with self.lock:
            self.requests.append(path)

    def confirm(self, token):
        with self.lock:
            self.confirmations.append(token)


def make_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, *args):
            pass

        def send(self, status, body: bytes, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            state.record(self.path)
            url = urllib.parse.urlsplit(self.path)
            if url.path.startswith("/sns/") and url.path.endswith(".pem"):
                self.send(200, state.sns_cert_pem, "application/x-pem-file")
            elif url.path == "/sns/confirm":
                query = urllib.parse.parse_qs(url.query)
                token = (query.get("Token") or [""])[0]
                state.confirm(token)
                body = (
                    '<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                    "<ConfirmSubscriptionResult><SubscriptionArn>"
                    + (query.get("TopicArn") or [""])[0]
                    + ":" + secrets.token_hex(8)
                    + "</SubscriptionArn></ConfirmSubscriptionResult>"
                    "</ConfirmSubscriptionResponse>"
                )
                self.send(200, body.encode(), "text/xml")
            else:
                self.send(404, b"not found", "text/plain")

        def do_POST(self):
            state.record(self.path)
            self.send(405, b"method not allowed", "text/plain")

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, family, address, handler, ctx):
        self.address_family = family
        self.ctx = ctx
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = super().get_request()
        sock.settimeout(30)
        # The handshake runs on the request's own thread, so a client that
        # never completes it holds up nobody else.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def serve(state, pki_dir):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(pki_dir, "cert.pem"), os.path.join(pki_dir, "key.pem"))
    handler = make_handler(state)
    v4 = Server(socket.AF_INET, ("127.0.0.1", 0), handler, ctx)
    port = v4.server_address[1]
    servers = [v4]
    # Where localhost also names ::1, a client may try it first.
    try:
        servers.append(Server(socket.AF_INET6, ("::1", port), handler, ctx))
    except OSError:
        pass
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return port


def now_secs() -> int:
    return int(time.time())


def run(state, cmd):
    op = cmd.get("op")
    if op == "sendgrid":
        ts = str(cmd.get("timestamp") or now_secs())
        sig = state.sendgrid_key.sign(ts.encode() + cmd["body"].encode(), ec.ECDSA(hashes.SHA256()))
        return {"signature": base64.b64encode(sig).decode(), "timestamp": ts}
    if op == "resend":
        ts = int(cmd.get("timestamp") or now_secs())
        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
        sig = Webhook(state.resend_secret).sign(cmd["id"], when, cmd["body"])
        return {"svix-id": cmd["id"], "svix-timestamp": str(ts), "svix-signature": sig}
    if op == "mailgun":
        ts = str(cmd.get("timestamp") or now_secs())
        token = cmd.get("token") or secrets.token_hex(25)
        sig = hmac.new(state.mailgun_key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
        return {"timestamp": ts, "token": token, "signature": sig}
    if op == "sns":
        envelope = dict(cmd["envelope"])
        version = str(cmd.get("version") or "1")
        envelope["SignatureVersion"] = version
        envelope.setdefault("SigningCertURL", cmd["cert_url"])
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        sig = state.sns_key.sign(sns_string_to_sign(envelope), padding.PKCS1v15(), digest)
        envelope["Signature"] = base64.b64encode(sig).decode()
        return {"body": json.dumps(envelope)}
    if op == "stats":
        with state.lock:
            return {"confirmations": list(state.confirmations), "requests": list(state.requests)}
    raise ValueError(f"unknown op {op!r}")


def answer(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pki_dir = sys.argv[1]
    state = State(pki_dir)
    port = serve(state, pki_dir)
    cert_url = f"https://localhost:{port}/sns/cert.pem"
    answer({
        "port": port,
        "cert_url": cert_url,
        "confirm_url": f"https://localhost:{port}/sns/confirm",
        "sendgrid_public_key": state.sendgrid_public_key(),
        "resend_secret": state.resend_secret,
        "mailgun_signing_key": state.mailgun_key,
    })
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            if cmd.get("op") == "sns":
                cmd.setdefault("cert_url", cert_url)
            answer(run(state, cmd))
        except Exception as e:  # a bad command must be an answer, not a hang
            answer({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
