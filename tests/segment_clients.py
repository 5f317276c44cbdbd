"""Drives a real analytics client library against Herald's tracking API.

Reads one JSON object on stdin:

    {"library": "segment" | "rudder",
     "host": "http://127.0.0.1:PORT",
     "write_key": "...",
     "sync": false,
     "calls": [{"method": "identify", "args": {"user_id": "u1", ...}}, ...]}

and makes each call through the library's module-level API, configured the
way its documentation says (segment-analytics-python: `host`; rudder-sdk-python:
`dataPlaneUrl`), with gzip on. `timestamp` arguments are ISO 8601 strings
here and become the datetimes the libraries require. Prints
{"library", "version"} on success; exits 1 with the errors the library
reported through `on_error` (or raised, in sync mode) otherwise.
"""

import json
import sys
from datetime import datetime


def configure(spec, errors):
    def on_error(error, batch):
        errors.append(f"{error!r} for {len(batch)} messages")

    if spec["library"] == "segment":
        import segment.analytics as analytics
        from segment.analytics.version import VERSION

        analytics.host = spec["host"]
    elif spec["library"] == "rudder":
        import rudderstack.analytics as analytics
        from rudderstack.analytics.version import VERSION

        analytics.dataPlaneUrl = spec["host"]
    else:
        raise SystemExit(f"unknown library {spec['library']!r}")
    analytics.write_key = spec["write_key"]
    analytics.gzip = True
    analytics.sync_mode = bool(spec.get("sync"))
    analytics.on_error = on_error
    # A refused batch is not retried (4xx); a dead server is, with backoff:
    # keep that short so a broken daemon fails the test instead of stalling it.
    analytics.max_retries = 2
    analytics.timeout = 10
    return analytics, VERSION


def main():
    spec = json.load(sys.stdin)
    errors = []
    analytics, version = configure(spec, errors)
    for call in spec["calls"]:
        args = dict(call["args"])
        if isinstance(args.get("timestamp"), str):
            args["timestamp"] = datetime.fromisoformat(args["timestamp"])
        try:
            getattr(analytics, call["method"])(**args)
        except Exception as e:  # sync mode raises what on_error gets otherwise
            errors.append(f"{call['method']}: {e!r}")
    if not spec.get("sync"):
        # Sync mode has no queue or consumer thread (shutdown would fail on it).
        analytics.flush()
        analytics.shutdown()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"library": spec["library"], "version": version}))


if __name__ == "__main__":
    main()
