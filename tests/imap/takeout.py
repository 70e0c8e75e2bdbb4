"""A small Google-Takeout-style mbox: CRLF line ends, From_ lines in Takeout's form
(`From 1234567890123456789@xxx Wed Jan 01 00:00:00 +0000 2020`, zone before the year) and
X-Gmail-Labels that decide the folder (Inbox, Sent, Chat)."""
import datetime


def takeout_from_line(dt):
    return f"From 1{int(dt.timestamp()):018d}@xxx {dt.strftime('%a %b %d %H:%M:%S %z %Y')}"


def message(n, user, labels, folder, when, subject, body, sender="ext@example.net", chat=False):
    dt = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S %z")
    mid = f"takeout-{user}-{n}@e2e"
    to, frm = (f"{user}@example.com", sender) if folder != "Sent" else (sender, f"{user}@example.com")
    head = [f"X-GM-THRID: 16{n:017d}", f"X-Gmail-Labels: {labels}"]
    if not chat:
        head.append(f"Delivered-To: {to}")
        head.append(f"Received: by 2002:a05:6838::1 with SMTP id x; {dt.strftime('%a, %d %b %Y %H:%M:%S %z')}")
    head += [f"From: {frm}", f"To: {to}", f"Subject: {subject}",
             f"Date: {dt.strftime('%a, %d %b %Y %H:%M:%S %z')}", f"Message-ID: <{mid}>",
             "MIME-Version: 1.0", "Content-Type: text/plain; charset=UTF-8", "Content-Transfer-Encoding: 8bit"]
    return dict(id=mid, folder=folder, epoch=int(dt.timestamp()), from_line=takeout_from_line(dt),
                text="\n".join(head) + "\n\n" + body)


def mbox(messages):
    """The mbox bytes, CRLF throughout, a blank line between messages, body `From ` quoted."""
    out = []
    for m in messages:
        body = "\n".join(">" + l if l.startswith("From ") else l for l in m["text"].split("\n"))
        out.append(m["from_line"] + "\n" + body.rstrip("\n") + "\n\n")
    return "".join(out).replace("\n", "\r\n").encode("utf-8")


MBOXES = {
    "erin": [
        message(1, "erin", "Inbox,Important,Category Personal", "INBOX", "2020-01-01 00:00:00 +0000",
                "Happy new year", "Frohes neues Jahr, Erin! äöü\n"),
        message(2, "erin", "Opened,Inbox", "INBOX", "2020-02-14 09:30:00 +0100",
                "Valentine", "A line starting with\nFrom here on it is quoted in the mbox.\n"),
        message(3, "erin", "Sent,Opened", "Sent", "2020-03-03 12:00:00 +0000",
                "Re: Valentine", "Thanks! ñ\n"),
        message(4, "erin", "Sent", "Sent", "2019-12-31 23:59:59 -0500", "Late", "sent just before midnight\n"),
        message(5, "erin", "Chat", "Chats", "2020-04-04 04:04:04 +0000", "Chat with Ext",
                "erin: hi\next: hello\n", chat=True),
    ],
    # replayed into a user who also has live copies: both kinds side by side
    "alice": [
        message(1, "alice", "Inbox,Category Updates", "INBOX", "2018-07-01 08:00:00 +0200",
                "Old newsletter", "From the archive.\n"),
        message(2, "alice", "Sent", "Sent", "2018-07-02 18:45:00 +0000", "Old reply", "old sent mail\n"),
    ],
}
