"""A scriptable SMTP peer on loopback for the mail tests (aiosmtpd).

Usage: smtp_sink.py [OPTIONS_JSON]

OPTIONS_JSON is one JSON object, every key optional:
  "dir":      where each accepted message is kept as NNNNNN.eml (the bytes of
              DATA as received, dot-unstuffed) plus NNNNNN.json (mail_from,
              rcpt_tos, reply, tls, ...). The .json is renamed into place after
              the .eml is complete, so a reader that lists *.json never sees a
              half-written message. Every finished DATA, accepted or not, is
              also appended to transactions.jsonl. Default: a new temp dir.
  "replies":  the end-of-DATA replies, in order, one per transaction.
  "per_rcpt": {"address": [replies]}, one per transaction naming that
              address; wins over "replies" for that address.
              Once a list is used up its last reply repeats; with no list at
              all the answer is 250. A bare code gets a text of its own
              ("250" -> "250 2.0.0 Ok: queued as <ID>"); "{id}" in a reply is
              replaced by the queue id. When a transaction names several
              addresses, the first reply that is not 2xx answers for all.
              Each reply must be "NNN" or "NNN text" with NNN in 200-599; a
              script with anything else is refused (at start: exit status 1).
  "port":     bind this port instead of an ephemeral one.
  "tls":      {"cert": PEM, "key": PEM, "require": bool, "implicit": bool}
              STARTTLS (refusing mail before it when "require"), or TLS from
              the first byte when "implicit".
  "auth":     {"user": ..., "password": ...} offer AUTH PLAIN/LOGIN and
              refuse MAIL until the client logs in with these.

Prints {"port": N, "dir": DIR} on stdout once listening. Each line on stdin is
a JSON object with new "replies"/"per_rcpt" (counters start over), answered by
{"ok": true} or {"error": ...} on stdout. Runs until stdin closes or it is
killed.
"""
import asyncio
import json
import logging
import os
import re
import secrets
import ssl
import sys
import tempfile
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOSTNAME = "sink.test"


def expand(reply: str, queue_id: str) -> str:
    reply = str(reply).strip()
    if reply.isdigit() and len(reply) == 3:
        reply = {
            "2": "{code} 2.0.0 Ok: queued as {id}",
            "4": "{code} 4.0.0 Temporary failure, try again later",
            "5": "{code} 5.0.0 Rejected",
        }.get(reply[0], "{code} Unknown").replace("{code}", reply)
    return reply.replace("{id}", queue_id)


def is_2xx(reply: str) -> bool:
    return reply[:1] == "2"


def norm(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


REPLY = re.compile(r"[2-5][0-9][0-9]( [^\r\n]*)?")


def checked(replies):
    """A script's replies, refusing any that could not be a final SMTP reply."""
    if not isinstance(replies, list):
        raise ValueError(f"replies must be a list, not {replies!r}")
    for r in replies:
        if not isinstance(r, str) or not REPLY.fullmatch(r.strip()):
            raise ValueError(f"not an SMTP reply: {r!r}")
    return [r.strip() for r in replies]


class Script:
    def __init__(self, replies=None, per_rcpt=None):
        self.replies = checked(replies or [])
        self.per_rcpt = {norm(k): checked(v) for k, v in (per_rcpt or {}).items()}
        self.used = 0
        self.used_by = {}

    @staticmethod
    def pick(replies, n):
        if not replies:
            return "250"
        return replies[min(n, len(replies) - 1)]

    def next_for(self, rcpts):
        """The reply for one transaction, advancing every counter it used."""
        chosen = []
        used_global = False
        for rcpt in rcpts:
            key = norm(rcpt)
            if key in self.per_rcpt:
                n = self.used_by.get(key, 0)
                self.used_by[key] = n + 1
                chosen.append(self.pick(self.per_rcpt[key], n))
            else:
                used_global = True
        if used_global or not rcpts:
            chosen.append(self.pick(self.replies, self.used))
            self.used += 1
        for reply in chosen:
            if not is_2xx(reply.strip()):
                return reply
        return chosen[0]


class Sink:
    def __init__(self, directory, script):
        self.dir = directory
        self.script = script
        self.seq = 0

    def write_atomically(self, name, data: bytes):
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        os.replace(tmp, os.path.join(self.dir, name))

    def record(self, server, session, envelope):
        self.seq += 1
        seq = self.seq
        queue_id = secrets.token_hex(6).upper()
        reply = expand(self.script.next_for(envelope.rcpt_tos), queue_id)
        accepted = is_2xx(reply)
        transport = getattr(server, "transport", None)
        tls = getattr(session, "ssl", None) is not None or (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        meta = {
            "seq": seq,
            "id": queue_id if accepted else None,
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options or []),
            "rcpt_tos": list(envelope.rcpt_tos),
            "reply": reply,
            "accepted": accepted,
            "tls": tls,
            "ehlo": getattr(session, "host_name", None),
            "auth": (session.auth_data.login.decode("utf-8", "replace")
                     if isinstance(getattr(session, "auth_data", None), LoginPassword)
                     else None),
            "size": len(envelope.original_content or b""),
        }
        name = f"{seq:06d}"
        if accepted:
            meta["eml"] = name + ".eml"
        # The transaction is recorded before the message appears, so a test
        # that saw a message always finds its transaction too.
        with open(os.path.join(self.dir, "transactions.jsonl"), "a") as f:
            f.write(json.dumps(meta) + "\n")
        if accepted:
            self.write_atomically(name + ".eml", envelope.original_content or b"")
            self.write_atomically(name + ".json", json.dumps(meta).encode())
        return reply


class Handler:
    def __init__(self, sink: Sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        try:
            return self.sink.record(server, session, envelope)
        except Exception as e:  # a sink bug must show up as an answer, not a hang
            logging.exception("recording a message")
            return f"451 4.3.0 sink error: {type(e).__name__}"


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def tls_context(tls):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls["cert"], tls["key"])
    return ctx


def stdin_lines(loop, queue):
    """Blocking reads on a thread: asyncio's pipe readers reject some stdins."""
    try:
        for line in sys.stdin.buffer:
            loop.call_soon_threadsafe(queue.put_nowait, line)
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


def answer(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(opts):
    loop = asyncio.get_running_loop()
    directory = opts.get("dir") or tempfile.mkdtemp(prefix="smtp-sink-")
    os.makedirs(directory, exist_ok=True)
    sink = Sink(directory, Script(opts.get("replies"), opts.get("per_rcpt")))
    tls = opts.get("tls") or None
    ctx = tls_context(tls) if tls else None
    implicit = bool(tls and tls.get("implicit"))
    auth = opts.get("auth") or None

    def factory():
        kwargs = {}
        if auth:
            kwargs.update(
                authenticator=Authenticator(auth["user"], auth["password"]),
                auth_required=True,
                # Implicit TLS is invisible to aiosmtpd's own check.
                auth_require_tls=not implicit,
            )
        return SMTP(
            Handler(sink),
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            tls_context=None if implicit else ctx,
            require_starttls=bool(tls and tls.get("require")) and not implicit,
            timeout=120,
            loop=loop,
            **kwargs,
        )

    server = await loop.create_server(
        factory,
        host="127.0.0.1",
        port=int(opts.get("port") or 0),
        reuse_address=True,
        ssl=ctx if implicit else None,
    )
    port = server.sockets[0].getsockname()[1]
    answer({"port": port, "dir": directory})

    queue = asyncio.Queue()
    threading.Thread(target=stdin_lines, args=(loop, queue), daemon=True).start()
    while True:
        line = await queue.get()
        if line is None:
            break
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            sink.script = Script(cmd.get("replies"), cmd.get("per_rcpt"))
            answer({"ok": True})
        except Exception as e:
            answer({"error": repr(e)})
    server.close()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="smtp_sink %(levelname)s %(name)s: %(message)s")
    # aiosmtpd cannot see implicit TLS and warns that AUTH runs without it.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].strip() else {}
    try:
        asyncio.run(serve(opts))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
