#!/usr/bin/env python3
"""Contract test driver for the maestro extension (stdlib only).

Called by run.sh once Prism (mock mode, --errors) is up. It

1. checks that Prism really validates (deliberately invalid HTTP requests,
   sent straight to Prism, not through the extension, must be rejected);
2. calls every SQL function of the extension against Prism, through a small
   transparent recording proxy, and checks for each call that
   - the request went to the right operation (method, path, query),
   - Prism found no request violation (`sl-violations` header) and answered 2xx,
   - the function succeeded and its rows equal the spec's example;
3. dynamic rounds: a second Prism in dynamic mode (`prism mock -d`) answers
   every call with a random schema-valid body; every function must succeed
   (no ERROR) on each of CONTRACT_DYNAMIC_ROUNDS (20) calls, since the spec
   requires no response field;
4. example replay: for every example the simulator lists (GET
   $MAESTRO_SIM_URL/__sim/examples), points a server at
   $MAESTRO_SIM_URL/_example/<status>/<name> and calls the SQL function of
   that operation: 2xx examples must parse into the example's rows, 4xx/5xx
   examples must raise the mapped SQLSTATE with the example's message.
   Every named example in the spec must be listed by the simulator.

Prints `ok - ...` / `not ok - ...` lines (diagnostics as `#` lines) and ends
with `contract: N passed, N failed`.  `--emit-sql` prints the SQL it would run
for the example replay without touching a database.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse

ACCOUNT_ID = "ae232f1f-8efc-4b8c-bb08-626847fad8bb"   # the spec's accountId example
FALLBACK_WORKFLOW_ID = "9fabc6d2-748b-41c9-8d5e-5fbf2f7e6e72"
FALLBACK_INSTANCE_ID = "fa4b77cb-dc69-4960-bd5c-9e6bf3c182e7"
PRISM_TOKEN = "contract-token"
SIM_TOKEN = "sim-token"

# HTTP status -> SQLSTATE the extension must raise
SQLSTATE_BY_STATUS = {400: "22023", 401: "28000", 403: "42501", 404: "P0002",
                      409: "55000", 422: "22023", 429: "53400"}


def expected_sqlstate(status):
    if status >= 500:
        return "58000"
    return SQLSTATE_BY_STATUS.get(status)   # None: any error will do


# Documented function surface: column names of the row-returning functions.
WORKFLOW_COLS = ["id", "name", "account_id", "status", "created_at", "created_by",
                 "modified_at", "modified_by", "raw"]
INSTANCE_COLS = ["workflow_id", "id", "name", "workflow_status", "template_id",
                 "account_id", "started_at", "started_by", "started_by_name",
                 "started_by_role", "ended_at", "expires_at", "last_modified_at",
                 "canceled_at", "canceled_by", "trigger_inputs", "total_steps",
                 "last_completed_step", "last_completed_step_name", "tags",
                 "metadata", "raw"]
TRIGGER_INPUT_COLS = ["field_name", "field_data_type", "default_value"]
TRIGGER_COLS = ["instance_id", "instance_url"]
TS_COLS = {"created_at", "modified_at", "started_at", "ended_at", "expires_at",
           "last_modified_at", "canceled_at"}
UUID_COLS = {"id", "account_id", "workflow_id", "template_id", "instance_id"}


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, desc, diag=()):
        if cond:
            self.passed += 1
            print("ok - " + desc, flush=True)
        else:
            self.failed += 1
            print("not ok - " + desc, flush=True)
            for line in diag:
                for sub in str(line).splitlines() or [""]:
                    print("#   " + sub, flush=True)
        return cond

    def note(self, text):
        print("# note: " + text, flush=True)

    def summary(self):
        print("contract: %d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def short(obj, n=600):
    s = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


# --------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------
def resolve(spec, node, depth=0):
    while isinstance(node, dict) and "$ref" in node and depth < 50:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError("external $ref not supported: " + ref)
        target = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
        depth += 1
    return node


def operations(spec):
    """Yield (method, path template, operation object)."""
    for path, item in spec.get("paths", {}).items():
        for method in ("get", "put", "post", "delete", "patch", "head", "options"):
            if method in item:
                yield method.upper(), path, item[method]


def spec_examples(spec):
    """Every example value the spec attaches to a response.

    Named examples (a media type's `examples` map) carry their key and, for a
    $ref, the component name as aliases.  Media-level `example` and schema-level
    `example`/`examples` are collected too, without a name of their own."""
    out = []
    for method, path, op in operations(spec):
        opid = op.get("operationId")
        for status, resp in op.get("responses", {}).items():
            resp = resolve(spec, resp)
            for ctype, media in (resp.get("content") or {}).items():
                base = dict(operation_id=opid, method=method, path=path,
                            status=str(status), content_type=ctype)
                for key, ex in (media.get("examples") or {}).items():
                    aliases = {key}
                    if isinstance(ex, dict) and "$ref" in ex:
                        aliases.add(ex["$ref"].rsplit("/", 1)[-1])
                    exr = resolve(spec, ex)
                    if "value" in exr:
                        out.append(dict(base, name=key, aliases=aliases, named=True,
                                        value=exr["value"]))
                if "example" in media:
                    out.append(dict(base, name=None, aliases=set(), named=False,
                                    value=media["example"]))
                schema = resolve(spec, media.get("schema") or {})
                if isinstance(schema, dict):
                    if "example" in schema:
                        out.append(dict(base, name=None, aliases=set(), named=False,
                                        value=schema["example"]))
                    for v in schema.get("examples") or []:
                        out.append(dict(base, name=None, aliases=set(), named=False,
                                        value=v))
    return out


def find_op(spec, operation_id):
    for method, path, op in operations(spec):
        if op.get("operationId") == operation_id:
            return method, path, op
    return None


def named_value(spec, component_name):
    ex = spec.get("components", {}).get("examples", {}).get(component_name)
    return None if ex is None else ex.get("value")


# --------------------------------------------------------------------------
# SQL calls per operation
# --------------------------------------------------------------------------
def sql_lit(s):
    return "'" + str(s).replace("'", "''") + "'"


TRIGGER_INPUTS = {"Name": "Ada Lovelace", "Email": "ada@example.com", "Company": "O'Hara & Co",
                  "Age": 36, "Score": 9.5, "Vip": True,
                  "Address": {"street": "12 Main St", "city": "London"},
                  "Tags": ["a", "b"]}
TRIGGER_NAME = "Contract run \u00e9t\u00e9"


def calls_for(operation_id, wf, inst):
    """SQL calls exercising an operation: list of (label, sql, kind).

    kind tells how to compare the result with the response example."""
    w, i = sql_lit(wf), sql_lit(inst)
    inputs = sql_lit(json.dumps(TRIGGER_INPUTS)) + "::jsonb"
    table = {
        "GetWorkflowsList": [
            ("maestro_workflows()", "SELECT * FROM maestro_workflows()", "workflows")],
        "GetWorkflowTriggerRequirements": [
            ("maestro_trigger_requirements(workflow_id)",
             "SELECT maestro_trigger_requirements(%s::uuid) AS v" % w, "requirements"),
            ("maestro_trigger_inputs(workflow_id)",
             "SELECT * FROM maestro_trigger_inputs(%s::uuid)" % w, "trigger_inputs")],
        "TriggerWorkflow": [
            ("maestro_trigger(workflow_id, inputs, instance_name)",
             "SELECT * FROM maestro_trigger(%s::uuid, %s, %s)" % (w, inputs, sql_lit(TRIGGER_NAME)),
             "trigger")],
        "getWorkflowInstancesList": [
            ("maestro_instances(workflow_id)",
             "SELECT * FROM maestro_instances(%s::uuid)" % w, "instances")],
        "getWorkflowInstance": [
            ("maestro_instance(workflow_id, instance_id)",
             "SELECT * FROM maestro_instance(%s::uuid, %s::uuid)" % (w, i), "instance")],
        "pauseNewWorkflowInstances": [
            ("maestro_pause(workflow_id)", "SELECT maestro_pause(%s::uuid) AS v" % w, "status")],
        "resumePausedWorkflow": [
            ("maestro_resume(workflow_id)", "SELECT maestro_resume(%s::uuid) AS v" % w, "status")],
        "cancelWorkflowInstance": [
            ("maestro_cancel(workflow_id, instance_id)",
             "SELECT maestro_cancel(%s::uuid, %s::uuid) AS v" % (w, i), "message")],
    }
    return table.get(operation_id)


def instance_row(obj, wf):
    row = {c: obj.get(c) for c in INSTANCE_COLS if c not in ("workflow_id", "raw")}
    row["trigger_inputs"] = obj.get("trigger_inputs", obj.get("trigger_input"))
    row["workflow_id"] = wf
    row["raw"] = obj
    return row


def list_data(value):
    data = value.get("data") if isinstance(value, dict) else None
    if isinstance(data, dict):                         # SDK beta.1 shape
        data = data.get("workflows", data.get("instances"))
    return data if isinstance(data, list) else []


def expected_rows(kind, value, wf):
    """Rows (list of dicts over the columns we compare) the example must give."""
    if kind == "workflows":
        rows = []
        for w in list_data(value):
            md = w.get("metadata") or {}
            rows.append({"id": w.get("id"), "name": w.get("name"),
                         "account_id": w.get("account_id"), "status": w.get("status"),
                         "created_at": md.get("created_at"), "created_by": md.get("created_by"),
                         "modified_at": md.get("modified_at"),
                         "modified_by": md.get("modified_by"), "raw": w})
        return rows
    if kind == "trigger_inputs":
        return [{"field_name": f.get("field_name"), "field_data_type": f.get("field_data_type"),
                 "default_value": f.get("default_value")}
                for f in value.get("trigger_input_schema") or []]
    if kind == "trigger":
        return [{"instance_id": value.get("instance_id"), "instance_url": value.get("instance_url")}]
    if kind == "instances":
        return [instance_row(o, wf) for o in list_data(value)]
    if kind == "instance":
        return [instance_row(value, wf)]
    if kind == "status":
        return [{"v": value.get("status")}]
    if kind == "message":
        return [{"v": value.get("message")}]
    raise ValueError(kind)


def ts(v):
    """Parse an RFC 3339 timestamp (any number of fractional digits)."""
    if v is None:
        return None
    s = str(v).strip()
    m = re.match(r"^(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)?$", s)
    if not m:
        return s
    off = m.group(3) or "+00:00"
    off = "+00:00" if off in ("Z", "z") else off
    try:
        d = datetime.datetime.fromisoformat(m.group(1).replace("t", "T").replace(" ", "T") + off)
    except ValueError:
        return s
    frac = m.group(2) or "0"
    return d + datetime.timedelta(microseconds=round(float("0." + frac) * 1e6))


def same(col, exp, act):
    if col in TS_COLS:
        a, b = ts(exp), ts(act)
        if isinstance(a, datetime.datetime) and isinstance(b, datetime.datetime):
            return abs((a - b).total_seconds()) < 2e-6
        return a == b
    if col in UUID_COLS and isinstance(exp, str) and isinstance(act, str):
        return exp.strip("{}").lower() == act.lower()
    if exp == "" and act is None:        # an empty string may come back as NULL
        return True
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and \
            isinstance(act, (int, float)) and not isinstance(act, bool):
        return exp == act
    return exp == act


def compare_rows(kind, value, wf, result):
    """Return a list of differences (empty: the result matches the example)."""
    rows = result
    if kind == "requirements":
        if len(rows) != 1 or not isinstance(rows[0].get("v"), dict):
            return ["expected one jsonb object, got %s" % short(rows)]
        got = rows[0]["v"]
        diffs = []
        for k, v in value.items():
            if k in ("metadata", "response_metadata", "response_timestamp",
                     "response_duration_ms", "request_id"):
                continue
            if got.get(k) != v:
                diffs.append("%s: expected %s, got %s" % (k, short(v, 200), short(got.get(k), 200)))
        return diffs
    exp = expected_rows(kind, value, wf)
    diffs = []
    if len(rows) != len(exp):
        diffs.append("expected %d row(s), got %d" % (len(exp), len(rows)))
    for n, (e, a) in enumerate(zip(exp, rows)):
        for col, ev in e.items():
            if col not in a:
                diffs.append("row %d: no column %s" % (n + 1, col))
            elif not same(col, ev, a[col]):
                diffs.append("row %d: %s expected %s, got %s"
                             % (n + 1, col, short(ev, 200), short(a[col], 200)))
    return diffs


def error_text(value):
    """The message an error example carries (what the SQL error must show)."""
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, dict):
        for keys in (("error",), ("detail", "title"), ("message",)):
            found = [value[k] for k in keys if isinstance(value.get(k), str) and value[k].strip()]
            if found:
                return found[:1]
    return []


# --------------------------------------------------------------------------
# psql
# --------------------------------------------------------------------------
class Psql:
    def __init__(self, db):
        self.db = db

    def run(self, sql, timeout=180):
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.db, "-f", "-"]
        try:
            p = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "", "psql timed out after %ds" % timeout
        return p.returncode, p.stdout, p.stderr

    def call(self, server, query, pre=""):
        """Run query through contract_try() with maestro.server set; return dict."""
        tag = "$ct$"
        while tag in query:
            tag = tag[:-1] + "x$"
        sql = ("SET TimeZone = 'UTC';\nSET statement_timeout = '120s';\n%s"
               "SET maestro.server = %s;\nSELECT contract_try(%s%s%s);\n"
               % (pre, sql_lit(server), tag, query, tag))
        rc, out, err = self.run(sql)
        if rc != 0:
            return {"ok": False, "psql_failed": True, "sqlstate": None,
                    "message": err.strip(), "detail": None, "stderr": err, "sql": sql}
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "psql_failed": True, "sqlstate": None,
                    "message": "unparsable psql output: %r" % out, "detail": None,
                    "stderr": err, "sql": sql}
        res["stderr"] = err
        res["sql"] = sql
        return res


SETUP_SQL = r"""
CREATE EXTENSION maestro;
CREATE SERVER prism FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url {prism_url}, account_id {account});
CREATE USER MAPPING FOR CURRENT_USER SERVER prism OPTIONS (access_token {prism_token});
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url {sim_url}, account_id {account});
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token {sim_token});
CREATE FUNCTION contract_try(q text) RETURNS jsonb LANGUAGE plpgsql AS $f$
DECLARE r jsonb; st text; msg text; det text; hnt text;
BEGIN
  EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t)), ''[]''::jsonb) FROM (%s) t', q) INTO r;
  RETURN jsonb_build_object('ok', true, 'rows', r);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
  RETURN jsonb_build_object('ok', false, 'sqlstate', st, 'message', msg,
                            'detail', det, 'hint', hnt);
END $f$;
"""


def describe_error(res):
    out = ["SQL error %s: %s" % (res.get("sqlstate"), res.get("message"))]
    if res.get("detail"):
        out.append("DETAIL: " + res["detail"])
    if res.get("hint"):
        out.append("HINT: " + res["hint"])
    if res.get("stderr", "").strip():
        out.append("psql stderr: " + res["stderr"].strip())
    return out


# --------------------------------------------------------------------------
# recording proxy in front of Prism
# --------------------------------------------------------------------------
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
       "trailer", "upgrade", "expect"}


class Recorder:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.records = []
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            r, self.records = self.records, []
        return r


def make_proxy(recorder):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks), True
            n = int(self.headers.get("Content-Length") or 0)
            return (self.rfile.read(n) if n else b""), False

        def _any(self):
            body, chunked = self._body()
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP]
            if chunked:
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
            rec = {"method": self.command, "target": self.path, "headers": headers,
                   "body": body.decode("utf-8", "replace"), "chunked": chunked}
            try:
                conn = http.client.HTTPConnection("127.0.0.1", recorder.upstream_port, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                rbody = resp.read()
                rheaders = resp.getheaders()
                status = resp.status
                conn.close()
            except OSError as e:
                status, rheaders, rbody = 502, [("Content-Type", "text/plain")], \
                    ("proxy could not reach prism: %s" % e).encode()
            rec.update(status=status, resp_headers=rheaders,
                       resp_body=rbody.decode("utf-8", "replace"))
            with recorder.lock:
                recorder.records.append(rec)
            self.send_response(status)
            for k, v in rheaders:
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            self.wfile.write(rbody)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def violations(headers):
    raw = header(headers, "sl-violations")
    if not raw:
        return []
    try:
        return json.loads(raw)
    except ValueError:
        return [{"location": ["?"], "message": raw}]


def path_regex(template):
    parts = re.split(r"(\{[^}]+\})", template)
    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile("^" + rx + "$")


# --------------------------------------------------------------------------
# plain HTTP helper
# --------------------------------------------------------------------------
def http_call(base, method, path, headers=None, body=None, timeout=30):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    conn.request(method, u.path.rstrip("/") + path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read().decode("utf-8", "replace")
    hdrs = r.getheaders()
    conn.close()
    return r.status, hdrs, data


def fill_path(template, wf, inst):
    return (template.replace("{accountId}", ACCOUNT_ID).replace("{workflowId}", wf)
            .replace("{instanceId}", inst))


# --------------------------------------------------------------------------
# 1. Prism really validates
# --------------------------------------------------------------------------
def check_prism_validates(t, prism_url, spec, wf, inst):
    auth = {"Authorization": "Bearer " + PRISM_TOKEN, "Accept": "application/json"}
    wl = "/v1/accounts/%s/workflows" % ACCOUNT_ID
    trig = "%s/%s/actions/trigger" % (wl, wf)
    good_body = json.dumps({"instance_name": "x", "trigger_inputs": {"a": "b"}})

    status, hdrs, body = http_call(prism_url, "GET", wl, auth)
    names = None
    try:
        names = [w.get("name") for w in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        pass
    want = [w.get("name") for w in list_data(named_value(spec, "WorkflowListExample") or {})]
    t.check(status == 200 and not violations(hdrs) and names == want,
            "prism: a valid request (GET workflows, Bearer token) gets 200 and the spec example",
            ["status %s, violations %s, names %s, expected %s" % (status, violations(hdrs), names, want)])

    cases = [
        ("no Authorization header", "GET", wl, {"Accept": "application/json"}, None,
         lambda s, v: s == 401),
        ("Basic instead of Bearer authorization", "GET", wl,
         {"Authorization": "Basic eDp5", "Accept": "application/json"}, None, lambda s, v: s == 401),
        ("a workflow id that is not a uuid", "GET", "%s/not-a-uuid/trigger-requirements" % wl,
         auth, None, lambda s, v: any("path" in x.get("location", []) for x in v)),
        ("an instance id that is not a uuid", "GET", "%s/%s/instances/42" % (wl, wf), auth, None,
         lambda s, v: any("path" in x.get("location", []) for x in v)),
        ("status=bogus (not in the enum)", "GET", wl + "?status=bogus", auth, None,
         lambda s, v: any("query" in x.get("location", []) for x in v)),
        ("trigger without instance_name", "POST", trig,
         dict(auth, **{"Content-Type": "application/json"}),
         json.dumps({"trigger_inputs": {"a": "b"}}),
         lambda s, v: any("instance_name" in x.get("message", "") for x in v)),
        ("trigger with a null trigger input value", "POST", trig,
         dict(auth, **{"Content-Type": "application/json"}),
         json.dumps({"instance_name": "x", "trigger_inputs": {"a": None}}),
         lambda s, v: any("body" in x.get("location", []) for x in v)),
        ("trigger with Content-Type text/plain", "POST", trig,
         dict(auth, **{"Content-Type": "text/plain"}), good_body,
         lambda s, v: any(str(x.get("code")) == "415" for x in v)),
        ("pause with a request body", "POST", "%s/%s/actions/pause" % (wl, wf),
         dict(auth, **{"Content-Type": "application/json"}), "{}",
         lambda s, v: any(str(x.get("code")) == "415" for x in v)),
    ]
    for desc, method, path, hdr, body, extra in cases:
        status, hdrs, rbody = http_call(prism_url, method, path, hdr, body)
        v = [x for x in violations(hdrs) if (x.get("location") or [None])[0] == "request"]
        t.check(status >= 400 and v and extra(status, v),
                "prism rejects an invalid request: %s (HTTP %s)" % (desc, status),
                ["status %s, request violations %s, body %s" % (status, short(v), short(rbody, 300))])


# --------------------------------------------------------------------------
# 2. every SQL function against Prism
# --------------------------------------------------------------------------
def prism_calls(spec, wf, inst):
    """(label, sql, operation_id, kind, expectations) for the run against Prism."""
    out = []
    for method, path, op in operations(spec):
        opid = op.get("operationId")
        calls = calls_for(opid, wf, inst)
        if not calls:
            continue
        for label, sql, kind in calls:
            exp = {}
            if opid == "TriggerWorkflow":
                exp["body"] = {"instance_name": TRIGGER_NAME, "trigger_inputs": TRIGGER_INPUTS}
            if opid == "GetWorkflowsList":
                exp["query"] = {}
            out.append((label, sql, opid, kind, exp))
    w = sql_lit(wf)
    # the status filter: every enum value of the spec must be sent as a valid query
    op = find_op(spec, "GetWorkflowsList")
    if op:
        enum = []
        params = list(spec["paths"][op[1]].get("parameters", [])) + list(op[2].get("parameters", []))
        for p in params:
            p = resolve(spec, p)
            if p.get("in") == "query" and p.get("name") == "status":
                enum = resolve(spec, p.get("schema", {})).get("enum", [])
        for value in enum:
            out.append(("maestro_workflows(status => %s)" % sql_lit(value),
                        "SELECT * FROM maestro_workflows(status => %s)" % sql_lit(value),
                        "GetWorkflowsList", "workflows" if value == "active" else None,
                        {"query": {"status": [value]}}))
    # trigger with its instance_name defaulted, and with empty inputs
    out.append(("maestro_trigger(workflow_id, inputs) (instance_name defaulted)",
                "SELECT * FROM maestro_trigger(%s::uuid, %s::jsonb)"
                % (w, sql_lit(json.dumps({"Name": "Grace"}))),
                "TriggerWorkflow", "trigger", {"body_inputs": {"Name": "Grace"}}))
    out.append(("maestro_trigger(workflow_id, '{}', instance_name)",
                "SELECT * FROM maestro_trigger(%s::uuid, '{}'::jsonb, 'no inputs')" % w,
                "TriggerWorkflow", "trigger",
                {"body": {"instance_name": "no inputs", "trigger_inputs": {}}}))
    return out


def response_example(spec, opid):
    """The example Prism answers with (the first example of the first 2xx)."""
    method, path, op = find_op(spec, opid)
    for status, resp in sorted(op.get("responses", {}).items()):
        if str(status).startswith("2"):
            resp = resolve(spec, resp)
            for ctype, media in (resp.get("content") or {}).items():
                for key, ex in (media.get("examples") or {}).items():
                    return resolve(spec, ex).get("value")
                if "example" in media:
                    return media["example"]
    return None


def check_against_prism(t, db, rec, spec, wf, inst):
    for label, sql, opid, kind, exp in prism_calls(spec, wf, inst):
        method, path, op = find_op(spec, opid)
        rec.take()
        res = db.call("prism", sql)
        reqs = rec.take()
        # (a) request side: what Prism saw and said
        problems = []
        rx = path_regex(path)
        if not reqs:
            problems.append("the extension sent no request to prism")
        elif len(reqs) > 1:
            problems.append("one SQL call sent %d HTTP requests (prism answered them all 2xx, "
                            "so none was a retry); expected exactly one" % len(reqs))
        for r in reqs:
            target = urllib.parse.urlsplit(r["target"])
            where = "%s %s" % (r["method"], r["target"])
            if r["method"] != method or not rx.match(target.path):
                problems.append("%s: expected %s %s" % (where, method, path))
            viol = [v for v in violations(r["resp_headers"]) if (v.get("location") or [None])[0] == "request"]
            if viol:
                problems.append("%s: prism request violations: %s" % (where, json.dumps(viol)))
            if not 200 <= r["status"] < 300:
                problems.append("%s: prism answered HTTP %s: %s" % (where, r["status"], short(r["resp_body"], 400)))
            auth = header(r["headers"], "Authorization")
            if auth != "Bearer " + PRISM_TOKEN:
                problems.append("%s: Authorization header is %r, expected 'Bearer %s'" % (where, auth, PRISM_TOKEN))
            if ("/" + ACCOUNT_ID + "/") not in target.path:
                problems.append("%s: account id %s not in the path" % (where, ACCOUNT_ID))
            q = urllib.parse.parse_qs(target.query, keep_blank_values=True)
            if "query" in exp and q != exp["query"]:
                problems.append("%s: query %s, expected %s" % (where, q, exp["query"]))
            if method == "POST" and opid != "TriggerWorkflow" and r["body"]:
                problems.append("%s: unexpected request body %s" % (where, short(r["body"], 200)))
            if "body" in exp or "body_inputs" in exp:
                try:
                    sent = json.loads(r["body"])
                except ValueError:
                    sent = None
                    problems.append("%s: body is not JSON: %s" % (where, short(r["body"], 200)))
                if "body" in exp and isinstance(sent, dict) and \
                        any(sent.get(k) != v for k, v in exp["body"].items()):
                    problems.append("%s: body %s, expected %s" % (where, short(sent, 300), short(exp["body"], 300)))
                if "body_inputs" in exp and isinstance(sent, dict) and sent.get("trigger_inputs") != exp["body_inputs"]:
                    problems.append("%s: trigger_inputs %s, expected %s" % (where, short(sent.get("trigger_inputs")), exp["body_inputs"]))
        diag = list(problems)
        if not res.get("ok"):
            diag += describe_error(res)
        t.check(reqs and not problems, "prism: %s sends one request that passes the spec's validation" % label,
                diag + ["SQL: " + sql])
        # (b) result side
        if kind is None:
            t.check(res.get("ok"), "prism: %s succeeds" % label, describe_error(res) + ["SQL: " + sql])
            continue
        if not res.get("ok"):
            t.check(False, "prism: %s succeeds and returns the spec example's rows" % label,
                    describe_error(res) + ["SQL: " + sql])
            continue
        rows = res["rows"]
        cols = {"workflows": WORKFLOW_COLS, "instances": INSTANCE_COLS, "instance": INSTANCE_COLS,
                "trigger_inputs": TRIGGER_INPUT_COLS, "trigger": TRIGGER_COLS}.get(kind)
        diffs = []
        if cols and rows and list(rows[0].keys()) != cols and set(rows[0].keys()) != set(cols):
            diffs.append("columns %s, documented %s" % (list(rows[0].keys()), cols))
        value = response_example(spec, opid)
        diffs += compare_rows(kind, value, wf, rows)
        t.check(not diffs, "prism: %s succeeds and returns the spec example's rows" % label,
                diffs + ["SQL: " + sql])


# --------------------------------------------------------------------------
# 3. example replay
# --------------------------------------------------------------------------
def sim_examples(sim_url):
    status, hdrs, body = http_call(sim_url, "GET", "/__sim/examples")
    if status != 200:
        raise RuntimeError("GET /__sim/examples: HTTP %s %s" % (status, short(body, 300)))
    data = json.loads(body)
    if isinstance(data, dict):
        data = data.get("examples", [])
    return data


def example_base(sim_url, status, name):
    return "%s/_example/%s/%s" % (sim_url.rstrip("/"), urllib.parse.quote(str(status), safe=""),
                                  urllib.parse.quote(str(name), safe=""))


def synthesized_errors(spec, catalogue):
    """Error responses (4xx/5xx) of the spec that carry no example at all but
    whose object schema gives an example for its properties (the Error schema
    does): the body those property examples make up, as Prism would mock it."""
    have = {(c["operation_id"], c["status"], c["content_type"]) for c in catalogue}
    out = []
    for method, path, op in operations(spec):
        opid = op.get("operationId")
        for status, resp in op.get("responses", {}).items():
            if not str(status)[:1] in ("4", "5"):
                continue
            resp = resolve(spec, resp)
            for ctype, media in (resp.get("content") or {}).items():
                if (opid, str(status), ctype) in have:
                    continue
                schema = resolve(spec, media.get("schema") or {})
                props = schema.get("properties") if isinstance(schema, dict) else None
                if not props:
                    continue
                value = {}
                for k, v in props.items():
                    v = resolve(spec, v)
                    if "example" in v:
                        value[k] = v["example"]
                    elif v.get("examples"):
                        value[k] = v["examples"][0]
                if value:
                    out.append(dict(operation_id=opid, method=method, path=path,
                                    status=str(status), content_type=ctype, value=value))
    return out


class LocalReplay:
    """Serves example values the simulator does not list:
    /_example/<key>/... answers with that key's (status, content type, body)."""

    def __init__(self):
        self.items = {}
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                parts = self.path.split("/")
                item = replay.items.get(parts[2] if len(parts) > 2 else "")
                if item is None:
                    status, ctype, body = 404, "text/plain", b"unknown example"
                else:
                    status, ctype, value = item
                    if isinstance(value, str):
                        body = value.encode()
                    else:
                        body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def add(self, status, ctype, value):
        key = "x%d" % (len(self.items) + 1)
        self.items[key] = (int(status), ctype, value)
        return "%s/_example/%s" % (self.url, key)


def fetch_served(base, op, wf, inst):
    method, path, _ = op
    hdr = {"Authorization": "Bearer " + SIM_TOKEN, "Accept": "application/json"}
    body = None
    if method == "POST" and path.endswith("/actions/trigger"):
        body = json.dumps({"instance_name": "x", "trigger_inputs": {}})
        hdr["Content-Type"] = "application/json"
    try:
        s, h, b = http_call(base, method, fill_path(path, wf, inst), hdr, body)
    except OSError as e:
        return "connection failed: %s" % e, None
    try:
        return s, json.loads(b)
    except ValueError:
        return s, b


def replay_plan(spec, listing, sim_url, local, wf, inst, fetch=True):
    """Everything to replay: what the simulator lists, plus the spec's error
    examples it does not list (served by LocalReplay).  Returns
    (catalogue, plan, notes)."""
    catalogue = spec_examples(spec)
    plan, notes = [], []
    for entry in listing:
        name, opid = entry.get("name"), entry.get("operation_id")
        if opid is None:
            notes.append("simulator lists example %s, which no operation uses: nothing to call" % name)
            continue
        try:
            status = int(entry.get("status"))
        except (TypeError, ValueError):
            status = None
        op = find_op(spec, opid)
        item = dict(label="%s %s (%s)" % (entry.get("status"), name, opid), status=status,
                    opid=opid, content_type=entry.get("content_type"), source="simulator",
                    base=example_base(sim_url, entry.get("status"), name),
                    calls=calls_for(opid, wf, inst) or [], op=op, served=None,
                    served_status=None, value=None, how=None, error=None)
        if op is None or status is None:
            item["error"] = "the simulator lists operation %r / status %r, which the spec lacks" % (opid, entry.get("status"))
        elif calls_for(opid, wf, inst) is None:
            item["error"] = "no SQL function covers operation %s" % opid
        if fetch and op is not None:
            item["served_status"], item["served"] = fetch_served(item["base"], op, wf, inst)
        value, how = match_spec_value(catalogue, entry, item["served"])
        if value is None and item["served"] is not None:
            value, how = item["served"], "value served by the simulator (%s)" % how
        item["value"], item["how"] = value, how
        plan.append(item)

    served_by_sim = [(i["opid"], str(i["status"]), i["served"]) for i in plan]
    extra = [dict(c, how="spec: schema-level example, not listed by the simulator")
             for c in catalogue if not c["named"]]
    extra += [dict(c, how="spec: the %s schema's property examples (the response defines no example)"
                   % c["content_type"]) for c in synthesized_errors(spec, catalogue)]
    for c in extra:
        if (c["operation_id"], c["status"], c["value"]) in served_by_sim:
            continue
        status = int(c["status"])
        base = local.add(status, c["content_type"], c["value"]) if local else "$LOCAL_REPLAY/_example/..."
        plan.append(dict(label="%s %s %s (%s)" % (c["status"], c["content_type"],
                                                  "schema example" if "schema-level" in c["how"]
                                                  else "Error property examples", c["operation_id"]),
                         status=status, opid=c["operation_id"], content_type=c["content_type"],
                         source="local", base=base, calls=calls_for(c["operation_id"], wf, inst) or [],
                         op=find_op(spec, c["operation_id"]), served=None, served_status=None,
                         value=c["value"], how=c["how"],
                         error=None if calls_for(c["operation_id"], wf, inst) else
                         "no SQL function covers operation %s" % c["operation_id"]))
        if fetch and local:
            plan[-1]["served_status"], plan[-1]["served"] = fetch_served(base, plan[-1]["op"], wf, inst)
    return catalogue, plan, notes


def match_spec_value(catalogue, entry, served):
    """Find the spec value of a listed example; (value, how) or (None, why)."""
    cands = [c for c in catalogue if c["operation_id"] == entry.get("operation_id")
             and c["status"] == str(entry.get("status"))]
    ct = entry.get("content_type")
    if ct:
        cands = [c for c in cands if c["content_type"] == ct] or cands
    for c in cands:
        if entry.get("name") in c["aliases"]:
            return c["value"], "spec example %s" % entry.get("name")
    for c in cands:
        if served is not None and c["value"] == served:
            return c["value"], "spec value (matched by content)"
    return None, "not found in the spec"


def server_sql(base):
    return "ALTER SERVER sim OPTIONS (SET base_url %s);\n" % sql_lit(base)


def check_replay(t, db, spec, sim_url, wf, inst):
    try:
        listing = sim_examples(sim_url)
    except Exception as e:   # noqa: BLE001 - any failure is a failed check
        t.check(False, "simulator lists the spec's examples (GET /__sim/examples)", [repr(e)])
        return
    local = LocalReplay()
    catalogue, plan, notes = replay_plan(spec, listing, sim_url, local, wf, inst)
    for n in notes:
        t.note(n)
    named = [c for c in catalogue if c["named"]]
    listed = {(e.get("operation_id"), str(e.get("status")), e.get("name")) for e in listing}
    for c in named:
        hit = any((c["operation_id"], c["status"], a) in listed for a in c["aliases"])
        t.check(hit, "simulator lists spec example %s (%s %s)"
                % ("/".join(sorted(c["aliases"])), c["operation_id"], c["status"]),
                ["listing: " + short(sorted(map(str, listed)), 1500)])
    local_n = sum(1 for i in plan if i["source"] == "local")
    if local_n:
        t.note("%d error example(s) of the spec are not listed by the simulator; "
               "they are served by the driver's own replay server" % local_n)
    for item in plan:
        tag = "example %s" % item["label"]
        if item["error"]:
            t.check(False, tag, [item["error"]])
            continue
        status = item["status"]
        if item["served_status"] != status:
            t.check(False, "%s: %s serves HTTP %s" % (tag, item["source"], status),
                    ["served HTTP %s: %s" % (item["served_status"], short(item["served"], 300))])
            continue
        for label, sql, kind in item["calls"]:
            res = db.call("sim", sql, pre=server_sql(item["base"]))
            if 200 <= status < 300:
                if not res.get("ok"):
                    t.check(False, "%s: %s parses into the example's rows" % (tag, label),
                            describe_error(res) + ["SQL: " + sql])
                    continue
                diffs = compare_rows(kind, item["value"], wf, res["rows"])
                t.check(not diffs, "%s: %s parses into the example's rows" % (tag, label),
                        diffs + ["expected from: " + item["how"], "SQL: " + sql])
            else:
                want = expected_sqlstate(status)
                texts = error_text(item["value"])
                full = "\n".join(str(res.get(k) or "") for k in ("message", "detail", "hint"))
                diag = []
                if res.get("ok"):
                    diag.append("no error; rows %s" % short(res.get("rows")))
                elif res.get("psql_failed"):
                    diag += describe_error(res)
                else:
                    if want and res.get("sqlstate") != want:
                        diag.append("SQLSTATE %s, expected %s" % (res.get("sqlstate"), want))
                    for m in texts:
                        if m not in full:
                            diag.append("message/detail lacks the example's text %r" % m)
                    if not texts:
                        diag.append("cannot tell the example's message from %s" % short(item["value"], 300))
                    if str(status) not in full:
                        diag.append("message/detail lacks the HTTP status %s" % status)
                    if diag:
                        diag += describe_error(res)
                t.check(not diag, "%s: %s raises SQLSTATE %s with the example's message"
                        % (tag, label, want or "(any)"),
                        diag + ["expected from: " + item["how"], "SQL: " + sql])


# --------------------------------------------------------------------------
# dynamic rounds: Prism answers with random schema-valid bodies (mock -d)
# --------------------------------------------------------------------------
DYNAMIC_ROUNDS = int(os.environ.get("CONTRACT_DYNAMIC_ROUNDS", "20"))
PRISM_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_modules", ".bin", "prism")


def dynamic_calls(wf, inst):
    """(label, query) for every function the spec's operations back."""
    w, i = sql_lit(wf), sql_lit(inst)
    inputs = sql_lit(json.dumps(TRIGGER_INPUTS)) + "::jsonb"
    return [
        ("maestro_workflows()", "SELECT * FROM maestro_workflows()"),
        ("maestro_trigger_requirements(workflow_id)",
         "SELECT maestro_trigger_requirements(%s::uuid) AS v" % w),
        ("maestro_trigger_inputs(workflow_id)", "SELECT * FROM maestro_trigger_inputs(%s::uuid)" % w),
        ("maestro_trigger(workflow_id, inputs, instance_name)",
         "SELECT * FROM maestro_trigger(%s::uuid, %s, %s)" % (w, inputs, sql_lit(TRIGGER_NAME))),
        ("maestro_instances(workflow_id)", "SELECT * FROM maestro_instances(%s::uuid)" % w),
        ("maestro_instance(workflow_id, instance_id)",
         "SELECT * FROM maestro_instance(%s::uuid, %s::uuid)" % (w, i)),
        ("maestro_pause(workflow_id)", "SELECT maestro_pause(%s::uuid) AS v" % w),
        ("maestro_resume(workflow_id)", "SELECT maestro_resume(%s::uuid) AS v" % w),
        ("maestro_cancel(workflow_id, instance_id)",
         "SELECT maestro_cancel(%s::uuid, %s::uuid) AS v" % (w, i)),
        # the spec has no account-wide list: Prism's 404 makes the view fall
        # back to the workflow list and each workflow's instances
        ("maestro_all_instances (view)", "SELECT * FROM maestro_all_instances"),
    ]


def start_dynamic_prism(spec_path):
    """Prism in dynamic mode on a free port; (process, url, log path) or raises."""
    import socket
    import tempfile
    import time
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = tempfile.NamedTemporaryFile(prefix="prism-dynamic.", suffix=".log", delete=False)
    proc = subprocess.Popen([PRISM_BIN, "mock", "-d", "-h", "127.0.0.1", "-p", str(port),
                             spec_path], stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            return proc, url, log.name
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    with open(log.name, errors="replace") as f:
        tail = f.read()[-2000:]
    os.unlink(log.name)
    raise RuntimeError("prism mock -d did not start on %s: %s" % (url, tail))


def check_dynamic(t, db, spec_path, wf, inst):
    """Every function succeeds, over DYNAMIC_ROUNDS random schema-valid answers
    each: the spec requires no response field, so none may be an error."""
    import signal
    try:
        proc, url, log = start_dynamic_prism(spec_path)
    except Exception as e:   # noqa: BLE001 - a failure to start is a failed check
        t.check(False, "dynamic rounds: prism mock -d starts", [str(e)])
        return
    # run.sh stops this driver with SIGTERM: stop Prism with it
    old_term = signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        rc, out, err = db.run(
            "DROP SERVER IF EXISTS prism_dynamic CASCADE;\n"
            "CREATE SERVER prism_dynamic FOREIGN DATA WRAPPER maestro "
            "OPTIONS (base_url %s, account_id %s);\n"
            "CREATE USER MAPPING FOR CURRENT_USER SERVER prism_dynamic OPTIONS (access_token %s);\n"
            % (sql_lit(url), sql_lit(ACCOUNT_ID), sql_lit(PRISM_TOKEN)))
        if not t.check(rc == 0, "dynamic rounds: server prism_dynamic (prism mock -d)", [err.strip()]):
            return
        for label, query in dynamic_calls(wf, inst):
            tag = "$dq$"
            sql = ("SET TimeZone = 'UTC';\nSET statement_timeout = '300s';\n"
                   "SET maestro.server = 'prism_dynamic';\n"
                   "SELECT contract_try(%s%s%s) FROM generate_series(1, %d);\n"
                   % (tag, query, tag, DYNAMIC_ROUNDS))
            rc, out, err = db.run(sql, timeout=600)
            results = []
            for line in out.strip().splitlines():
                try:
                    results.append(json.loads(line))
                except ValueError:
                    pass
            failures = [r for r in results if not r.get("ok")]
            diag = ["psql exit %d: %s" % (rc, err.strip())] if rc != 0 else []
            if len(results) != DYNAMIC_ROUNDS:
                diag.append("%d result(s), expected %d" % (len(results), DYNAMIC_ROUNDS))
            for r in failures[:3]:
                diag += describe_error(r)
            if failures:
                diag.append("%d of %d calls raised an error" % (len(failures), len(results)))
            t.check(not diag, "dynamic: %s succeeds on %d random schema-valid answers"
                    % (label, DYNAMIC_ROUNDS), diag + ["SQL: " + query])
            distinct = len({json.dumps(r.get("rows"), sort_keys=True) for r in results if r.get("ok")})
            if label.startswith(("maestro_workflows", "maestro_trigger(")):
                # proof that Prism answered at random, not with the spec's one example
                t.check(distinct > 1, "dynamic: %s got different answers (%d distinct of %d)"
                        % (label, distinct, len(results)))
            warnings = err.count("WARNING:")
            if warnings:
                t.note("%s: %d of %d answers lacked a field the spec does not require (WARNING)"
                       % (label, warnings, len(results)))
    finally:
        signal.signal(signal.SIGTERM, old_term)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not os.environ.get("CONTRACT_KEEP_LOGS"):
            os.unlink(log)
        else:
            t.note("dynamic prism log kept in %s" % log)


# --------------------------------------------------------------------------
def workflow_and_instance(spec):
    wl = list_data(named_value(spec, "WorkflowListExample") or {})
    inst = named_value(spec, "WorkflowInstanceExample") or {}
    return (wl[0].get("id") if wl else FALLBACK_WORKFLOW_ID), inst.get("id", FALLBACK_INSTANCE_ID)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--prism-url")
    ap.add_argument("--sim-url")
    ap.add_argument("--db", help="database to run in (created by run.sh)")
    ap.add_argument("--emit-sql", action="store_true",
                    help="print the example-replay SQL (needs --sim-url for the listing) and exit")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    wf, inst = workflow_and_instance(spec)

    if args.emit_sql:
        if args.sim_url:
            listing = sim_examples(args.sim_url)
        else:   # no simulator: what the listing of the spec's named examples would be
            listing = [dict(name=c["name"], operation_id=c["operation_id"], status=c["status"],
                            content_type=c["content_type"]) for c in spec_examples(spec) if c["named"]]
        sim = args.sim_url or "$MAESTRO_SIM_URL"
        _, plan, notes = replay_plan(spec, listing, sim, None, wf, inst, fetch=False)
        for n in notes:
            print("-- note: " + n)
        for item in plan:
            print("-- %s, served by %s; expected from: %s" % (item["label"], item["source"], item["how"]))
            if item["error"]:
                print("-- ERROR: " + item["error"])
            for label, sql, kind in item["calls"]:
                print(server_sql(item["base"]) + "SET maestro.server = 'sim';\n" + sql + ";")
        return 0

    t = Tally()
    try:
        check_prism_validates(t, args.prism_url, spec, wf, inst)
        db = Psql(args.db)
        rec = Recorder(urllib.parse.urlsplit(args.prism_url).port)
        proxy = make_proxy(rec)
        proxy_url = "http://127.0.0.1:%d" % proxy.server_address[1]
        rc, out, err = db.run(SETUP_SQL.format(
            prism_url=sql_lit(proxy_url), account=sql_lit(ACCOUNT_ID),
            prism_token=sql_lit(PRISM_TOKEN), sim_url=sql_lit(args.sim_url or "http://127.0.0.1:9"),
            sim_token=sql_lit(SIM_TOKEN)))
        if not t.check(rc == 0, "setup: CREATE EXTENSION maestro, servers prism and sim, user mappings",
                       [err.strip()]):
            return t.summary()
        check_against_prism(t, db, rec, spec, wf, inst)
        check_dynamic(t, db, args.spec, wf, inst)
        if args.sim_url:
            check_replay(t, db, spec, args.sim_url, wf, inst)
        else:
            t.check(False, "example replay: MAESTRO_SIM_URL is not set")
    except Exception as e:  # noqa: BLE001 - report and count, never die silently
        import traceback
        t.check(False, "contract driver crashed: %r" % e, traceback.format_exc().splitlines())
    return t.summary()


if __name__ == "__main__":
    sys.exit(main())
