"""Schemathesis hooks for scripts/fuzz.sh: the custom check `rejected_changes_nothing`.

Before every call the hooks read back what a request could change (the catalog with its
stock, the fuzzing customer's person and shipping info, and for a sign-up whether its email
and password log in); after a rejected call (4xx) the check reads it again and fails if
anything differs. Purchases accepted earlier change stock while their sagas run, so the
snapshot is taken only once every accepted purchase is terminal.
"""

import json
import os
import time
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["SAGASHOP_FUZZ_URL"].rstrip("/")
TOKEN = os.environ["SAGASHOP_FUZZ_TOKEN"]
PAGE = 500
SETTLE_SECONDS = 20

# purchases answered 201 whose saga may still be running
_pending: set[int] = set()
# the snapshot taken before the call being checked
_before: dict = {}


def _request(method, path, body=None, auth=True):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if auth:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, raw.decode(errors="replace")


def _catalog():
    products, offset = [], 0
    while True:
        status, page = _request("GET", f"/api/products?offset={offset}&size={PAGE}", auth=False)
        assert status == 200, f"catalog read failed: {status} {page}"
        lines = page["catalogs"] or []
        products.extend(lines)
        if len(lines) < PAGE:
            return products
        offset += PAGE


def _settle():
    """Waits until every purchase accepted so far is terminal (its stock moves are done)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    for purchase_id in sorted(_pending):
        while True:
            status, view = _request("GET", f"/api/purchase/{purchase_id}")
            if status != 200 or view["status"] != "PENDING" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        _pending.discard(purchase_id)


def _signup_logs_in(case):
    body = case.body if isinstance(case.body, dict) else {}
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return None
    status, _ = _request(
        "POST", "/api/account/auth/login", {"email": email, "password": password}, auth=False
    )
    return status == 200


def _snapshot(case):
    snap = {
        "catalog": _catalog(),
        "person": _request("GET", "/api/account/info/person"),
        "shipping": _request("GET", "/api/account/info/shipping"),
    }
    if case.operation.path == "/api/account/auth/signup":
        snap["signup logs in"] = _signup_logs_in(case)
    return snap


@schemathesis.hook
def before_call(context, case, kwargs):
    _settle()
    _before.clear()
    _before.update(_snapshot(case))


@schemathesis.hook
def after_call(context, case, response):
    if (
        case.operation.path == "/api/purchase"
        and case.method.upper() == "POST"
        and response.status_code == 201
    ):
        _pending.add(response.json()["purchase_id"])


@schemathesis.check
def rejected_changes_nothing(ctx, response, case):
    """A request answered 4xx changed nothing that the API shows."""
    if not 400 <= response.status_code < 500 or not _before:
        return None
    after = _snapshot(case)
    changed = [key for key in _before if _before[key] != after.get(key)]
    if changed:
        details = "; ".join(f"{k}: {_before[k]!r} -> {after.get(k)!r}"[:600] for k in changed)
        raise AssertionError(
            f"{case.method} {case.operation.path} answered {response.status_code} "
            f"but changed {', '.join(changed)}: {details}"
        )
    return None
