"""Verifies one webhook with the reference Standard Webhooks library.

Reads {"secret", "headers", "body"} as JSON on stdin; exits 0 when the
signature verifies, 1 with the library's reason otherwise.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    case = json.load(sys.stdin)
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
    except Exception as e:  # the library raises its own error types
        print(f"verification failed: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
