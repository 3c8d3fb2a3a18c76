"""Request validation for the MONAI Label app: ids, tags and files a request names must stay inside the datastore."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException

# letters, digits, '_', '.', '-' and inner spaces (3D Slicer names volumes like "Echo cine")
SAFE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 _.\-]{0,126}[A-Za-z0-9_.\-])?$")


class RequestError(HTTPException):
    """A bad request: answered with its HTTP status (4xx) and a message; the server keeps serving."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


def check_name(value: Any, what: str) -> str:
    """An image id or label tag: letters, digits, ``_ . -`` and spaces inside; no path separators, no ``..``."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise RequestError(400, f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' and spaces inside "
                                "(no paths)")
    return value


def uploaded_file(path: Any) -> Path:
    """A file uploaded with this request: MONAI Label stores uploads under the server's temp folder as ``tmp*``.

    Anything else (a path smuggled in through ``params``, a symlink) is refused, so a request cannot make the
    server read files outside the datastore.
    """
    p = Path(str(path))
    tmp = Path(tempfile.gettempdir()).resolve()
    if p.is_symlink() or p.parent.resolve() != tmp or not p.name.startswith("tmp") or not p.is_file():
        raise RequestError(400, "a label must be uploaded with the request (multipart field 'label') or saved in "
                                "the datastore; file paths are not accepted")
    return p


def parse_frames(value: Any) -> list[int]:
    """Annotated frame indices from a request: a list of non-negative integers, or text such as ``"0, 40"`` (what 3D
    Slicer's plugin sends for a text setting); empty means "every frame the label covers"."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s;]+", value.strip().strip("[]")) if p]
        if not all(p.isdigit() for p in parts):
            raise RequestError(400, f"annotated_frames {value!r}: give frame indices such as '0, 40'")
        return [int(p) for p in parts]
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        return list(value)
    raise RequestError(400, "annotated_frames must be a list of frame indices (or text such as '0, 40')")


def first_choice(value: Any) -> Any:
    """A setting offered as a list of choices (3D Slicer shows a list as a drop-down and sends the chosen item;
    other clients may send the list itself): the chosen one."""
    return value[0] if isinstance(value, list) and value else value


def parse_labels(text: str | None) -> dict[str, int]:
    """The app's ``labels`` setting: JSON ``{"name": value}`` with distinct values 1-255 (default ``{"object": 1}``)."""
    if not text:
        return {"object": 1}
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--conf labels {text!r}: not JSON ({exc}); give e.g. '{{\"lv\": 1, \"myocardium\": 2}}'"
                         ) from None
    if not isinstance(labels, dict) or not labels or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 255
            for k, v in labels.items()):
        raise ValueError(f"--conf labels {text!r}: expected names mapped to label values 1-255, e.g. "
                         '\'{"lv": 1, "myocardium": 2}\'')
    if len(set(labels.values())) != len(labels):
        raise ValueError(f"--conf labels {text!r}: two names share a label value")
    return {k: int(v) for k, v in labels.items()}
