"""Independent checks of what batch-triage-notify sends, written without its code.

  check.py schema SCHEMA PAYLOAD      validate the Teams envelope's card against the schema
  check.py webhook SECRET REQUEST     verify X-Batch-Triage-Signature (hmac, constant time)
  check.py acs KEY_B64 REQUEST        verify the ACS HMAC-SHA256 Authorization header

REQUEST is a JSON file {"method", "path_and_query", "headers": {lower-case: value}, "body_b64"}.
Prints OK or a reason, exits 0 only when the check passes.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def schema(schema_path, payload_path):
    import jsonschema
    with open(schema_path) as f:
        schema = json.load(f)
    with open(payload_path, "rb") as f:
        raw = f.read()
    envelope = json.loads(raw.decode("utf-8"))
    assert envelope["type"] == "message", "envelope type must be message"
    attachment = envelope["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["version"] == "1.4", card["version"]
    jsonschema.validate(card, schema, cls=jsonschema.Draft6Validator)
    print(f"OK {len(raw)} bytes")


def load_request(path):
    with open(path) as f:
        req = json.load(f)
    return req, base64.b64decode(req["body_b64"])


def webhook(secret, path):
    req, body = load_request(path)
    h = req["headers"]
    ts = h["x-batch-triage-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        sys.exit("stale timestamp")
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest("sha256=" + mac, h["x-batch-triage-signature"]):
        sys.exit("bad signature")
    print("OK")


def acs(key_b64, path):
    req, body = load_request(path)
    h = req["headers"]
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    if h["x-ms-content-sha256"] != content_hash:
        sys.exit("content hash mismatch")
    to_sign = f'{req["method"]}\n{req["path_and_query"]}\n{h["x-ms-date"]};{h["host"]};{content_hash}'
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), to_sign.encode(), hashlib.sha256).digest()).decode()
    expected = f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={sig}"
    if not hmac.compare_digest(expected, h["authorization"]):
        sys.exit("bad authorization")
    print("OK")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"schema": schema, "webhook": webhook, "acs": acs}[command](*args)
