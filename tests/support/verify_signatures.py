"""Verifies one captured delivery the way receivers do, with independent code.

Reads {"secret", "body", "headers"} as JSON on stdin. Checks the Standard Webhooks signature with
the PyPI `standardwebhooks` library and the legacy X-Webhook-Signature with Python's hmac. Prints
"ok" and exits 0, or prints why and exits 1.
"""

import base64
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    request = json.load(sys.stdin)
    secret, body, headers = request["secret"], request["body"], request["headers"]
    # The library base64-decodes the secret; a plain (non-whsec_) secret signs with its UTF-8
    # bytes, so hand it the base64 of those bytes.
    key = secret if secret.startswith("whsec_") else base64.b64encode(secret.encode()).decode()
    try:
        Webhook(key).verify(body, headers)
    except Exception as e:  # the library raises WebhookVerificationError
        print(f"standard webhooks signature rejected: {e}")
        return 1
    legacy_secret = request.get("legacy_secret", secret)
    expected = "sha256=" + hmac.new(legacy_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("x-webhook-signature", "")):
        print("legacy X-Webhook-Signature rejected")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
