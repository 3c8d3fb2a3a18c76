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


# the arguments of `monai.bundle run` that are not config overrides
_RUN_ARGUMENTS = ("meta_file", "logging_file", "tracking", "init_id", "run_id", "final_id", "workflow_type",
                  "workflow_name", "properties_path")


def _cli_config(argv: Sequence[str]) -> dict[str, Any]:
    """The configuration a ``python -m monai.bundle run`` command line runs: its files merged, ``--args_file``
    defaults and ``--key value`` overrides applied, read with the libraries MONAI's command line uses (python-fire
    parses the arguments, ``monai.bundle.update_kwargs`` merges an args file, ``ConfigParser.update`` the overrides),
    so it is the config MONAI's ``ConfigWorkflow`` builds. Other command lines (tests, scripts): ``{}``."""
    if "--config_file" not in " ".join(argv) and "--args_file" not in " ".join(argv):
        return {}
    import fire
    from monai.bundle import ConfigParser, update_kwargs

    given: dict[str, Any] = {}

    def capture(*_subcommand: Any, **kwargs: Any) -> None:  # `run training`, then the --key value pairs
        given.update(kwargs)

    try:
        fire.Fire(capture, command=[str(a) for a in argv[1:]], name="monai.bundle")
    except fire.core.FireExit as exc:  # (a SystemExit)
        raise ValueError(f"unreadable command line: {exc}") from exc
    args = update_kwargs(args=given.pop("args_file", None), **given)
    files = args.pop("config_file", None)
    if not files:
        return {}
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(pairs={k: v for k, v in args.items() if k not in _RUN_ARGUMENTS})
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
