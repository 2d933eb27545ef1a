"""Credentials out of anything the workbench records: URLs without ``user:pass@`` or query secrets.

    redact_url("https://bob:pw@host/v1?key=abc&api-version=2024")  # 'https://host/v1?key=***&api-version=2024'
    redact_text("openai:http://u:p@10.0.0.5/v1#m failed")           # 'openai:http://10.0.0.5/v1#m failed'
    redact_secrets({"model": {"name": "openai:https://u:p@h/v1#m"}})  # the same, for every string inside

Every query value is hidden except those named in ``SAFE_QUERY`` (versions, formats): a key may be
called anything (``key``, ``sig``, ``code``, ``x-amz-credential``), so the rule is an allowlist.
Pure and dependency-free: the run writer calls it on every whole file it writes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SAFE_QUERY = frozenset({"api-version", "api_version", "version", "format", "model", "stream"})
HIDDEN = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s'\"<>`]{1,4000}")


def redact_url(url: str) -> str:
    """``url`` without its userinfo and with every query value but ``SAFE_QUERY``'s hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: drop anything that looks like userinfo
        return re.sub(r"(?<=://)[^/@\s]*@", "", url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        items = []
        for item in query.split("&"):
            name, sep, value = item.partition("=")
            items.append(item if not sep or not value or name.lower() in SAFE_QUERY else f"{name}={HIDDEN}")
        query = "&".join(items)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted (see `redact_url`); text without ``://`` is returned as is."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_secrets(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings) with every string redacted."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {redact_secrets(k) if isinstance(k, str) else k: redact_secrets(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_secrets(v) for v in obj)
    return obj
