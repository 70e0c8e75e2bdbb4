#!/usr/bin/env python3
"""A fake of Google's token endpoint and Admin SDK Directory API, for the tests of
`mailkeep accounts sync` (tests/accounts.rs). Loopback only, plain HTTP.

  fake_google.py keygen KEY.json
      writes a fresh service-account key file (test-only RSA key, mode 0600)
  fake_google.py serve --key KEY.json --scenario SCENARIO.json --log LOG.jsonl
      listens on 127.0.0.1 (a free port, printed as the first line on stdout) until killed

The token endpoint verifies the JWT bearer assertion as Google does: RS256 with the public
half of KEY.json, kid, iss, sub, scope, aud and lifetime; a bad one gets 400 invalid_grant.
users.list and groups.list serve the scenario's pages, linked by nextPageToken, and check
domain, maxResults, projection and the bearer token. SCENARIO.json:

  {"admin": "admin@example.com", "domain": "example.com",
   "users": [[user, ...], ...], "groups": [[group, ...], ...],
   "fault": {"list": "users", "page": 2, "kind": "500"|"sleep"|"error_body"|"403"|"gone"|"not_a_page"},
   "sleep": 5, "endless": "users"}

`page` counts from 1. With "endless", that list never ends: every page, past the last one
given too (empty), carries a fresh nextPageToken. SCENARIO.json is read again for each list
request, so a test may change the directory between two syncs. Every request is appended to
LOG.jsonl as one JSON object.
"""

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCOPES = ("https://www.googleapis.com/auth/admin.directory.user.readonly "
          "https://www.googleapis.com/auth/admin.directory.group.readonly")
PAGE_SIZE = {"users": "500", "groups": "200"}


def keygen(path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    doc = {
        "type": "service_account",
        "project_id": "mailkeep-test",
        "private_key_id": os.urandom(20).hex(),
        "private_key": pem,
        "client_email": "mailkeep-sync@mailkeep-test.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)


def b64url(segment):
    if "=" in segment:
        raise ValueError("padded base64url segment")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class Fake:
    def __init__(self, key_path, scenario_path, log_path):
        with open(key_path) as f:
            self.key = json.load(f)
        private = serialization.load_pem_private_key(self.key["private_key"].encode(), None)
        self.public = private.public_key()
        self.scenario_path = scenario_path
        self.scenario = self.load_scenario()
        self.log_path = log_path
        self.lock = threading.Lock()
        self.tokens = set()
        self.port = None

    def load_scenario(self):
        with open(self.scenario_path) as f:
            return json.load(f)

    def log(self, entry):
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def check_assertion(self, jwt):
        """Why the assertion is bad, or None when Google would accept it."""
        try:
            head, body, sig = jwt.split(".")
            header, claims = json.loads(b64url(head)), json.loads(b64url(body))
            self.public.verify(b64url(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception as e:  # noqa: BLE001 - any failure is an invalid assertion
            return f"Invalid JWT Signature. ({type(e).__name__})"
        want_header = {"alg": "RS256", "typ": "JWT", "kid": self.key["private_key_id"]}
        if header != want_header:
            return f"bad header {header}"
        want = {"iss": self.key["client_email"], "sub": self.scenario["admin"], "scope": SCOPES,
                "aud": f"http://127.0.0.1:{self.port}/token"}
        for name, value in want.items():
            if claims.get(name) != value:
                return f"bad claim {name}: {claims.get(name)!r}"
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or abs(iat - time.time()) > 300 or exp != iat + 3600:
            return f"bad iat/exp: {iat!r}/{exp!r}"
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None  # set in serve()

    def log_message(self, *args):
        pass

    def reply(self, status, doc, entry):
        entry["status"] = status
        self.fake.log(entry)
        body = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        entry = {"method": "POST", "path": self.path}
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        if self.path != "/token":
            return self.reply(404, {"error": "not_found"}, entry)
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self.reply(400, {"error": "unsupported_grant_type"}, entry)
        problem = self.fake.check_assertion(form.get("assertion", [""])[0])
        if problem:
            entry["jwt"] = problem
            return self.reply(400, {"error": "invalid_grant", "error_description": problem}, entry)
        token = "ya29.fake-" + os.urandom(16).hex()
        with self.fake.lock:
            self.fake.tokens.add(token)
        entry.update(jwt="verified", token=token)
        self.reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}, entry)

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        entry = {"method": "GET", "path": url.path, "query": query}
        what = url.path.removeprefix("/admin/directory/v1/")
        sc = self.fake.load_scenario()
        if what not in PAGE_SIZE:
            return self.reply(404, google_error(404, "Not Found"), entry)
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.fake.tokens:
            return self.reply(401, google_error(401, "Invalid Credentials"), entry)
        want = {"domain": sc["domain"], "maxResults": PAGE_SIZE[what]}
        if what == "users":
            want["projection"] = "basic"
        if any(query.get(k) != v for k, v in want.items()):
            return self.reply(400, google_error(400, f"want query {want}"), entry)
        pages = sc.get(what, [])
        token = query.get("pageToken")
        page = 1 if token is None else page_number(token, what)
        endless = sc.get("endless") == what
        if page < 1 or (page > max(len(pages), 1) and not endless):
            return self.reply(400, google_error(400, "Invalid Input: pageToken"), entry)
        fault = sc.get("fault", {})
        if fault.get("list") == what and fault.get("page") == page:
            kind = fault["kind"]
            entry["fault"] = kind
            if kind == "500":
                return self.reply(500, google_error(500, "Backend Error"), entry)
            if kind == "403":
                return self.reply(403, google_error(403, "Not Authorized to access this resource/api"), entry)
            if kind == "gone":
                return self.reply(404, "<html>page gone</html>", entry)
            if kind == "error_body":
                return self.reply(200, google_error(503, "The service is currently unavailable."), entry)
            if kind == "not_a_page":
                return self.reply(200, {"etag": "x"}, entry)
            if kind == "sleep":
                time.sleep(sc.get("sleep", 5))
        doc = {"kind": f"admin#directory#{what}", "etag": '"fake"'}
        if page <= len(pages) and pages[page - 1]:
            doc[what] = pages[page - 1]
        if page < len(pages) or endless:
            doc["nextPageToken"] = f"{what}-p-{page + 1}"
        self.reply(200, doc, entry)


def page_number(token, what):
    """The page a nextPageToken we gave out names; 0 for a token we never gave out."""
    prefix = f"{what}-p-"
    return int(token[len(prefix):]) if token.startswith(prefix) and token[len(prefix):].isdigit() else 0


def google_error(code, message):
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": "fake"}]}}


def serve(key_path, scenario_path, log_path):
    Handler.fake = Fake(key_path, scenario_path, log_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Handler.fake.port = server.server_address[1]
    print(Handler.fake.port, flush=True)
    server.serve_forever()


def main(argv):
    if len(argv) == 3 and argv[1] == "keygen":
        return keygen(argv[2])
    if len(argv) == 8 and argv[1] == "serve" and argv[2::2] == ["--key", "--scenario", "--log"]:
        return serve(argv[3], argv[5], argv[7])
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
