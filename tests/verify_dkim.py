"""Verifies the DKIM signature of one message with dkimpy, without DNS.

Usage: verify_dkim.py MESSAGE_FILE TXT_VALUE SELECTOR DOMAIN

The only key published is TXT_VALUE at SELECTOR._domainkey.DOMAIN, so a
signature naming any other selector or domain fails too. Exits 0 and prints
the signature's tags as JSON when it verifies; exits 1 and prints why on
stderr otherwise (2 on bad usage).
"""
import json
import logging
import sys

import dkim
from dkim.util import parse_tag_value


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    path, txt, selector, domain = sys.argv[1:]
    with open(path, "rb") as f:
        msg = f.read()
    wanted = f"{selector}._domainkey.{domain}.".lower().encode()
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name)
        if name.lower() in (wanted, wanted.rstrip(b".")):
            return txt.encode()
        return None

    log = logging.getLogger("verify_dkim")
    log.setLevel(logging.DEBUG)
    collect = Collect()
    log.addHandler(collect)
    ok = False
    error = None
    try:
        d = dkim.DKIM(msg, logger=log)
        ok = d.verify(dnsfunc=dnsfunc)
    except Exception as e:  # dkimpy reports malformed input by raising
        error = repr(e)
    if ok:
        tags = {}
        for name, value in d.headers:
            if name.lower() == b"dkim-signature":
                tags = {
                    k.decode(): v.decode("utf-8", "replace")
                    for k, v in parse_tag_value(value).items()
                }
                break
        print(json.dumps(tags))
        return 0
    print("DKIM verification failed", file=sys.stderr)
    if error:
        print(f"error: {error}", file=sys.stderr)
    print(f"DNS names asked: {asked!r}", file=sys.stderr)
    for line in collect.lines:
        print(f"dkimpy: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
