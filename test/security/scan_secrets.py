#!/usr/bin/env python3
"""Search server logs and client outputs for secrets.

Usage: scan_secrets.py --secrets FILE [--sql-dir DIR] FILE...

FILE is a PostgreSQL server log (recognised by its timestamped lines) or a
client output (pg_regress results, psql output). The secrets file holds one
secret a line. Statements that create or alter user mappings carry secrets
by design (the README tells users to keep them out of logs), so their text
is left out of the search: in a server log, "statement:" entries and
STATEMENT: lines of such statements; in a pg_regress result, the echo of
such a statement as sql/<test>.sql has it. Everything else, including any
error such a statement raised, is searched. Prints each finding and exits
1 if there is one.
"""
import argparse
import os
import re
import sys

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
MAPPING = re.compile(r"USER\s+MAPPING", re.IGNORECASE)


def log_text(path):
    """A server log without the text of user-mapping statements."""
    entries, current = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if TIMESTAMP.match(line) and current:
                entries.append(current)
                current = []
            current.append(line)
    if current:
        entries.append(current)
    kept = []
    for entry in entries:
        text = "".join(entry)
        head = entry[0]
        if re.search(r"(LOG|DEBUG\d?):\s+(\w{5}: )?(statement|execute [^:]*|duration: .*statement): ", head) \
                and MAPPING.search(text):
            continue
        out = []
        for line in entry:
            # STATEMENT: (and its continuation lines) ends an error entry
            if re.search(r"\bSTATEMENT:\s", line) and MAPPING.search(text[text.index(line):]):
                break
            out.append(line)
        kept.append("".join(out))
    return "".join(kept)


def drop_statement_messages(text):
    """Client-side copies of "LOG: statement:" messages for user mappings
    (sent back to the client when client_min_messages is low)."""
    out, block = [], None
    for line in text.split("\n"):
        if block is not None:
            block.append(line)
            if line.rstrip().endswith(";"):
                if not MAPPING.search("\n".join(block)):
                    out.extend(block)
                block = None
            continue
        if re.match(r"(LOG|DEBUG\d?):\s+(\w{5}: )?statement: ", line):
            block = [line]
            if line.rstrip().endswith(";"):
                if not MAPPING.search(line):
                    out.append(line)
                block = None
            continue
        out.append(line)
    if block:
        out.extend(block)
    return "\n".join(out)


def result_text(path, sql_dir):
    """A client's output without the echo of user-mapping statements."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = drop_statement_messages(f.read())
    if sql_dir:
        sql_path = os.path.join(sql_dir, os.path.basename(path)[:-4] + ".sql")
        if os.path.exists(sql_path):
            with open(sql_path, encoding="utf-8") as f:
                sql = f.read()
            for statement in re.split(r"(?<=;)\n", sql):
                statement = statement.strip("\n")
                lines = [l for l in statement.split("\n") if not l.startswith("--")]
                statement = "\n".join(lines).strip()
                if MAPPING.search(statement):
                    text = text.replace(statement, "")
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secrets", required=True)
    ap.add_argument("--sql-dir")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    with open(args.secrets, encoding="utf-8") as f:
        secrets = sorted({s.strip() for s in f if len(s.strip()) >= 8})
    findings = 0
    scanned = 0
    for path in args.files:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        text = log_text(path) if TIMESTAMP.match(first) else result_text(path, args.sql_dir)
        scanned += len(text)
        for secret in secrets:
            at = text.find(secret)
            if at >= 0:
                findings += 1
                line = text[text.rfind("\n", 0, at) + 1:text.find("\n", at)]
                print(f"{path}: secret {secret[:6]}... found in: {line[:200]}")
    print(f"# searched {scanned} characters in {len(args.files)} files for {len(secrets)} secrets")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
