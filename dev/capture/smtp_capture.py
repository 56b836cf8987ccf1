"""SMTP capture for ferry's local stack.

Two listeners on SMTP_HOST:
  SMTP_PLAIN_PORT  plain SMTP, no auth required
  SMTP_TLS_PORT    STARTTLS required, then AUTH (PLAIN/LOGIN) with SMTP_USER and the password
                   in SMTP_PASSWORD_FILE; certificate SMTP_CERT / SMTP_KEY
  SMTPS_PORT       TLS from the first byte (implicit TLS, as on port 465), then the same AUTH

Every accepted mail is written to SMTP_OUT as <n>.eml, and one JSON line is appended to
SMTP_OUT/index.jsonl: {"file", "port", "tls", "auth_user", "mail_from", "rcpt_tos"}.
"""
import json
import os
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = os.environ["SMTP_HOST"]
OUT = os.environ["SMTP_OUT"]
USER = os.environ["SMTP_USER"]
with open(os.environ["SMTP_PASSWORD_FILE"]) as f:
    PASSWORD = f.read().strip()

_lock = threading.Lock()
_counter = [0]


class Capture:
    def __init__(self, port, tls):
        self.port = port
        self.tls = tls

    async def handle_DATA(self, server, session, envelope):
        with _lock:
            _counter[0] += 1
            name = f"{int(time.time() * 1000)}-{os.getpid()}-{_counter[0]}.eml"
            with open(os.path.join(OUT, name), "wb") as f:
                f.write(envelope.original_content or envelope.content)
            record = {
                "file": name,
                "port": self.port,
                "tls": bool(session.ssl),
                "auth_user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
            }
            with open(os.path.join(OUT, "index.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")
    if auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD:
        return AuthResult(success=True, auth_data=auth_data)
    # handled=False with a message: otherwise aiosmtpd leaves the client waiting for a reply.
    return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")


def main():
    os.makedirs(OUT, exist_ok=True)
    plain_port = int(os.environ["SMTP_PLAIN_PORT"])
    tls_port = int(os.environ["SMTP_TLS_PORT"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["SMTP_CERT"], os.environ["SMTP_KEY"])
    plain = Controller(Capture(plain_port, False), hostname=HOST, port=plain_port)
    secure = Controller(
        Capture(tls_port, True),
        hostname=HOST,
        port=tls_port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    smtps_port = int(os.environ["SMTPS_PORT"])
    implicit = Controller(
        Capture(smtps_port, True),
        hostname=HOST,
        port=smtps_port,
        ssl_context=context,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # the whole connection is TLS; aiosmtpd only tracks STARTTLS
    )
    plain.start()
    secure.start()
    implicit.start()
    print(f"smtp capture: plain {HOST}:{plain_port}, starttls+auth {HOST}:{tls_port}, tls+auth {HOST}:{smtps_port}, out {OUT}", flush=True)
    try:
        threading.Event().wait()
    finally:
        plain.stop()
        secure.stop()
        implicit.stop()


if __name__ == "__main__":
    main()
