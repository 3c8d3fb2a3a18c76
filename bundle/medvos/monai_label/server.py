"""medvos' HTTP layer over MONAI Label's server, installed on its FastAPI app when the medvos app starts.

- **Off the event loop.** MONAI Label declares its endpoints ``async`` and runs infer, strategy, training and
  datastore work inside them, so one propagation froze every client (``/info`` waited behind an infer; parallel
  infers were answered together). Those routes are registered again as plain functions, which FastAPI runs in its
  thread pool: ``/info``, datastore calls and a second user's infer are served while one runs.
- **``POST /infer/{model}``**: ``params`` must be a JSON object (400 otherwise, instead of 500); ``output=dicom_seg``
  answers a DICOM SEG of the result referencing the stored DICOM cine (MONAI Label's endpoint offers it only for a
  DICOMweb datastore); the uploaded label is removed when the request is refused, not only after a success.
- **``PUT /datastore/image`` and ``PUT /datastore/label``**: the upload is read before it is stored (the datastore
  answers 422 for a corrupt, empty or wrong-shape file: :class:`medvos.monai_label.datastore.CineDatastore`); ``params``
  must be JSON; the upload's temporary file is removed in every case.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, Optional

from fastapi import BackgroundTasks, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from medvos.monai_label.requests import RequestError

logger = logging.getLogger(__name__)

# MONAI Label routes whose (async) endpoints do blocking work: served from the thread pool instead
OFF_LOOP = ("/infer", "/activelearning", "/datastore", "/train", "/session", "/batch", "/scoring", "/model")


def json_object(text: str | None, what: str = "params") -> dict[str, Any]:
    """A request's JSON form field as a dict (empty for none); 400 for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"{what} must be a JSON object, e.g. '{{\"annotated_frames\": \"0\"}}' ({exc})"
                           ) from None
    if not isinstance(value, dict):
        raise RequestError(400, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def spool(upload: UploadFile, cleanup: list[str]) -> str:
    """Copy an uploaded file to a temporary ``tmp*<its suffixes>`` file (what the app accepts as an upload)."""
    suffix = "".join(pathlib.Path(upload.filename).suffixes) if upload.filename else ".nii.gz"
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="tmp")
    cleanup.append(path)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return path


def _remove(paths: list[str]) -> None:
    from monailabel.utils.others.generic import remove_file

    for p in paths:
        remove_file(p)


def off_event_loop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A plain function with ``endpoint``'s signature that runs the coroutine to completion (in the worker thread
    FastAPI gives plain endpoints)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(endpoint(*args, **kwargs))

    run.__signature__ = inspect.signature(endpoint)  # type: ignore[attr-defined]
    run.__name__, run.__doc__ = endpoint.__name__, endpoint.__doc__
    return run


def _routers(app: Any) -> list[Any]:
    """The app's router and the routers it includes (FastAPI >= 0.16x keeps included routers as such)."""
    out = [app.router]
    for r in app.router.routes:
        included = getattr(r, "original_router", None)
        if included is not None and included not in out:
            out.append(included)
    return out


def _replace(router: Any, route: APIRoute, endpoint: Callable[..., Any]) -> None:
    new = APIRoute(route.path, endpoint, methods=list(route.methods), name=route.name, summary=route.summary,
                   description=route.description, tags=route.tags, dependencies=route.dependencies,
                   responses=route.responses, include_in_schema=route.include_in_schema,
                   deprecated=route.deprecated, response_class=route.response_class,
                   dependency_overrides_provider=route.dependency_overrides_provider)
    routes = router.routes
    routes[routes.index(route)] = new
    changed = getattr(router, "_mark_routes_changed", None)  # FastAPI caches the routes it resolved
    if changed is not None:
        changed()


def install(app: Any) -> int:
    """Install medvos' endpoints and serve MONAI Label's blocking ones off the event loop; the number of routes
    changed (0 when already installed)."""
    if getattr(app.state, "medvos_routes", False):
        return 0
    ours = {("/infer/{model}", "POST"): infer_endpoint, ("/datastore/image", "PUT"): add_image_endpoint,
            ("/datastore/", "PUT"): add_image_endpoint, ("/datastore/label", "PUT"): save_label_endpoint}
    changed = 0
    for router in _routers(app):
        for route in list(router.routes):
            if not isinstance(route, APIRoute) or not route.path.startswith(OFF_LOOP):
                continue
            mine = next((f for (path, method), f in ours.items() if route.path == path and method in route.methods),
                        None)
            if mine is not None:
                _replace(router, route, mine)
            elif inspect.iscoroutinefunction(route.endpoint):
                _replace(router, route, off_event_loop(route.endpoint))
            else:
                continue
            changed += 1
    app.state.medvos_routes = True
    logger.info("medvos: %d MONAI Label routes served from the thread pool", changed)
    return changed


def _user_dependency(role: str) -> Any:
    from monailabel.config import settings
    from monailabel.endpoints.user.auth import RBAC

    return Depends(RBAC(getattr(settings, role)))


def infer_endpoint(background_tasks: BackgroundTasks, model: str, image: str = "", session_id: str = "",
                   params: str = Form("{}"), file: UploadFile = File(None), label: UploadFile = File(None),
                   output: Optional[str] = None,
                   user: Any = _user_dependency("MONAI_LABEL_AUTH_ROLE_USER")) -> Any:
    """MONAI Label's infer endpoint with checked params, DICOM SEG output and no temporary file left behind."""
    from monailabel.endpoints.infer import send_response
    from monailabel.interfaces.utils.app import app_instance

    if output not in (None, "image", "json", "all", "dicom_seg"):
        raise RequestError(400, f"output {output!r}: expected image, json, all or dicom_seg")
    extra = json_object(params)
    if file is not None or session_id:
        raise RequestError(400, "upload the cine with PUT /datastore/image first and name it by its id")
    instance = app_instance()
    uploads: list[str] = []
    try:
        request: dict[str, Any] = {"model": model, "image": image}
        if label is not None:
            request["label"] = spool(label, uploads)
        request.update(instance.info().get("config", {}).get("infer", {}))
        request.update(extra)
        if output == "dicom_seg":
            request["output"] = "dicom_seg"
        result = instance.infer(request)
    except BaseException:
        _remove(uploads)
        raise
    for p in uploads:
        background_tasks.add_task(_remove, [p])
    if output == "dicom_seg":
        background_tasks.add_task(_remove, [result["file"], result["dicom_seg"]])
        return FileResponse(result["dicom_seg"], media_type="application/dicom",
                            filename=f"{image}_seg.dcm")
    return send_response(instance.datastore(), result, output or "image", background_tasks)


def add_image_endpoint(background_tasks: BackgroundTasks, image: Optional[str] = None, params: str = Form("{}"),
                       file: UploadFile = File(...),
                       user: Any = _user_dependency("MONAI_LABEL_AUTH_ROLE_ANNOTATOR")) -> dict[str, Any]:
    """Upload a cine: checked (readable, at least 2 frames, a listed file type) before it is stored."""
    from monailabel.interfaces.utils.app import app_instance

    info = json_object(params)
    info["user"] = getattr(user, "username", None)
    uploads: list[str] = []
    try:
        path = spool(file, uploads)
        suffix = "".join(pathlib.Path(file.filename).suffixes) if file.filename else ".nii.gz"
        image_id = image or os.path.basename(file.filename or "").replace(suffix, "")
        return {"image": app_instance().datastore().add_image(image_id, path, info)}
    finally:
        _remove(uploads)


def save_label_endpoint(background_tasks: BackgroundTasks, image: str, params: str = Form("{}"), tag: str = "final",
                        label: UploadFile = File(...),
                        user: Any = _user_dependency("MONAI_LABEL_AUTH_ROLE_ANNOTATOR")) -> dict[str, Any]:
    """Save a label of a stored cine: checked against the cine (frame count and size, something annotated)."""
    from monailabel.interfaces.utils.app import app_instance

    info = json_object(params)
    uploads: list[str] = []
    try:
        path = spool(label, uploads)
        instance = app_instance()
        label_id = instance.datastore().save_label(image, path, tag or "final", info)
        res = instance.on_save_label(image, label_id) or {}
        return {**res, "image": image, "label": label_id}
    finally:
        _remove(uploads)
