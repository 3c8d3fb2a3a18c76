"""MLflow helpers: the run's configuration as params, and a fail-fast check of a tracking server."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a/b/0": value}`` (MLflow allows only alphanumerics and `_-. :/` in keys)."""
    out: dict[str, Any] = {}
    items = d.items() if isinstance(d, Mapping) else enumerate(d)
    for k, v in items:
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, (Mapping, list)) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _cli_config(argv: Sequence[str]) -> dict[str, Any]:
    """The configuration given on a ``python -m monai.bundle run`` command line (files + ``--key value``)."""
    from monai.bundle import ConfigParser

    args: dict[str, str] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            key, _, val = tok[2:].partition("=")
            if not val and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                val, i = argv[i + 1], i + 1
            args[key] = val
        i += 1
    files = args.pop("config_file", None)
    if not files:
        return {}
    if files.startswith("["):
        import ast

        files = ast.literal_eval(files)
    parser = ConfigParser(ConfigParser.load_config_files(files))
    for k, v in args.items():
        if k in ("meta_file", "logging_file", "tracking", "args_file"):
            continue
        parser[k] = v
    return parser.get()


def config_params(extra: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None,
                  max_len: int = 500) -> dict[str, str]:
    """MLflow params: the run's configuration (files plus command-line overrides), flattened, and ``extra``
    (already-resolved values such as the image size or the datalist used)."""
    try:
        cfg = _cli_config(list(sys.argv if argv is None else argv))
    except Exception:  # a malformed command line must not stop training; the config artifact still records it
        cfg = {}
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith(("_meta_", "imports"))}
    params.update(flatten(dict(extra or {})))
    return {k[:250]: (json.dumps(v) if not isinstance(v, str) else v)[:max_len] for k, v in params.items()}


def write_config_snapshot(path: str, extra: Mapping[str, Any] | None = None) -> str:
    """Write the run's configuration (see :func:`config_params`) as JSON and return its path (an MLflow artifact)."""
    from medvos.io.atomic import atomic_write_bytes

    cfg = {}
    try:
        cfg = _cli_config(list(sys.argv))
    except Exception:
        pass
    atomic_write_bytes(path, json.dumps({"config": cfg, "resolved": dict(extra or {})}, indent=1, default=str).encode())
    return path


def checked_tracking_uri(uri: str, timeout: float = 5.0) -> str:
    """Return ``uri``; for an HTTP(S) MLflow server, first check it answers, else raise naming the URI."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user-configured server
                if resp.status >= 400:
                    raise RuntimeError(f"status {resp.status}")
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise RuntimeError(f"MLflow tracking server {uri} is unreachable ({exc}); start it or set "
                               "'tracking_uri' to another server (metrics would otherwise be lost)") from exc
    return uri
