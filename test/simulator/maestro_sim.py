#!/usr/bin/env python3
"""Maestro (Workflow Builder) API simulator for the maestro PostgreSQL extension.

This file owns the whole simulator. It is one file, standard library only,
Python 3.11+:

* the deterministic seed data (one account, three workflows, four instances);
* the eight public v1 endpoints under /v1/accounts/{accountId}/..., with the
  wire schemas of maestro.rest.swagger-v1.0.0.json (snake_case), plus the
  account-wide, paged GET /workflow-instances of the live reference (its
  element schema is unpublished: the simulator's choice), the legacy
  {error, code, timestamp} body for unknown workflows/accounts, RFC 9457
  problem details (application/problem+json) for every other error, and the
  text/plain 401;
* the X-RateLimit-* headers;
* fault injection driven by a "/_fault/<spec>" path prefix;
* example replay from the OpenAPI file driven by "/_example/<status>/<name>";
* the control endpoints under /__sim/ (no auth);
* DocuSign's account server token endpoint, POST /oauth/token (JWT Grant:
  RS256 assertions checked with a minimal DER reader and pure-Python RSA);
* optional HTTPS (--tls-cert/--tls-key);
* the HTTP/1.1 keep-alive server and the command line.

Secrets (bearer tokens, JWT assertions, issued access tokens, the mtsec part
of instance URLs) are never written to the simulator's own logs. See
README.md beside this file for usage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import http
import json
import re
import secrets
import signal
import socket
import ssl
import string
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

# --------------------------------------------------------------------------
# Constants and seed data
# --------------------------------------------------------------------------

ACCOUNT_ID = "7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10"
DEFAULT_TOKEN = "sim-token"
DEFAULT_PORT = 57480

WF_ONBOARDING = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001"
WF_VENDOR = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002"
WF_LEGACY_NDA = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003"

# The user the simulator pretends to be (starts and cancels instances).
SIM_USER_ID = "0ccdbb0b-a72e-452f-95f0-9f19654cb620"
SIM_USER_NAME = "Jane Doe"
# The user who "designed" the seed workflows.
DESIGNER_ID = "3d2ac2f5-4adb-4537-8f69-d9feb328052b"

WORKFLOW_STATUS_ENUM = ("active", "inactive", "publishing", "unpublishing",
                        "archived", "archiving")
TERMINAL_INSTANCE_STATUSES = ("Completed", "Canceled", "Failed")

RATE_LIMIT = 3000
# the account-wide instance list: page sizes are the simulator's choice
ACCOUNT_PAGE_SIZE_DEFAULT = 100
ACCOUNT_PAGE_SIZE_MAX = 1000
ACCOUNT_LAST_CTOKEN = ("absent", "empty", "null")
REQUEST_LOG_MAX = 100_000
BULK_MAX = 1_000_000

UUID_RE = re.compile(r"^[{]?[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}[}]?$")
HOST_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")

RFC_TYPES = {
    400: "https://developers.docusign.com/errors/invalid-request",
    401: "https://developers.docusign.com/errors/unauthorized",
    403: "https://developers.docusign.com/errors/forbidden",
    404: "https://developers.docusign.com/errors/not-found",
    409: "https://developers.docusign.com/errors/conflict",
}

UNAUTHORIZED_TEXT = "Unauthorized - Please provide a valid access token."

# OAuth (DocuSign account server, API-NOTES section 9.2)
OAUTH_TOKEN_PATH = "/oauth/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_OAUTH_AUD = "account-d.docusign.com"
DEFAULT_TOKEN_LIFETIME = 3600
REQUIRED_SCOPES = ("signature", "aow_manage")
JWT_MAX_LIFETIME = 3600     # exp - iat must not exceed this
JWT_CLOCK_SKEW = 60         # iat / nbf may be this many seconds in the future
ASSERTION_MAX_LEN = 16384
OAUTH_TOKENS_MAX = 100_000  # issued tokens remembered (expired ones pruned first)
TLS_HANDSHAKE_TIMEOUT = 10


def seed_workflows() -> dict[str, dict[str, Any]]:
    """Workflow definitions: wire object plus simulator-only trigger data.

    Each value is {"wire": <Workflow object>, "trigger_id": uuid,
    "trigger_input_schema": [...], "total_steps": int,
    "workflow_version": str, "workflow_metadata_id": str}.
    """
    def wf(wid, name, status, meta, trigger_id, schema, steps, mongo_id):
        return {
            "wire": {"id": wid, "name": name, "account_id": ACCOUNT_ID,
                     "status": status, "metadata": meta},
            "trigger_id": trigger_id,
            "trigger_input_schema": schema,
            "total_steps": steps,
            "workflow_version": "1.0.0",
            "workflow_metadata_id": mongo_id,
        }

    return {
        WF_ONBOARDING: wf(
            WF_ONBOARDING, "Customer Onboarding", "active",
            {"created_at": "2025-01-26T18:17:06.208+00:00", "created_by": DESIGNER_ID,
             "modified_at": "2025-01-26T18:21:11.131+00:00", "modified_by": DESIGNER_ID},
            "c30c7afc-7d56-451c-b889-0a6488820001",
            [{"field_name": "Name", "field_data_type": "String"},
             {"field_name": "Email", "field_data_type": "String"},
             {"field_name": "Company", "field_data_type": "String",
              "default_value": "ACME Corp"}],
            3, "66df63a436871a9d22c63b01"),
        WF_VENDOR: wf(
            WF_VENDOR, "Vendor Approval", "active",
            {"created_at": "2025-03-04T09:15:00.000Z", "created_by": DESIGNER_ID,
             "modified_at": "2025-05-13T21:01:05.4823174Z", "modified_by": DESIGNER_ID},
            "c30c7afc-7d56-451c-b889-0a6488820002",
            [{"field_name": "Amount", "field_data_type": "Number"},
             {"field_name": "Approver", "field_data_type": "String"},
             {"field_name": "Urgent", "field_data_type": "Boolean",
              "default_value": False}],
            2, "66df63a436871a9d22c63b02"),
        WF_LEGACY_NDA: wf(
            WF_LEGACY_NDA, "Legacy NDA", "inactive",
            {"created_at": "2025-02-10T08:00:00+00:00", "created_by": DESIGNER_ID,
             "modified_at": "2025-04-01T16:45:30.5Z", "modified_by": "Bob Smith"},
            "c30c7afc-7d56-451c-b889-0a6488820003",
            [{"field_name": "Email", "field_data_type": "String"}],
            1, "66df63a436871a9d22c63b03"),
    }


def _instance_metadata(workflow: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_created_by": workflow["wire"]["metadata"]["created_by"],
            "workflow_version": workflow["workflow_version"],
            "workflow_metadata_id": workflow["workflow_metadata_id"]}


def seed_instances(workflows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Four fixed instances (wire objects, in creation order)."""
    m1 = _instance_metadata(workflows[WF_ONBOARDING])
    m2 = _instance_metadata(workflows[WF_VENDOR])
    return [
        {
            "id": "b5500000-0000-4000-8000-000000000001",
            "name": "Onboard ada@example.com",
            "workflow_status": "Completed",
            "template_id": WF_ONBOARDING, "account_id": ACCOUNT_ID,
            "started_at": "2025-06-02T09:00:00.000Z",
            "started_by": SIM_USER_ID, "started_by_name": SIM_USER_NAME,
            "started_by_role": "Preparer",
            "ended_at": "2025-06-02T10:30:00.000Z",
            "expires_at": "2025-07-02T09:00:00.000Z",
            "last_modified_at": "2025-06-02T10:30:00.000Z",
            "canceled_at": None, "canceled_by": None,
            "trigger_inputs": {"Name": "Ada Lovelace", "Email": "ada@example.com",
                               "Company": "Analytical Engines Ltd"},
            "total_steps": 3, "last_completed_step": 3,
            "last_completed_step_name": "Countersign",
            "tags": ["onboarding", "vip"],
            "metadata": m1,
        },
        {
            "id": "b5500000-0000-4000-8000-000000000002",
            "name": "Onboard bob@example.com",
            "workflow_status": "In Progress",
            "template_id": WF_ONBOARDING, "account_id": ACCOUNT_ID,
            "started_at": "2025-06-03T11:15:42.118Z",
            "started_by": SIM_USER_ID, "started_by_name": SIM_USER_NAME,
            "started_by_role": "Preparer",
            "ended_at": None,
            "expires_at": "2025-07-03T11:15:42.119Z",
            "last_modified_at": "2025-06-03T11:20:07.5213391Z",
            "canceled_at": None, "canceled_by": None,
            "trigger_inputs": {"Name": "Bob Builder", "Email": "bob@example.com",
                               "Company": "ACME Corp"},
            "total_steps": 3, "last_completed_step": 1,
            "last_completed_step_name": "Collect customer details",
            "tags": ["onboarding"],
            "metadata": m1,
            "priority": "high",  # undeclared field: clients must tolerate it
        },
        {
            "id": "b5500000-0000-4000-8000-000000000003",
            "name": "Onboard carol@example.com",
            "workflow_status": "Canceled",
            "template_id": WF_ONBOARDING, "account_id": ACCOUNT_ID,
            "started_at": "2025-06-04T08:00:00+00:00",
            "started_by": SIM_USER_ID, "started_by_name": SIM_USER_NAME,
            "started_by_role": "Preparer",
            "ended_at": "2025-06-05T12:00:00.000Z",
            "expires_at": "2025-07-04T08:00:00.000Z",
            "last_modified_at": "2025-06-05T12:00:00.000Z",
            "canceled_at": "2025-06-05T12:00:00.000Z", "canceled_by": SIM_USER_ID,
            # Singular key, as in the spec's WorkflowInstanceExample (API-NOTES §13 Q5).
            "trigger_input": {"Name": "Carol Danvers", "Email": "carol@example.com",
                              "Company": "ACME Corp"},
            "total_steps": 3, "last_completed_step": 0,
            "last_completed_step_name": None,
            "tags": [],
            "metadata": m1,
        },
        {
            "id": "b5500000-0000-4000-8000-000000000004",
            "name": "Approve PO-1001",
            "workflow_status": "In Progress",
            "template_id": WF_VENDOR, "account_id": ACCOUNT_ID,
            "started_at": "2025-06-10T14:00:00.250Z",
            "started_by": SIM_USER_ID, "started_by_name": SIM_USER_NAME,
            "started_by_role": "Preparer",
            "ended_at": None,
            "expires_at": "2025-07-10T14:00:00.250Z",
            "last_modified_at": "2025-06-10T14:05:12.000Z",
            "canceled_at": None, "canceled_by": None,
            "trigger_inputs": {"Amount": 1001.5, "Approver": "cfo@example.com",
                               "Urgent": True},
            "total_steps": 2, "last_completed_step": 0,
            "last_completed_step_name": None,
            "tags": ["procurement"],
            "metadata": m2,
        },
    ]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def iso_ms(ts: float | None = None) -> str:
    """RFC 3339 UTC timestamp with milliseconds, e.g. 2025-06-02T09:00:00.000Z."""
    d = dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def iso_7(ts: float | None = None) -> str:
    """RFC 3339 UTC timestamp with 7 fractional digits (.NET style)."""
    d = dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}0Z"


def next_top_of_hour(now: float | None = None) -> int:
    now = time.time() if now is None else now
    return (int(now) // 3600 + 1) * 3600


def normalize_uuid(value: str) -> str | None:
    """Lower-case, brace-less UUID, or None if value is not a UUID per the spec pattern."""
    if not UUID_RE.match(value):
        return None
    return value.strip("{}").lower()


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_TRACE_ALPHABET = string.ascii_uppercase + string.digits
_trace_counter = iter(range(1, 1 << 62))
_trace_lock = threading.Lock()
_TRACE_PREFIX = "0HN" + "".join(secrets.choice(_TRACE_ALPHABET) for _ in range(10))


def aspnet_request_id() -> str:
    """An ASP.NET-style trace id like 0HNIITVKLNCS9:0000004A."""
    with _trace_lock:
        n = next(_trace_counter)
    return f"{_TRACE_PREFIX}:{n:08X}"


# --------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Response:
    """A response to write. `chunks` (with `length`) replaces `body` for streamed bodies."""
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    chunks: Iterable[bytes] | None = None
    length: int | None = None


def json_response(status: int, obj: Any) -> Response:
    return Response(status, json_bytes(obj), "application/json")


def text_response(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def problem_body(status: int, detail: str, instance: str,
                 errors: list[dict[str, str]] | None = None,
                 title: str | None = None, type_uri: str | None = None) -> dict[str, Any]:
    """RFC 9457 problem details as in workflowbuilder ErrDetails."""
    body: dict[str, Any] = {
        "type": type_uri or RFC_TYPES.get(status, "about:blank"),
        "title": title or status_phrase(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "timestamp": iso_ms(),
        "request_id": aspnet_request_id(),
    }
    if errors:
        body["errors"] = errors
    return body


def problem(status: int, detail: str, instance: str,
            errors: list[dict[str, str]] | None = None, title: str | None = None) -> Response:
    return Response(status, json_bytes(problem_body(status, detail, instance, errors, title)),
                    "application/problem+json")


def legacy_error(status: int, message: str) -> Response:
    """Legacy Maestro `Error` schema: {error, code (string), timestamp}.

    Served as application/problem+json, as the maestro spec's error responses declare.
    """
    body = {"error": message, "code": str(status), "timestamp": iso_ms()}
    return Response(status, json_bytes(body), "application/problem+json")


def field_error(code: str, message: str, target: str) -> dict[str, str]:
    return {"code": code, "message": message, "target": target}


# --------------------------------------------------------------------------
# Simulator state
# --------------------------------------------------------------------------

class SimState:
    """All mutable state, guarded by one lock.

    Instance dicts are copy-on-write: a mutation replaces the dict, so a
    snapshot list taken under the lock can be serialised outside it.
    """

    def __init__(self, account_instances: bool = True) -> None:
        self.lock = threading.Lock()
        self.seq = 0  # request-log sequence; monotonic for the process lifetime
        # bumped by reset() and clear_log(): a request that arrived before is
        # served but not logged after, so that one held by latency_ms (and
        # abandoned by its client) cannot appear in a later test's window
        self.log_generation = 0
        # the command line's choice, which reset() restores
        self.account_instances_default = account_instances
        self.ctoken_key = secrets.token_bytes(16)
        self.reset()

    # -- seed / reset ------------------------------------------------------
    def reset(self) -> None:
        workflows = seed_workflows()
        instances = seed_instances(workflows)
        with self.lock:
            self.workflows = workflows
            self.instances: dict[str, dict[str, Any]] = {}
            self.workflow_instances: dict[str, list[str]] = {w: [] for w in workflows}
            for inst in instances:
                self._add_instance_locked(inst)
            self.paused: set[str] = set()
            self.rate_limit = RATE_LIMIT
            self.rate_remaining = RATE_LIMIT
            self.rate_enforce = False
            self.rate_reset: int | None = None  # None: the next top of the hour
            self.burst_limit: int | None = None  # None: no X-BurstLimit-* headers
            self.burst_remaining = 0
            self.fault_counts: dict[str, int] = {}
            self.request_log: collections.deque = collections.deque(maxlen=REQUEST_LOG_MAX)
            self.log_generation += 1
            # OAuth: access token -> expiry (epoch seconds); users who withdrew consent
            self.oauth_tokens: dict[str, float] = {}
            self.oauth_issued = 0
            self.oauth_no_consent: set[str] = set()
            # /__sim/oauth/lifetime: seconds new tokens live (None: --token-lifetime)
            self.oauth_lifetime: int | None = None
            # /__sim/echo-auth: what the last request looked like (never the values)
            self.echo_auth: dict[str, Any] = {"count": 0, "authorization_present": False,
                                              "method": None, "body_present": False}
            # GET /workflow-instances: served at all, how its last page ends,
            # and under which key an element names its workflow (None: not at all)
            self.account_instances = {"enabled": self.account_instances_default,
                                      "last_ctoken": "absent",
                                      "workflow_id_field": "workflow_id"}

    def _add_instance_locked(self, inst: dict[str, Any]) -> None:
        self.instances[inst["id"]] = inst
        self.workflow_instances.setdefault(inst["template_id"], []).append(inst["id"])

    # -- rate limiting -----------------------------------------------------
    def take_rate_token(self) -> tuple[int, bool]:
        """Consume one request; return (remaining after, exhausted_before_and_enforced)."""
        with self.lock:
            exhausted = self.rate_remaining <= 0
            if self.rate_remaining > 0:
                self.rate_remaining -= 1
            if self.burst_limit is not None and self.burst_remaining > 0:
                self.burst_remaining -= 1
            return self.rate_remaining, exhausted and self.rate_enforce

    def rate_headers(self, remaining: int | None = None) -> list[tuple[str, str]]:
        if remaining is None:
            remaining = self.rate_remaining
        headers = [("X-RateLimit-Limit", str(self.rate_limit)),
                   ("X-RateLimit-Remaining", str(max(0, remaining))),
                   ("X-RateLimit-Reset", str(self.rate_reset if self.rate_reset is not None
                                             else next_top_of_hour()))]
        if self.burst_limit is not None:
            headers += [("X-BurstLimit-Limit", str(self.burst_limit)),
                        ("X-BurstLimit-Remaining", str(self.burst_remaining))]
        return headers

    # -- faults --------------------------------------------------------------
    def fault_fires(self, key: str, times: int | None, after: int = 0) -> bool:
        """Count one matching request for `key`; True once past `after`, while within `times`."""
        with self.lock:
            n = self.fault_counts.get(key, 0) + 1
            self.fault_counts[key] = n
        return n > after and (times is None or n <= after + times)

    # -- request log ---------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        generation = entry.pop("_generation", None)
        with self.lock:
            if generation is not None and generation != self.log_generation:
                return
            self.seq += 1
            entry["seq"] = self.seq
            self.request_log.append(entry)

    def query_log(self, path_contains: str | None, method: str | None,
                  since: int | None) -> list[dict[str, Any]]:
        with self.lock:
            entries = list(self.request_log)
        out = []
        for e in entries:
            if since is not None and e["seq"] <= since:
                continue
            if method and e["method"] != method:
                continue
            if path_contains and path_contains not in e["path"]:
                continue
            out.append(e)
        return out

    def clear_log(self) -> None:
        with self.lock:
            self.request_log.clear()
            self.log_generation += 1

    # -- workflows and instances ---------------------------------------------
    def workflow(self, wid: str) -> dict[str, Any] | None:
        return self.workflows.get(wid)

    def list_instances(self, wid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self.instances[i] for i in self.workflow_instances.get(wid, [])]

    def all_instances(self) -> list[dict[str, Any]]:
        """Every instance of the account, in creation order."""
        with self.lock:
            return list(self.instances.values())

    def get_instance(self, wid: str, iid: str) -> dict[str, Any] | None:
        inst = self.instances.get(iid)
        if inst is None or inst["template_id"] != wid:
            return None
        return inst

    def add_instance(self, inst: dict[str, Any]) -> None:
        with self.lock:
            self._add_instance_locked(inst)

    def add_instances(self, insts: list[dict[str, Any]]) -> None:
        with self.lock:
            for inst in insts:
                self._add_instance_locked(inst)

    def replace_instance(self, iid: str, check: Callable[[dict[str, Any]], str | None],
                         changes: Callable[[dict[str, Any]], dict[str, Any]]
                         ) -> tuple[dict[str, Any] | None, str | None]:
        """Atomically check then update an instance. Returns (new_instance, error)."""
        with self.lock:
            old = self.instances.get(iid)
            if old is None:
                return None, "not found"
            err = check(old)
            if err:
                return None, err
            new = {**old, **changes(old)}
            self.instances[iid] = new
            return new, None

    def set_paused(self, wid: str, paused: bool) -> bool:
        """Set the pause flag; False if it already had that value."""
        with self.lock:
            if (wid in self.paused) == paused:
                return False
            (self.paused.add if paused else self.paused.discard)(wid)
            return True

    def is_paused(self, wid: str) -> bool:
        return wid in self.paused

    # -- OAuth -----------------------------------------------------------------
    def issue_token(self, token: str, lifetime: int) -> None:
        remember_secret(token)
        now = time.time()
        with self.lock:
            if len(self.oauth_tokens) >= OAUTH_TOKENS_MAX:
                self.oauth_tokens = {t: e for t, e in self.oauth_tokens.items() if e > now}
                while len(self.oauth_tokens) >= OAUTH_TOKENS_MAX:
                    del self.oauth_tokens[next(iter(self.oauth_tokens))]
            self.oauth_tokens[token] = now + lifetime
            self.oauth_issued += 1

    def token_status(self, token: str) -> str | None:
        """'ok' or 'expired' for a token issued by /oauth/token, else None."""
        expiry = self.oauth_tokens.get(token)
        if expiry is None:
            return None
        return "ok" if time.time() < expiry else "expired"

    def expire_tokens(self) -> int:
        """Expire every issued token now; return how many were still active."""
        now = time.time()
        with self.lock:
            n = sum(1 for e in self.oauth_tokens.values() if e > now)
            self.oauth_tokens = dict.fromkeys(self.oauth_tokens, 0.0)
        return n

    def token_counts(self) -> dict[str, int]:
        now = time.time()
        with self.lock:
            return {"issued": self.oauth_issued,
                    "active": sum(1 for e in self.oauth_tokens.values() if e > now)}

    def set_consent(self, user: str, consented: bool) -> None:
        with self.lock:
            (self.oauth_no_consent.discard if consented else self.oauth_no_consent.add)(user)

    def has_consent(self, user: str) -> bool:
        return user not in self.oauth_no_consent


def new_instance(state: SimState, wid: str, name: str, inputs: dict[str, Any],
                 status: str = "In Progress", now: float | None = None) -> dict[str, Any]:
    """A freshly triggered instance (wire object)."""
    now = time.time() if now is None else now
    wf = state.workflows[wid]
    ts = iso_ms(now)
    inst = {
        "id": str(uuid.uuid4()),
        "name": name,
        "workflow_status": "In Progress",
        "template_id": wid,
        "account_id": ACCOUNT_ID,
        "started_at": ts,
        "started_by": SIM_USER_ID,
        "started_by_name": SIM_USER_NAME,
        "started_by_role": "Preparer",
        "ended_at": None,
        "expires_at": iso_ms(now + 30 * 86400),
        "last_modified_at": ts,
        "canceled_at": None,
        "canceled_by": None,
        "trigger_inputs": inputs,
        "total_steps": wf["total_steps"],
        "last_completed_step": 0,
        "last_completed_step_name": None,
        "tags": [],
        "metadata": _instance_metadata(wf),
    }
    if status != "In Progress":
        inst.update(status_changes(inst, status, ts))
    return inst


def status_changes(inst: dict[str, Any], status: str, ts: str) -> dict[str, Any]:
    """Field changes for moving an instance to `status` at time `ts`."""
    changes: dict[str, Any] = {"workflow_status": status, "last_modified_at": ts}
    if status in TERMINAL_INSTANCE_STATUSES:
        changes["ended_at"] = inst.get("ended_at") or ts
        if status == "Completed":
            changes["last_completed_step"] = inst.get("total_steps", 0)
            changes["last_completed_step_name"] = "Final step"
    else:
        changes["ended_at"] = None
    if status == "Canceled":
        changes["canceled_at"] = ts
        changes["canceled_by"] = SIM_USER_ID
    else:
        changes["canceled_at"] = None
        changes["canceled_by"] = None
    return changes


# --------------------------------------------------------------------------
# Fault specs
# --------------------------------------------------------------------------

class FaultSpecError(ValueError):
    pass


@dataclasses.dataclass
class FaultSpec:
    raw: str
    key: str
    times: int | None = None
    method: str | None = None
    latency_ms: int = 0
    status: int | None = None
    format: str = "rfc"
    retry_after: str | None = None
    reset: bool = False
    truncate: bool = False
    malformed: bool = False
    html: bool = False
    oversize: int | None = None
    drip_ms: int = 0
    empty: bool = False
    body: str | None = None
    body_hex: str | None = None
    content_type: str | None = None
    redirect: str | None = None
    after: int = 0
    strip: str | None = None


_FAULT_INT_KEYS = {"times", "latency_ms", "status", "oversize", "drip_ms", "after"}
_FAULT_FLAG_KEYS = {"reset", "truncate", "malformed", "html", "empty"}
_FAULT_STR_KEYS = {"key", "method", "format", "retry_after", "body", "body_hex", "content_type",
                   "redirect", "strip"}
_FAULT_FORMATS = ("rfc", "legacy", "text", "html")


def parse_fault_spec(raw: str) -> FaultSpec:
    """Parse `k=v;k=v` (each part URL-decoded). A fully encoded spec is decoded first."""
    text = raw if "=" in raw else urllib.parse.unquote(raw)
    values: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        k = urllib.parse.unquote(k).strip().lower()
        v = urllib.parse.unquote(v)
        if not sep:
            raise FaultSpecError(f"fault part without '=': {k!r}")
        if k not in _FAULT_INT_KEYS | _FAULT_FLAG_KEYS | _FAULT_STR_KEYS:
            raise FaultSpecError(f"unknown fault key {k!r}")
        values[k] = v
    spec = FaultSpec(raw=raw, key=values.pop("key", None) or urllib.parse.unquote(raw))
    for k, v in values.items():
        if k in _FAULT_INT_KEYS:
            try:
                n = int(v)
            except ValueError:
                raise FaultSpecError(f"fault key {k} needs an integer, got {v!r}") from None
            if n < 0 or (k == "status" and not 100 <= n <= 599):
                raise FaultSpecError(f"fault key {k} out of range: {n}")
            setattr(spec, k, n)
        elif k in _FAULT_FLAG_KEYS:
            setattr(spec, k, v.lower() not in ("0", "false", "no", ""))
        else:
            setattr(spec, k, v)
    if spec.method:
        spec.method = spec.method.upper()
    if spec.format not in _FAULT_FORMATS:
        raise FaultSpecError(f"fault format must be one of {', '.join(_FAULT_FORMATS)}")
    if spec.redirect is not None:
        if not spec.redirect or any(c in spec.redirect for c in "\r\n"):
            raise FaultSpecError("fault key redirect needs a URL")
        if spec.status is not None and not 300 <= spec.status <= 399:
            raise FaultSpecError(f"fault key redirect needs a 3xx status, got {spec.status}")
    return spec


MALFORMED_JSON = ('{"data": [ {"id": "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001", '
                  '"name": "Customer Onb')


def html_error_page(status: int) -> bytes:
    return (f"<html><body><h1>{status} {status_phrase(status)}</h1></body></html>"
            .encode("utf-8"))


def oversize_response(status: int, size: int) -> Response:
    """Valid JSON of exactly `size` bytes: a workflow list with one padded entry."""
    prefix = ('{"data":[{"id":"%s","name":"Customer Onboarding","account_id":"%s",'
              '"status":"active","padding":"' % (WF_ONBOARDING, ACCOUNT_ID)).encode()
    suffix = b'"}],"response_metadata":{}}'
    if size < len(prefix) + len(suffix):
        small = b"{}" + b" " * (size - 2) if size >= 2 else b"0" * size
        return Response(status, small, "application/json")
    pad = size - len(prefix) - len(suffix)

    def chunks() -> Iterable[bytes]:
        yield prefix
        block = b"x" * 65536
        left = pad
        while left > 0:
            n = min(left, len(block))
            yield block[:n]
            left -= n
        yield suffix

    return Response(status, b"", "application/json", chunks=chunks(), length=size)


def fault_response(fault: FaultSpec, instance_path: str) -> Response | None:
    """The response a fault produces by itself, or None to serve normally.

    reset and truncate are handled by the connection handler, not here.
    """
    if fault.redirect is not None:
        return Response(fault.status or 302, b"", None, headers=[("Location", fault.redirect)])
    if fault.malformed:
        return Response(fault.status or 200, MALFORMED_JSON.encode(), "application/json")
    if fault.html or (fault.status is not None and fault.format == "html"):
        status = fault.status or 502
        return Response(status, html_error_page(status), "text/html; charset=utf-8")
    if fault.oversize is not None:
        return oversize_response(fault.status or 200, fault.oversize)
    if fault.empty:
        return Response(fault.status or 200, b"", fault.content_type or "application/json")
    if fault.body_hex is not None:
        # exact bytes, e.g. a body that is not valid UTF-8
        try:
            raw_body = bytes.fromhex(fault.body_hex)
        except ValueError:
            raw_body = b""
        return Response(fault.status or 200, raw_body,
                        fault.content_type or "application/json")
    if fault.body is not None:
        ctype = fault.content_type
        if ctype is None:
            try:
                json.loads(fault.body)
                ctype = "application/json"
            except ValueError:
                ctype = "text/plain; charset=utf-8"
        return Response(fault.status or 200, fault.body.encode("utf-8"), ctype)
    if fault.status is not None:
        return status_fault_body(fault.status, fault.format, instance_path)
    return None


def strip_fields(value: Any, names: set[str]) -> Any:
    """`value` without any object member named in `names`, at any depth."""
    if isinstance(value, dict):
        return {k: strip_fields(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [strip_fields(v, names) for v in value]
    return value


def apply_strip(resp: Response, strip: str) -> Response:
    """The `strip=a,b` fault: the normal answer without those members (a JSON body only)."""
    if resp.chunks is not None or not resp.body:
        return resp
    try:
        value = json.loads(resp.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return resp
    names = {n.strip() for n in strip.split(",") if n.strip()}
    resp.body = json_bytes(strip_fields(value, names))
    return resp


def status_fault_body(status: int, fmt: str, instance_path: str) -> Response:
    phrase = status_phrase(status)
    if fmt == "legacy":
        return legacy_error(status, phrase)
    if fmt == "text":
        return text_response(status, phrase)
    detail = f"Simulated {status} {phrase}."
    return problem(status, detail, instance_path)


# --------------------------------------------------------------------------
# Example replay from the OpenAPI file
# --------------------------------------------------------------------------

_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ExampleCatalog:
    """Example values by name, plus which operations/statuses reference them.

    Names are the components.examples keys first; then the keys of any
    `examples` map found under an operation's responses (resolved through
    $ref); then, for singular `example` objects under a $ref'd response
    component (as in the Workflow Builder spec), that component's name.
    """

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = {}
        self.listing: list[dict[str, Any]] = []
        if spec is not None:
            self._load(spec)

    @staticmethod
    def _resolve(spec: dict[str, Any], node: Any) -> tuple[Any, str | None]:
        """Follow local $refs; return (target, last component name or None)."""
        name = None
        for _ in range(20):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                break
            ref = node["$ref"]
            if not ref.startswith("#/"):
                return None, None
            target: Any = spec
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            name = ref.rsplit("/", 1)[-1]
            node = target
        return node, name

    def _load(self, spec: dict[str, Any]) -> None:
        components = spec.get("components", {}).get("examples", {}) or {}
        for name, ex in components.items():
            ex, _ = self._resolve(spec, ex)
            if isinstance(ex, dict) and "value" in ex:
                self.values[name] = ex["value"]
        referenced: set[str] = set()
        seen: set[tuple] = set()

        def add(name: str, value: Any, op_id: str | None, status: Any, ctype: str) -> None:
            self.values.setdefault(name, value)
            referenced.add(name)
            row = (name, op_id, status, ctype)
            if row not in seen:
                seen.add(row)
                self.listing.append({"name": name, "operation_id": op_id,
                                     "status": status, "content_type": ctype})

        for path, item in (spec.get("paths") or {}).items():
            if not isinstance(item, dict):
                continue
            for method, op in item.items():
                if method not in _HTTP_METHODS or not isinstance(op, dict):
                    continue
                op_id = op.get("operationId") or f"{method.upper()} {path}"
                for status_key, resp in (op.get("responses") or {}).items():
                    status: Any = int(status_key) if str(status_key).isdigit() else status_key
                    resp, resp_name = self._resolve(spec, resp)
                    if not isinstance(resp, dict):
                        continue
                    for ctype, media in (resp.get("content") or {}).items():
                        if not isinstance(media, dict):
                            continue
                        for alias, ex in (media.get("examples") or {}).items():
                            target, ref_name = self._resolve(spec, ex)
                            if not isinstance(target, dict) or "value" not in target:
                                continue
                            add(ref_name or alias, target["value"], op_id, status, ctype)
                            self.values.setdefault(alias, target["value"])
                        if "example" in media:
                            add(resp_name or f"{op_id}_{status_key}", media["example"],
                                op_id, status, ctype)
        for name in components:
            if name not in referenced and name in self.values:
                self.listing.append({"name": name, "operation_id": None,
                                     "status": None, "content_type": None})

    def response(self, status: int, name: str) -> Response:
        if name not in self.values:
            return text_response(404, f"unknown example {name!r}")
        value = self.values[name]
        if isinstance(value, str):
            return text_response(status, value)
        return json_response(status, value)


# --------------------------------------------------------------------------
# Public API endpoints
# --------------------------------------------------------------------------

@dataclasses.dataclass
class ApiRequest:
    """What an endpoint handler sees (prefixes already stripped)."""
    state: SimState
    method: str
    path: str               # e.g. /v1/accounts/.../workflows (no query)
    query: dict[str, list[str]]
    body: bytes
    base_url: str           # http://host:port of this server, as the client sees it
    started: float          # time.monotonic() at request start
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    def response_metadata(self) -> dict[str, Any]:
        return {"request_id": str(uuid.uuid4()),
                "response_timestamp": iso_7(),
                "response_duration_ms": int((time.monotonic() - self.started) * 1000)}


def list_workflows(req: ApiRequest) -> Response:
    statuses = req.query.get("status")
    wanted = statuses[-1] if statuses else None
    if wanted is not None and wanted not in WORKFLOW_STATUS_ENUM:
        return problem(400, f"Invalid status filter '{wanted}'.", req.path, [field_error(
            "INVALID_VALUE", "status must be one of: " + ", ".join(WORKFLOW_STATUS_ENUM),
            "status")])
    data = [w["wire"] for w in req.state.workflows.values()
            if wanted is None or w["wire"]["status"] == wanted]
    meta = req.response_metadata()
    meta["total_items"] = len(data)  # undeclared, as in the spec's WorkflowListExample
    return json_response(200, {"data": data, "response_metadata": meta})


def get_trigger_requirements(req: ApiRequest) -> Response:
    wid = req.params["workflowId"]
    wf = req.state.workflows[wid]
    body = {
        "trigger_id": wf["trigger_id"],
        "trigger_event_type": "HTTP",
        "trigger_http_config": {
            "method": "POST",
            "url": f"{req.base_url}/v1/accounts/{ACCOUNT_ID}/workflows/{wid}/actions/trigger",
        },
        "trigger_input_schema": wf["trigger_input_schema"],
        "metadata": wf["wire"]["metadata"],
    }
    body.update(req.response_metadata())  # allOf(..., ResponseMetadata): top level
    return json_response(200, body)


def validate_trigger_body(payload: Any, schema: list[dict[str, Any]]) -> list[dict[str, str]]:
    errors = []
    name = payload.get("instance_name")
    if name is None or (isinstance(name, str) and not name.strip()):
        errors.append(field_error("FIELD_REQUIRED", "instance_name is required",
                                  "instance_name"))
    elif not isinstance(name, str):
        errors.append(field_error("INVALID_TYPE", "instance_name must be a string",
                                  "instance_name"))
    inputs = payload.get("trigger_inputs")
    if inputs is None:
        errors.append(field_error("FIELD_REQUIRED", "trigger_inputs is required",
                                  "trigger_inputs"))
    elif not isinstance(inputs, dict):
        errors.append(field_error("INVALID_TYPE", "trigger_inputs must be an object",
                                  "trigger_inputs"))
    else:
        for field in schema:
            fname = field["field_name"]
            if fname not in inputs and "default_value" not in field:
                errors.append(field_error("FIELD_REQUIRED", f"{fname} is required", fname))
    return errors


def trigger_workflow(req: ApiRequest) -> Response:
    wid = req.params["workflowId"]
    wf = req.state.workflows[wid]
    try:
        payload = json.loads(req.body.decode("utf-8")) if req.body else None
    except (UnicodeDecodeError, ValueError):
        return problem(400, "The request body is not valid JSON.", req.path,
                       [field_error("INVALID_JSON", "The request body is not valid JSON.",
                                    "body")])
    if not isinstance(payload, dict):
        return problem(400, "The request body must be a JSON object.", req.path,
                       [field_error("INVALID_JSON", "The request body must be a JSON object.",
                                    "body")])
    if wf["wire"]["status"] != "active":
        return problem(409, f"The workflow is not active (status '{wf['wire']['status']}') "
                            "and cannot be triggered.", req.path)
    if req.state.is_paused(wid):
        return problem(409, "The workflow is paused and is not accepting new instances.",
                       req.path)
    errors = validate_trigger_body(payload, wf["trigger_input_schema"])
    if errors:
        return problem(400, "The request body is missing required fields or contains "
                            "invalid values.", req.path, errors)
    inst = new_instance(req.state, wid, payload["instance_name"], payload["trigger_inputs"])
    req.state.add_instance(inst)
    mtsec = secrets.token_urlsafe(32)
    remember_secret(mtsec)
    url = (f"{req.base_url}/api/maestro/v1/accounts/{ACCOUNT_ID}/instances/{inst['id']}"
           f"/execution?mtid={secrets.token_hex(16)}&mtsec={mtsec}")
    body = {"instance_id": inst["id"], "instance_url": url}
    body.update(req.response_metadata())  # allOf(WorkflowInstanceInfo, ResponseMetadata)
    return json_response(201, body)


def list_instances(req: ApiRequest) -> Response:
    data = req.state.list_instances(req.params["workflowId"])
    return json_response(200, {"data": data, "response_metadata": req.response_metadata()})


def _ctoken_sign(state: SimState, payload: bytes) -> str:
    return hmac.new(state.ctoken_key, payload, hashlib.sha256).hexdigest()[:16]


def make_ctoken(state: SimState, offset: int, total: int, fingerprint: str) -> str:
    """An opaque continuation token: where the next page starts, signed."""
    payload = json_bytes({"o": offset, "t": total, "f": fingerprint})
    return b64url_encode(payload) + "." + _ctoken_sign(state, payload)


def read_ctoken(state: SimState, token: str, fingerprint: str) -> tuple[int, int] | None:
    """(offset, total) from a token this simulator made for the same filters, else None."""
    data, _, sig = token.partition(".")
    try:
        payload = b64url_decode(data)
        if not hmac.compare_digest(sig, _ctoken_sign(state, payload)):
            return None
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or value.get("f") != fingerprint:
        return None
    offset, total = value.get("o"), value.get("t")
    if not isinstance(offset, int) or not isinstance(total, int) or offset < 0:
        return None
    return offset, total


def list_account_instances(req: ApiRequest) -> Response:
    """GET /workflow-instances: every workflow's instances, filtered and paged.

    The live reference names the parameters and the top-level fields but not
    the element schema: elements are the per-workflow WorkflowInstance plus
    the workflow's id under the configured key.
    """
    conf = dict(req.state.account_instances)
    if not conf["enabled"]:
        return legacy_error(404, "Resource not found")
    errors = []
    status = _first(req.query, "status")
    wanted_wf = set()
    for raw in req.query.get("workflow_definition_id", []):
        norm = normalize_uuid(raw)
        if norm is None:
            errors.append(field_error("INVALID_FORMAT", "workflow_definition_id must be a valid UUID",
                                      "workflow_definition_id"))
        else:
            wanted_wf.add(norm)
    started_by = _first(req.query, "started_by_id")
    if started_by is not None:
        started_by = normalize_uuid(started_by)
        if started_by is None:
            errors.append(field_error("INVALID_FORMAT", "started_by_id must be a valid UUID",
                                      "started_by_id"))
    page_size = ACCOUNT_PAGE_SIZE_DEFAULT
    raw_size = _first(req.query, "page_size")
    if raw_size is not None:
        try:
            page_size = int(raw_size)
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= ACCOUNT_PAGE_SIZE_MAX:
            errors.append(field_error("INVALID_VALUE", f"page_size must be an integer "
                                      f"1..{ACCOUNT_PAGE_SIZE_MAX}", "page_size"))
    if errors:
        return problem(400, "One or more query parameters are invalid.", req.path, errors)

    matching = [i for i in req.state.all_instances()
                if (status is None or i["workflow_status"].lower() == status.lower())
                and (not wanted_wf or i["template_id"] in wanted_wf)
                and (started_by is None or str(i.get("started_by", "")).lower() == started_by)]
    fingerprint = hashlib.sha256(json_bytes(
        [status, sorted(wanted_wf), started_by])).hexdigest()[:16]
    offset, total = 0, len(matching)
    ctoken = _first(req.query, "ctoken")
    if ctoken:
        read = read_ctoken(req.state, ctoken, fingerprint)
        if read is None:
            return problem(400, "The ctoken is invalid or belongs to other filters.", req.path,
                           [field_error("INVALID_VALUE", "ctoken is not valid", "ctoken")])
        offset, total = read  # the total is evaluated once, at the first page
    page = matching[offset:offset + page_size]
    key = conf["workflow_id_field"]
    elements = [{**i, key: i["template_id"]} if key else dict(i) for i in page]
    body: dict[str, Any] = {"instances": elements, "total_set_size": total,
                            "result_set_size": len(elements)}
    if offset + page_size < len(matching):
        body["ctoken"] = make_ctoken(req.state, offset + page_size, total, fingerprint)
    elif conf["last_ctoken"] == "empty":
        body["ctoken"] = ""
    elif conf["last_ctoken"] == "null":
        body["ctoken"] = None
    body["response_metadata"] = req.response_metadata()
    return json_response(200, body)


def get_instance(req: ApiRequest) -> Response:
    inst = req.state.get_instance(req.params["workflowId"], req.params["instanceId"])
    if inst is None:
        return problem(404, "The requested workflow instance could not be found.", req.path)
    return json_response(200, inst)


def pause_workflow(req: ApiRequest) -> Response:
    if not req.state.set_paused(req.params["workflowId"], True):
        return problem(409, "The workflow is already paused.", req.path)
    return json_response(200, {"status": "paused"})


def resume_workflow(req: ApiRequest) -> Response:
    if not req.state.set_paused(req.params["workflowId"], False):
        return problem(409, "The workflow is not paused.", req.path)
    return json_response(200, {"status": "active"})


def cancel_instance(req: ApiRequest) -> Response:
    wid, iid = req.params["workflowId"], req.params["instanceId"]
    if req.state.get_instance(wid, iid) is None:
        return problem(404, "The requested workflow instance could not be found.", req.path)

    def check(inst: dict[str, Any]) -> str | None:
        if inst["workflow_status"] in TERMINAL_INSTANCE_STATUSES:
            return inst["workflow_status"]
        return None

    _, err = req.state.replace_instance(
        iid, check, lambda inst: status_changes(inst, "Canceled", iso_ms()))
    if err:
        return problem(409, f"The workflow instance cannot be canceled because it is "
                            f"already {err}.", req.path)
    return json_response(200, {
        "message": f"Successfully cancelled the workflow instance {iid} in {wid}"})


# (method, path segments after /v1/accounts/{accountId}/, handler)
ROUTES: list[tuple[str, tuple[str, ...], Callable[[ApiRequest], Response]]] = [
    ("GET", ("workflows",), list_workflows),
    ("GET", ("workflows", "{workflowId}", "trigger-requirements"), get_trigger_requirements),
    ("POST", ("workflows", "{workflowId}", "actions", "trigger"), trigger_workflow),
    ("GET", ("workflows", "{workflowId}", "instances"), list_instances),
    ("GET", ("workflows", "{workflowId}", "instances", "{instanceId}"), get_instance),
    ("POST", ("workflows", "{workflowId}", "actions", "pause"), pause_workflow),
    ("POST", ("workflows", "{workflowId}", "actions", "resume"), resume_workflow),
    ("POST", ("workflows", "{workflowId}", "instances", "{instanceId}", "actions", "cancel"),
     cancel_instance),
    ("GET", ("workflow-instances",), list_account_instances),
]


def match_route(segments: list[str]) -> tuple[list[tuple[str, Callable]], dict[str, str]]:
    """Routes whose shape matches `segments`: ([(method, handler)...], params)."""
    found: list[tuple[str, Callable]] = []
    params: dict[str, str] = {}
    for method, pattern, handler in ROUTES:
        if len(pattern) != len(segments):
            continue
        p: dict[str, str] = {}
        for pat, seg in zip(pattern, segments):
            if pat.startswith("{"):
                p[pat[1:-1]] = seg
            elif pat != seg:
                break
        else:
            found.append((method, handler))
            params = p
    return found, params


def dispatch_api(req: ApiRequest) -> Response:
    """Route a /v1/... request (auth already checked)."""
    parts = req.path.split("/")
    # ['', 'v1', 'accounts', '{accountId}', ...rest]
    if len(parts) < 5 or parts[1] != "v1" or parts[2] != "accounts":
        return legacy_error(404, "Resource not found")
    raw_account = urllib.parse.unquote(parts[3])
    candidates, raw_params = match_route([urllib.parse.unquote(s) for s in parts[4:]])
    if not candidates:
        return legacy_error(404, "Resource not found")
    handler = next((h for m, h in candidates if m == req.method), None)
    if handler is None:
        allowed = ", ".join(sorted({m for m, _ in candidates}))
        resp = problem(405, f"Method {req.method} is not allowed on this resource.", req.path)
        resp.headers.append(("Allow", allowed))
        return resp

    errors = []
    account = normalize_uuid(raw_account)
    if account is None:
        errors.append(field_error("INVALID_FORMAT", "accountId must be a valid UUID",
                                  "accountId"))
    params = {}
    for name, value in raw_params.items():
        norm = normalize_uuid(value)
        if norm is None:
            errors.append(field_error("INVALID_FORMAT", f"{name} must be a valid UUID", name))
        params[name] = norm or value
    if errors:
        return problem(400, "One or more path parameters are invalid.", req.path, errors)
    if account != ACCOUNT_ID:
        return legacy_error(404, "Account not found")
    wid = params.get("workflowId")
    if wid is not None and req.state.workflow(wid) is None:
        return legacy_error(404, "Workflow not found")
    req.params = params
    return handler(req)


# --------------------------------------------------------------------------
# OAuth: DocuSign's account server, JWT Grant only (API-NOTES section 9.2)
# --------------------------------------------------------------------------

_OID_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
# DER DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1)
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


class PublicKeyError(ValueError):
    """A public key file that cannot be used."""


def _der_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise PublicKeyError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise PublicKeyError("multi-byte DER tags are not supported")
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise PublicKeyError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise PublicKeyError("truncated DER")
    return tag, data[pos:pos + length], pos + length


def _der_children(value: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(value):
        tag, v, pos = _der_tlv(value, pos)
        out.append((tag, v))
    return out


def _der_single(data: bytes, tag: int, what: str) -> bytes:
    t, v, end = _der_tlv(data, 0)
    if t != tag or end != len(data):
        raise PublicKeyError(f"{what}: unexpected DER structure")
    return v


def _der_uint(tag: int, value: bytes, what: str) -> int:
    if tag != 0x02 or not value or value[0] & 0x80:
        raise PublicKeyError(f"{what} is not a positive INTEGER")
    return int.from_bytes(value, "big")


def rsa_public_from_pkcs1(der: bytes) -> tuple[int, int]:
    """RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }."""
    items = _der_children(_der_single(der, 0x30, "RSAPublicKey"))
    if len(items) != 2:
        raise PublicKeyError("RSAPublicKey must have exactly two INTEGERs")
    n = _der_uint(*items[0], "modulus")
    e = _der_uint(*items[1], "public exponent")
    if n.bit_length() < 512 or e < 3 or e % 2 == 0:
        raise PublicKeyError("implausible RSA key (modulus under 512 bits or bad exponent)")
    return n, e


def rsa_public_from_spki(der: bytes) -> tuple[int, int]:
    """SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }."""
    items = _der_children(_der_single(der, 0x30, "SubjectPublicKeyInfo"))
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x03:
        raise PublicKeyError("SubjectPublicKeyInfo must be SEQUENCE { SEQUENCE, BIT STRING }")
    alg = _der_children(items[0][1])
    if not alg or alg[0] != (0x06, _OID_RSA_ENCRYPTION):
        raise PublicKeyError("not an RSA key (algorithm is not rsaEncryption)")
    bits = items[1][1]
    if not bits or bits[0] != 0:
        raise PublicKeyError("BIT STRING with unused bits")
    return rsa_public_from_pkcs1(bits[1:])


def load_rsa_public_key(pem_text: str) -> tuple[int, int]:
    """(n, e) from a PEM 'PUBLIC KEY' (SPKI) or 'RSA PUBLIC KEY' (PKCS#1) block."""
    for m in _PEM_RE.finditer(pem_text):
        label = m.group(1)
        if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
            continue
        try:
            der = base64.b64decode("".join(m.group(2).split()), validate=True)
        except (binascii.Error, ValueError):
            raise PublicKeyError(f"bad base64 in the {label} block") from None
        return rsa_public_from_spki(der) if label == "PUBLIC KEY" else rsa_public_from_pkcs1(der)
    labels = [m.group(1) for m in _PEM_RE.finditer(pem_text)]
    if any("PRIVATE" in lb for lb in labels):
        raise PublicKeyError("this is a private key; give the public key (openssl pkey -pubout)")
    raise PublicKeyError("no 'BEGIN PUBLIC KEY' or 'BEGIN RSA PUBLIC KEY' block found")


def rsa_sha256_verify(n: int, e: int, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 section 8.2.2), pure Python."""
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    if k < len(t) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(em, expected)


def b64url_decode(part: str) -> bytes:
    if not _B64URL_RE.match(part) or len(part) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class OAuthConfig:
    keys: tuple[tuple[int, int], ...] = ()          # (n, e) of each accepted public key
    integration_keys: frozenset[str] = frozenset()  # accepted iss (lower case)
    users: frozenset[str] = frozenset()             # accepted sub (lower case)
    aud: str = DEFAULT_OAUTH_AUD
    lifetime: int = DEFAULT_TOKEN_LIFETIME


class OAuthError(Exception):
    """An error the token endpoint answers with: HTTP 400 {error, error_description?}."""

    def __init__(self, error: str, description: str | None = None, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.description is not None:
            body["error_description"] = self.description
        return oauth_response(self.status, body)

    def label(self) -> str:
        return f"{self.error}/{self.description}" if self.description else self.error


# Every secret the simulator hands out (minted access tokens, instance_url
# mtsec values), kept across resets for one purpose: a security test that
# searches server logs and error texts for them (GET /__sim/secrets).
_ISSUED_SECRETS: list[str] = []
_ISSUED_SECRETS_LOCK = threading.Lock()
ISSUED_SECRETS_MAX = 200_000


def remember_secret(value: str) -> None:
    with _ISSUED_SECRETS_LOCK:
        if len(_ISSUED_SECRETS) < ISSUED_SECRETS_MAX:
            _ISSUED_SECRETS.append(value)


def oauth_response(status: int, obj: dict[str, Any]) -> Response:
    resp = json_response(status, obj)
    resp.headers += [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return resp


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def verify_jwt_assertion(cfg: OAuthConfig, assertion: str,
                         now: float | None = None) -> dict[str, Any]:
    """The claims of a valid assertion, or raise OAuthError. Consent is checked by the caller."""
    now = time.time() if now is None else now
    parts = assertion.split(".")
    if len(assertion) > ASSERTION_MAX_LEN or len(parts) != 3:
        raise OAuthError("invalid_grant", "malformed_assertion")
    try:
        header = json.loads(b64url_decode(parts[0]).decode("utf-8"))
        claims = json.loads(b64url_decode(parts[1]).decode("utf-8"))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_grant", "malformed_assertion") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError("invalid_grant", "malformed_assertion")
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "unsupported_algorithm")
    if header.get("typ") != "JWT":
        raise OAuthError("invalid_grant", "malformed_assertion")
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss.strip("{}").lower() not in cfg.integration_keys:
        raise OAuthError("invalid_grant", "issuer_not_found")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(rsa_sha256_verify(n, e, signed, signature) for n, e in cfg.keys):
        raise OAuthError("invalid_grant", "no_valid_keys_or_signatures")
    if claims.get("aud") != cfg.aud:
        raise OAuthError("invalid_grant", "invalid_audience")
    iat, exp, nbf = claims.get("iat"), claims.get("exp"), claims.get("nbf")
    if not _is_number(iat):
        raise OAuthError("invalid_grant", "invalid_iat")
    if iat > now + JWT_CLOCK_SKEW:
        raise OAuthError("invalid_grant", "iat_in_future")
    if nbf is not None and (not _is_number(nbf) or nbf > now + JWT_CLOCK_SKEW):
        raise OAuthError("invalid_grant", "assertion_not_yet_valid")
    if not _is_number(exp):
        raise OAuthError("invalid_grant", "invalid_exp")
    if exp <= now:
        raise OAuthError("invalid_grant", "expired_assertion")
    if exp - iat > JWT_MAX_LIFETIME:
        raise OAuthError("invalid_grant", "assertion_lifetime_too_long")
    sub = claims.get("sub")
    if not isinstance(sub, str) or sub.strip("{}").lower() not in cfg.users:
        raise OAuthError("invalid_grant", "user_not_found")
    return claims


def check_jwt_scopes(claims: dict[str, Any]) -> None:
    scope = claims.get("scope")
    granted = set(scope.split()) if isinstance(scope, str) else set()
    missing = [s for s in REQUIRED_SCOPES if s not in granted]
    if missing:
        raise OAuthError("invalid_scope", "missing_scopes: " + " ".join(missing))


def mint_access_token(claims: dict[str, Any], now: float, lifetime: int) -> str:
    """An opaque token shaped like DocuSign's (a JWT-like string, ~700 characters)."""
    head = b64url_encode(json_bytes({"typ": "MT", "alg": "RS256", "kid": "maestro-sim"}))
    body = b64url_encode(json_bytes({
        "Version": 1, "TokenType": 5, "IssueInstant": int(now), "exp": int(now) + lifetime,
        "UserId": claims["sub"], "site": 80, "AuthenticationMethod": 2,
        "aud": claims["iss"], "azp": claims["iss"], "isi": str(uuid.uuid4()),
        "scp": claims["scope"].split(), "jti": str(uuid.uuid4())}))
    return f"{head}.{body}.{b64url_encode(secrets.token_bytes(256))}"


def _form_fields(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded fields; a repeated field is an invalid_request."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "malformed_body") from None
    fields: dict[str, str] = {}
    for k, v in pairs:
        if k in fields:
            raise OAuthError("invalid_request", "duplicate_parameter")
        fields[k] = v
    return fields


def serve_token(server: "SimServer", method: str, content_type: str, body: bytes,
                entry: dict[str, Any]) -> Response:
    """POST /oauth/token. Records the outcome (never a secret) in entry['oauth']."""
    try:
        if method != "POST":
            err = OAuthError("invalid_request", "method_not_allowed", status=405)
            resp = err.response()
            resp.headers.append(("Allow", "POST"))
            entry["oauth"] = err.label()
            return resp
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "unsupported_content_type")
        fields = _form_fields(body)
        entry["body"] = {k: ("[redacted]" if k != "grant_type" else v) for k, v in fields.items()}
        grant = fields.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "missing_grant_type")
        if grant != JWT_BEARER_GRANT:
            raise OAuthError("unsupported_grant_type", "unsupported_grant_type")
        assertion = fields.get("assertion")
        if not assertion:
            raise OAuthError("invalid_request", "missing_assertion")
        cfg = server.oauth
        claims = verify_jwt_assertion(cfg, assertion)
        if not server.state.has_consent(claims["sub"].strip("{}").lower()):
            raise OAuthError("consent_required")
        check_jwt_scopes(claims)
    except OAuthError as err:
        entry["oauth"] = err.label()
        return err.response()
    now = time.time()
    lifetime = server.state.oauth_lifetime or cfg.lifetime
    token = mint_access_token(claims, now, lifetime)
    server.state.issue_token(token, lifetime)
    entry["oauth"] = "issued"
    return oauth_response(200, {"access_token": token, "token_type": "Bearer",
                                "expires_in": lifetime})


def redact_query(path: str) -> str:
    """The request target with every query value replaced (for token endpoint logs)."""
    base, sep, qs = path.partition("?")
    if not sep:
        return path
    names = [p.partition("=")[0] for p in qs.split("&") if p]
    return base + "?" + "&".join(f"{n}=[redacted]" for n in names)


# --------------------------------------------------------------------------
# Control endpoints (/__sim/...)
# --------------------------------------------------------------------------

def _parse_json_object(body: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def control_bulk_instances(state: SimState, body: bytes) -> Response:
    req = _parse_json_object(body)
    if req is None:
        return text_response(400, "body must be a JSON object")
    wid = normalize_uuid(str(req.get("workflow_id", "")))
    if wid is None or state.workflow(wid) is None:
        return text_response(404, "unknown workflow_id")
    count = req.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= BULK_MAX:
        return text_response(400, f"count must be an integer 1..{BULK_MAX}")
    status = req.get("status", "In Progress")
    prefix = req.get("name_prefix", "Bulk instance")
    inputs = req.get("trigger_inputs", {})
    if not isinstance(status, str) or not isinstance(prefix, str) or not isinstance(inputs, dict):
        return text_response(400, "status/name_prefix must be strings, trigger_inputs an object")
    base = time.time() - count / 1000.0
    insts = [new_instance(state, wid, f"{prefix} {k + 1}", inputs, status, base + k / 1000.0)
             for k in range(count)]
    state.add_instances(insts)
    return json_response(200, {"created": count, "workflow_id": wid,
                               "first_id": insts[0]["id"], "last_id": insts[-1]["id"]})


def control_instance_status(state: SimState, iid: str, body: bytes) -> Response:
    req = _parse_json_object(body)
    if req is None or not isinstance(req.get("workflow_status"), str):
        return text_response(400, 'body must be {"workflow_status": "..."}')
    norm = normalize_uuid(iid)
    status = req["workflow_status"]

    def changes(inst: dict[str, Any]) -> dict[str, Any]:
        ch = status_changes(inst, status, iso_ms())
        for k in ("last_completed_step", "last_completed_step_name"):
            if k in req:
                ch[k] = req[k]
        return ch

    new, err = state.replace_instance(norm or iid, lambda _: None, changes)
    if err:
        return text_response(404, "unknown instance")
    return json_response(200, new)


def control_ratelimit(state: SimState, body: bytes) -> Response:
    req = _parse_json_object(body)
    if req is None:
        return text_response(400, "body must be a JSON object")
    with state.lock:
        if isinstance(req.get("limit"), int):
            state.rate_limit = max(0, req["limit"])
            state.rate_remaining = state.rate_limit
        if isinstance(req.get("remaining"), int):
            state.rate_remaining = max(0, req["remaining"])
        if "enforce" in req:
            state.rate_enforce = bool(req["enforce"])
        if "reset" in req and (req["reset"] is None or isinstance(req["reset"], int)):
            state.rate_reset = req["reset"]
        if "burst_limit" in req and (req["burst_limit"] is None or isinstance(req["burst_limit"], int)):
            state.burst_limit = None if req["burst_limit"] is None else max(0, req["burst_limit"])
            state.burst_remaining = state.burst_limit or 0
        if isinstance(req.get("burst_remaining"), int):
            state.burst_remaining = max(0, req["burst_remaining"])
        out = {"limit": state.rate_limit, "remaining": state.rate_remaining,
               "enforce": state.rate_enforce, "reset": state.rate_reset,
               "burst_limit": state.burst_limit,
               "burst_remaining": state.burst_remaining if state.burst_limit is not None else None}
    return json_response(200, out)


def control_account_instances(state: SimState, body: bytes) -> Response:
    """Turn GET /workflow-instances on or off, and shape its answers."""
    req = _parse_json_object(body)
    usage = ('body must be {"enabled"?: bool, "last_ctoken"?: "absent"|"empty"|"null", '
             '"workflow_id_field"?: string|null}')
    if req is None or set(req) - {"enabled", "last_ctoken", "workflow_id_field"}:
        return text_response(400, usage)
    if ("enabled" in req and not isinstance(req["enabled"], bool)
            or "last_ctoken" in req and req["last_ctoken"] not in ACCOUNT_LAST_CTOKEN
            or "workflow_id_field" in req and not (req["workflow_id_field"] is None or (
                isinstance(req["workflow_id_field"], str) and req["workflow_id_field"]))):
        return text_response(400, usage)
    with state.lock:
        state.account_instances.update(req)
        out = dict(state.account_instances)
    return json_response(200, out)


def control_consent(state: SimState, body: bytes) -> Response:
    req = _parse_json_object(body)
    user = normalize_uuid(str(req.get("user", ""))) if req is not None else None
    consented = req.get("consented", True) if req is not None else None
    if user is None or not isinstance(consented, bool):
        return text_response(400, 'body must be {"user": "<uuid>", "consented": true|false}')
    state.set_consent(user, consented)
    return json_response(200, {"user": user, "consented": consented})


def control_token_lifetime(state: SimState, body: bytes) -> Response:
    """Set how long tokens issued from now on live (null: the --token-lifetime value)."""
    req = _parse_json_object(body)
    seconds = req.get("seconds", "missing") if req is not None else "missing"
    if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)
                                or seconds < 1):
        return text_response(400, 'body must be {"seconds": <positive integer> | null}')
    with state.lock:
        state.oauth_lifetime = seconds
    return json_response(200, {"seconds": seconds})


def control_echo_auth(state: SimState, method: str, headers: Any, body: bytes) -> Response:
    """Record whether credentials arrived (never their values)."""
    present = bool(headers is not None and headers.get("Authorization"))
    with state.lock:
        state.echo_auth = {"count": state.echo_auth["count"] + 1,
                           "authorization_present": present, "method": method,
                           "body_present": bool(body)}
    return json_response(200, {"authorization_present": present})


def dispatch_control(server: "SimServer", method: str, path: str,
                     query: dict[str, list[str]], body: bytes,
                     headers: Any = None) -> Response:
    state = server.state
    parts = [p for p in path.split("/") if p][1:]  # drop "__sim"
    route = (method, tuple(parts))
    if route == ("GET", ("health",)):
        return text_response(200, "ok")
    if route == ("POST", ("reset",)):
        state.reset()
        return text_response(200, "ok")
    if route == ("GET", ("requests",)):
        since = _first(query, "since")
        try:
            since_n = int(since) if since else None
        except ValueError:
            return text_response(400, "since must be an integer")
        method_f = _first(query, "method")
        return json_response(200, state.query_log(_first(query, "path_contains"),
                                                  method_f.upper() if method_f else None,
                                                  since_n))
    if route == ("DELETE", ("requests",)):
        state.clear_log()
        return text_response(200, "ok")
    if route == ("GET", ("count",)):
        method_f = _first(query, "method")
        n = len(state.query_log(_first(query, "path_contains"),
                                method_f.upper() if method_f else None, None))
        return text_response(200, str(n))
    if route == ("GET", ("examples",)):
        return json_response(200, server.catalog.listing)
    if route == ("GET", ("faults",)):
        with state.lock:
            return json_response(200, dict(state.fault_counts))
    if route == ("POST", ("ratelimit",)):
        return control_ratelimit(state, body)
    if route == ("POST", ("oauth", "consent")):
        return control_consent(state, body)
    if route == ("POST", ("account-instances",)):
        return control_account_instances(state, body)
    if route == ("GET", ("account-instances",)):
        with state.lock:
            return json_response(200, dict(state.account_instances))
    if route == ("GET", ("oauth", "tokens")):
        return json_response(200, state.token_counts())
    if route == ("GET", ("secrets",)):
        with _ISSUED_SECRETS_LOCK:
            return json_response(200, {"secrets": list(_ISSUED_SECRETS)})
    if route == ("POST", ("oauth", "lifetime")):
        return control_token_lifetime(state, body)
    if route == ("POST", ("oauth", "expire")):
        return json_response(200, {"expired": state.expire_tokens()})
    if route == ("GET", ("echo-auth", "last")):
        with state.lock:
            return json_response(200, dict(state.echo_auth))
    if parts == ["echo-auth"]:
        return control_echo_auth(state, method, headers, body)
    if method == "POST" and parts == ["instances"]:
        return control_bulk_instances(state, body)
    if method == "POST" and len(parts) == 3 and parts[0] == "instances" and parts[2] == "status":
        return control_instance_status(state, parts[1], body)
    return text_response(404, f"unknown control endpoint {method} {path}")


# --------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------

class _DateCache:
    """HTTP Date header, recomputed at most once a second."""

    def __init__(self) -> None:
        self._sec = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._sec:
            self._value = email.utils.formatdate(now, usegmt=True)
            self._sec = now
        return self._value


_date_cache = _DateCache()


def split_prefix(path: str, prefix: str) -> tuple[str, str]:
    """'/_fault/SPEC/v1/...' -> ('SPEC', '/v1/...')."""
    rest = path[len(prefix):]
    head, sep, tail = rest.partition("/")
    return head, (sep + tail) if sep else "/"


class SimHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MaestroSim/1.0"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are dropped after this many seconds

    server: "SimServer"
    _rate_headers = True  # False for the account-server endpoint (no X-RateLimit-*)

    # BaseHTTPRequestHandler logs through this; we keep our own log instead.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request body --------------------------------------------------------
    def _read_body(self) -> bytes | None:
        """The request body, or None if the framing is invalid."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0:
            return None
        return self.rfile.read(n) if n else b""

    def _read_chunked(self) -> bytes | None:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline(8)

    # -- writing ---------------------------------------------------------------
    def _header_block(self, status: int, resp: Response, length: int | None,
                      rate_remaining: int | None) -> bytes:
        lines = [f"HTTP/1.1 {status} {status_phrase(status)}",
                 f"Date: {_date_cache.get()}",
                 f"Server: {self.server_version}"]
        if resp.content_type:
            lines.append(f"Content-Type: {resp.content_type}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if self._rate_headers:
            for k, v in self.server.state.rate_headers(rate_remaining):
                lines.append(f"{k}: {v}")
        for k, v in resp.headers:
            lines.append(f"{k}: {v}")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, resp: Response, rate_remaining: int | None = None,
               drip_ms: int = 0) -> None:
        no_body = resp.status < 200 or resp.status in (204, 304)
        length = None if no_body else (resp.length if resp.chunks is not None
                                       else len(resp.body))
        head = self._header_block(resp.status, resp, length, rate_remaining)
        if no_body or self.command == "HEAD":
            self.wfile.write(head)
            return
        if drip_ms > 0:
            self.wfile.write(head)
            for chunk in (resp.chunks if resp.chunks is not None else (resp.body,)):
                for i in range(len(chunk)):
                    self.wfile.write(chunk[i:i + 1])
                    time.sleep(drip_ms / 1000.0)
            return
        if resp.chunks is not None:
            self.wfile.write(head)
            for chunk in resp.chunks:
                self.wfile.write(chunk)
            return
        self.wfile.write(head + resp.body)

    def _write_truncated(self, resp: Response, rate_remaining: int | None) -> None:
        """Status 200, a Content-Length larger than what is sent, part of a JSON body, close."""
        body = resp.body
        if not (200 <= resp.status < 300 and body.startswith((b"{", b"["))):
            body = json_bytes({"data": [w["wire"] for w in seed_workflows().values()],
                               "response_metadata": {}})
        self.close_connection = True
        sent = body[:max(1, len(body) // 2)]
        full = Response(200, b"", "application/json")
        self.wfile.write(self._header_block(200, full, len(body) + 100, rate_remaining) + sent)

    def _reset_connection(self) -> None:
        """Close with SO_LINGER 0 so the peer sees a TCP RST and no response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    # -- request handling --------------------------------------------------------
    def _handle(self) -> None:
        started = time.monotonic()
        self._rate_headers = True
        try:
            body = self._read_body()
            if body is None:
                self.close_connection = True
                self._write(text_response(400, "invalid request body framing"))
                return
            path, _, query_string = self.path.partition("?")
            query = urllib.parse.parse_qs(query_string)
            if path == "/__sim" or path.startswith("/__sim/"):
                self._write(dispatch_control(self.server, self.command, path, query, body,
                                             self.headers))
                return
            self._handle_api(path, query, body, started)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a simulator bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            try:
                self._write(problem(500, "Simulator internal error.", self.path))
            except OSError:
                pass

    def _auth_status(self) -> str:
        header = self.headers.get("Authorization")
        if not header:
            return "missing"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return "bad"
        token = token.strip()
        if token in self.server.tokens:
            return "ok"
        return self.server.state.token_status(token) or "bad"

    def _base_url(self) -> str:
        host = self.headers.get("Host", "")
        if not HOST_RE.match(host):
            h, p = self.server.server_address[:2]
            host = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
        return f"{self.server.scheme}://{host}"

    def _handle_api(self, path: str, query: dict[str, list[str]], body: bytes,
                    started: float) -> None:
        state = self.server.state
        auth = self._auth_status()
        entry: dict[str, Any] = {
            "seq": 0, "time": time.time(), "method": self.command, "path": self.path,
            "status": 0, "auth": auth, "body": _parse_log_body(body),
            "instance_name": None, "fault": None, "oauth": None,
            "via": self.headers.get("Via"),
            "accept_encoding": self.headers.get("Accept-Encoding"),
            "user_agent": self.headers.get("User-Agent"),
            "_generation": state.log_generation,
        }
        api_path = path
        fault: FaultSpec | None = None
        resp: Response | None = None

        if api_path.startswith("/_fault/"):
            spec_raw, api_path = split_prefix(api_path, "/_fault/")
            entry["fault"] = spec_raw
            try:
                fault = parse_fault_spec(spec_raw)
            except FaultSpecError as e:
                resp = text_response(400, f"bad fault spec: {e}")
            if fault is not None:
                if fault.method and fault.method != self.command:
                    fault = None
                elif not state.fault_fires(fault.key, fault.times, fault.after):
                    fault = None
        rate_remaining: int | None = None
        rate_exhausted = False
        if api_path == OAUTH_TOKEN_PATH:
            # The account server: no API rate limit, and never log the assertion.
            entry["body"] = None
            entry["path"] = redact_query(self.path)
            self._rate_headers = False
        else:
            rate_remaining, rate_exhausted = state.take_rate_token()
        if (self.command == "POST" and api_path.endswith("/actions/trigger")
                and isinstance(entry["body"], dict)):
            entry["instance_name"] = entry["body"].get("instance_name")

        if fault is not None and fault.latency_ms:
            time.sleep(fault.latency_ms / 1000.0)
        if fault is not None and fault.reset:
            self._finish_log(entry, 0, started)
            self._reset_connection()
            return
        if resp is None and fault is not None:
            resp = fault_response(fault, api_path)
        if resp is None:
            resp = self._serve(api_path, query, body, auth, started, rate_exhausted, entry)
            if fault is not None and fault.strip:
                resp = apply_strip(resp, fault.strip)
        if fault is not None and fault.retry_after is not None:
            resp.headers.append(("Retry-After", fault.retry_after))

        if fault is not None and fault.truncate:
            self._finish_log(entry, 200, started)
            self._write_truncated(resp, rate_remaining)
            return
        self._finish_log(entry, resp.status, started)
        self._write(resp, rate_remaining, fault.drip_ms if fault is not None else 0)

    def _serve(self, api_path: str, query: dict[str, list[str]], body: bytes, auth: str,
               started: float, rate_exhausted: bool, entry: dict[str, Any]) -> Response:
        """The normal (non-fault) response: token endpoint, example replay or the API."""
        if api_path == OAUTH_TOKEN_PATH:
            return serve_token(self.server, self.command,
                               self.headers.get("Content-Type", ""), body, entry)
        if api_path.startswith("/_example/"):
            return self._serve_example(api_path)
        if rate_exhausted:
            resp = problem(429, "The maximum number of hourly API invocations has been "
                                "exceeded.", api_path)
            resp.headers.append(("Retry-After", str(max(1, next_top_of_hour() - int(time.time())))))
            return resp
        if auth != "ok":
            return text_response(401, UNAUTHORIZED_TEXT)
        req = ApiRequest(self.server.state, self.command, api_path, query, body,
                         self._base_url(), started)
        return dispatch_api(req)

    def _serve_example(self, api_path: str) -> Response:
        status_raw, rest = split_prefix(api_path, "/_example/")
        name, _ = split_prefix(rest, "/")
        try:
            status = int(status_raw)
            if not 100 <= status <= 599:
                raise ValueError
        except ValueError:
            return text_response(400, f"bad example status {status_raw!r}")
        if not self.server.catalog.values and not self.server.spec_path:
            return text_response(404, "example replay needs --spec")
        return self.server.catalog.response(status, urllib.parse.unquote(name))

    def _finish_log(self, entry: dict[str, Any], status: int, started: float) -> None:
        entry["status"] = status
        self.server.state.record(entry)
        self.server.emit_log(f"{entry['method']} {entry['path']} -> {status} "
                             f"({(time.monotonic() - started) * 1000:.1f} ms)")


def _parse_log_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], tokens: list[str], catalog: ExampleCatalog,
                 spec_path: str | None, quiet: bool, log_file: str | None,
                 oauth: OAuthConfig | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 account_instances: bool = True) -> None:
        self._log_fh = None
        super().__init__(address, SimHandler)
        self.state = SimState(account_instances)
        self.tokens = frozenset(tokens)
        self.oauth = oauth or OAuthConfig()
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self.catalog = catalog
        self.spec_path = spec_path
        self.quiet = quiet
        self._log_lock = threading.Lock()
        if log_file:
            self._log_fh = open(log_file, "a", encoding="utf-8")

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, handshake here (in the connection's thread, not in accept())."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # failed handshake (plain HTTP, an untrusting client...): just close
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            self.shutdown_request(tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Peers that vanish mid-request are normal; only report simulator bugs."""
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def emit_log(self, line: str) -> None:
        """One line per API request to the log file and (unless quiet) stderr."""
        if self.quiet and self._log_fh is None:
            return
        stamped = f"{iso_ms()} {line}"
        with self._log_lock:
            if self._log_fh is not None:
                self._log_fh.write(stamped + "\n")
                self._log_fh.flush()
            if not self.quiet:
                sys.stderr.write(stamped + "\n")

    def server_close(self) -> None:
        super().server_close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="DocuSign Maestro API simulator")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help=f"port (default {DEFAULT_PORT}; 0 = pick a free port)")
    ap.add_argument("--token", action="append", default=[],
                    help=f"accepted bearer token (repeatable; '{DEFAULT_TOKEN}' is always accepted)")
    ap.add_argument("--spec", help="OpenAPI JSON file for /_example/ replay")
    ap.add_argument("--log-file", help="append one line per API request to this file")
    ap.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    ap.add_argument("--no-account-instances", action="store_true",
                    help="answer GET /v1/accounts/{a}/workflow-instances with 404, as an API "
                         "without that endpoint would (POST /__sim/account-instances turns it on)")
    oa = ap.add_argument_group("OAuth JWT Grant (POST /oauth/token)")
    oa.add_argument("--oauth-public-key", action="append", default=[], metavar="FILE",
                    help="PEM RSA public key ('BEGIN PUBLIC KEY' or 'BEGIN RSA PUBLIC KEY') "
                         "that verifies assertions (repeatable: any key may sign)")
    oa.add_argument("--integration-key", action="append", default=[], metavar="UUID",
                    help="accepted 'iss' (integration key; repeatable)")
    oa.add_argument("--oauth-user", action="append", default=[], metavar="UUID",
                    help=f"accepted 'sub' (user id; repeatable; default {SIM_USER_ID})")
    oa.add_argument("--oauth-aud", default=DEFAULT_OAUTH_AUD, metavar="HOST",
                    help=f"required 'aud' (default {DEFAULT_OAUTH_AUD})")
    oa.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME,
                    metavar="SECONDS",
                    help=f"lifetime of issued access tokens (default {DEFAULT_TOKEN_LIFETIME})")
    tl = ap.add_argument_group("HTTPS")
    tl.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate "
                    "(chain); needs --tls-key")
    tl.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.token_lifetime < 1:
        ap.error("--token-lifetime must be at least 1")
    return args


def build_oauth_config(args: argparse.Namespace) -> OAuthConfig:
    """OAuthConfig from the command line; raises OSError or PublicKeyError."""
    keys = []
    for path in args.oauth_public_key:
        with open(path, encoding="ascii", errors="replace") as fh:
            try:
                keys.append(load_rsa_public_key(fh.read()))
            except PublicKeyError as e:
                raise PublicKeyError(f"{path}: {e}") from None
    users = args.oauth_user or [SIM_USER_ID]
    return OAuthConfig(keys=tuple(keys),
                       integration_keys=frozenset(k.strip("{}").lower()
                                                  for k in args.integration_key),
                       users=frozenset(u.strip("{}").lower() for u in users),
                       aud=args.oauth_aud, lifetime=args.token_lifetime)


def build_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog = ExampleCatalog()
    if args.spec:
        try:
            with open(args.spec, encoding="utf-8") as fh:
                catalog = ExampleCatalog(json.load(fh))
        except (OSError, ValueError) as e:
            print(f"maestro simulator: cannot load --spec {args.spec}: {e}", file=sys.stderr)
            return 2
    try:
        oauth = build_oauth_config(args)
    except (OSError, PublicKeyError) as e:
        print(f"maestro simulator: cannot load --oauth-public-key: {e}", file=sys.stderr)
        return 2
    ssl_context = None
    if args.tls_cert:
        try:
            ssl_context = build_ssl_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            print(f"maestro simulator: cannot load --tls-cert/--tls-key: {e}", file=sys.stderr)
            return 2
    threading.stack_size(512 * 1024)
    try:
        server = SimServer((args.host, args.port), [DEFAULT_TOKEN, *args.token], catalog,
                           args.spec, args.quiet, args.log_file, oauth, ssl_context,
                           account_instances=not args.no_account_instances)
    except OSError as e:
        print(f"maestro simulator: cannot start on {args.host}:{args.port}: {e}",
              file=sys.stderr)
        return 2

    def stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"maestro simulator listening on {server.scheme}://{shown}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
