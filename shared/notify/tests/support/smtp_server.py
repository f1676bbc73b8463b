"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, each message written to OUT_DIR.

Usage: smtp_server.py OUT_DIR [USER PASSWORD]
Prints "READY <port>" once listening; stops when stdin closes.
With SMTP_TLS=starttls (STARTTLS required) or SMTP_TLS=implicit (TLS from the first byte), the
server uses the certificate and key in SMTP_CERT and SMTP_KEY.
"""
import json
import logging
import os
import socket
import ssl
import sys
import uuid
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, out_dir):
        self.out_dir = out_dir

    async def handle_DATA(self, server, session, envelope):
        name = uuid.uuid4().hex
        with open(os.path.join(self.out_dir, name + ".eml"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "authenticated": bool(getattr(session, "authenticated", False))}
        with open(os.path.join(self.out_dir, name + ".json"), "w") as f:
            json.dump(meta, f)
        return "250 Message accepted for delivery"


def main():
    logging.basicConfig(level=logging.ERROR)
    # AUTH without TLS is deliberate here (a loopback test server).
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    out_dir = sys.argv[1]
    user = sys.argv[2].encode() if len(sys.argv) > 3 else None
    password = sys.argv[3].encode() if len(sys.argv) > 3 else None

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
        # handled=False makes aiosmtpd answer 535 itself on failure.
        return AuthResult(success=ok, handled=False)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kwargs = {}
    if user is not None:
        kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
    mode = os.environ.get("SMTP_TLS")
    if mode:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["SMTP_CERT"], os.environ["SMTP_KEY"])
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)
    controller = Controller(Saver(out_dir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
