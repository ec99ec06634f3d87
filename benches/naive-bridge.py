#!/usr/bin/python3
"""The baseline `cargo bench --bench scale` compares the daemon with: what a person would
write in an afternoon to turn security@ mail into advisories, with none of the daemon's
guarantees (no spool, no journal, no claim, no marker, no retry, no reply threading rules).

For every message in INBOX: fetch it (IMAP, implicit TLS), create a draft advisory
(`POST /repos/{owner}/{repo}/security-advisories`), send one reply over one SMTP session
(STARTTLS, AUTH), and move the message to Processed. Two IMAP commands per message.

Usage: naive-bridge.py CONFIG.json; prints one JSON line: {"messages": N, "seconds": S}.
CONFIG holds imap_port, imap_ca, user, password, smtp_port, smtp_ca, smtp_user,
smtp_password, from, github, token, repositories (owner/name; a subject naming the short
name routes there, else the first).
"""

import email
import email.policy
import imaplib
import json
import smtplib
import ssl
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    imap_tls = ssl.create_default_context(cafile=cfg["imap_ca"])
    smtp_tls = ssl.create_default_context(cafile=cfg["smtp_ca"])
    started = time.monotonic()
    imap = imaplib.IMAP4_SSL("127.0.0.1", cfg["imap_port"], ssl_context=imap_tls)
    imap.login(cfg["user"], cfg["password"])
    imap.create("Processed")  # NO when it exists: fine
    imap.select("INBOX")
    smtp = smtplib.SMTP("127.0.0.1", cfg["smtp_port"])
    smtp.starttls(context=smtp_tls)
    smtp.login(cfg["smtp_user"], cfg["smtp_password"])
    repos = cfg["repositories"]
    done = 0
    while True:
        typ, data = imap.uid("SEARCH", None, "ALL")
        uids = data[0].split()
        if not uids:
            break
        for uid in uids:
            typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = fetched[0][1]
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            subject = str(msg.get("Subject", "(no subject)"))
            body = msg.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            repo = next((r for r in repos if r.split("/")[1].lower() in subject.lower()), repos[0])
            request = urllib.request.Request(
                f"{cfg['github']}/repos/{repo}/security-advisories",
                data=json.dumps(
                    {
                        "summary": subject[:1000],
                        "description": text or "(empty)",
                        "vulnerabilities": [
                            {"package": {"ecosystem": "pip", "name": repo.split("/")[1]}}
                        ],
                    }
                ).encode(),
                headers={
                    "Authorization": f"Bearer {cfg['token']}",
                    "Accept": "application/vnd.github+json",
                    "Content-Type": "application/json",
                    "User-Agent": "naive-bridge",
                },
                method="POST",
            )
            try:
                with urllib.request.urlopen(request) as response:
                    ghsa = json.load(response)["ghsa_id"]
            except urllib.error.HTTPError as e:
                sys.exit(f"naive-bridge: POST {repo}: {e.code} {e.read().decode()}")
            reply = EmailMessage()
            reply["From"] = cfg["from"]
            reply["To"] = str(msg.get("From"))
            reply["Subject"] = f"Re: {subject}"
            reply["Date"] = email.utils.formatdate()
            reply["Message-ID"] = email.utils.make_msgid(domain="palletsprojects.com")
            if msg.get("Message-ID"):
                reply["In-Reply-To"] = msg["Message-ID"]
            reply.set_content(f"Thank you for your report; we filed it as {ghsa}.\n")
            smtp.send_message(reply)
            typ, _ = imap.uid("MOVE", uid, "Processed")
            if typ != "OK":
                sys.exit(f"naive-bridge: MOVE {uid} refused")
            done += 1
    smtp.quit()
    imap.logout()
    print(json.dumps({"messages": done, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
