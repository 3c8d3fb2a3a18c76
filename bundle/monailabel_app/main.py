"""MONAI Label app: label one frame of a cine, get every frame; correct, re-propagate; relearn on the datastore.

Start it with ``python scripts/start_label_server.py --studies <folder of cines>`` (see the README), or directly:
``python -m monailabel.main start_server --app bundle/monailabel_app --studies <folder> --conf models <dir>``.

Configuration (``--conf key value``): ``model`` (the base model, phase 1 or relearned; default the bundle's shipped
general model ``bundle/models/general.pt``), ``models`` (folder where the relearn task writes ``relearned.pt``,
used instead of the base model once there; default ``bundle/models``), ``image_size`` (only for older checkpoints
without a spec: checkpoints carry their own input size), ``clip_length`` (|B|, 8), ``tau_hidden`` (default: the TAU's own, 256; older relearned files
only), ``fusion`` (nearest|fuse|joint), ``threshold`` (0.5),
``memory_tree`` and ``motion`` (true|false; default: as in ``inference.yaml``), ``max_epochs`` (relearning, 3), ``tracking_uri`` (MLflow; default
sqlite beside the models), ``labels`` (the objects' names and label values as JSON, e.g. ``'{"lv": 1, "myocardium":
2}'``; default ``{"object": 1}``; a value without a name is called ``object <v>``).

The app serves MONAI Label's endpoints from a thread pool and checks uploads and params
(:mod:`medvos.monai_label.server`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

from medvos.inference.propagator import FUSION_MODES
from medvos.io.errors import CineReadError
from medvos.monai_label.datastore import PROPAGATED_TAG, CineDatastore, datastore_annotation, file_sha1
from medvos.monai_label.infer import PropagateInfer
from medvos.monai_label.requests import RequestError, check_name, first_choice, parse_frames, parse_labels, uploaded_file
from medvos.monai_label.strategy import LeastConfidentFrame
from medvos.monai_label.train import RelearnTrain
from medvos.networks.checkpoint import SHIPPED_MODEL, CheckpointError
from medvos.networks.relearn_model import CLIP_LENGTH

logger = logging.getLogger(__name__)
BUNDLE = Path(__file__).resolve().parents[1]


class MedVOSApp(MONAILabelApp):
    """Tasks: infer "propagate", train "relearn", strategy "least_confident_frame"."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = Path(conf.get("models", BUNDLE / "models")).resolve()
        self.base_model = Path(conf.get("model", BUNDLE / "models" / SHIPPED_MODEL)).resolve()
        self.image_size = int(conf["image_size"]) if conf.get("image_size") else None
        self.clip_length = int(conf.get("clip_length", CLIP_LENGTH))
        self.tau_hidden = int(conf["tau_hidden"]) if conf.get("tau_hidden") else None
        fusion = conf.get("fusion", "nearest")
        if fusion not in FUSION_MODES:
            raise ValueError(f"--conf fusion {fusion!r}: expected one of {FUSION_MODES}")
        options = {}
        for key in ("memory_tree", "motion"):
            if key in conf:
                if conf[key].lower() not in ("true", "false"):
                    raise ValueError(f"--conf {key} {conf[key]!r}: expected true or false")
                options[key] = conf[key].lower() == "true"
        # test-time tuning and self-annotation (the app's: APP_OPTIONS; tune_steps 0: off; self_annotate 0: one pass)
        for key in ("tune_steps", "tune_views", "self_annotate"):
            if key in conf:
                if not conf[key].isdigit():
                    raise ValueError(f"--conf {key} {conf[key]!r}: expected a whole number")
                options[key] = int(conf[key])
        if "tune_precision" in conf:  # the app's: float32 (APP_OPTIONS); auto: inferring's
            from medvos.networks.precision import check_precision

            options["tune_precision"] = check_precision(conf["tune_precision"], "--conf tune_precision")
        if "runtime" in conf:
            from medvos.networks.exported import RUNTIMES

            if conf["runtime"] not in RUNTIMES:
                raise ValueError(f"--conf runtime {conf['runtime']!r}: expected one of {RUNTIMES}")
            options["runtime"] = conf["runtime"]
        self.labels = parse_labels(conf.get("labels"))
        self.propagate = PropagateInfer(self.model_dir, self.base_model, self.image_size, self.clip_length,
                                        self.tau_hidden, fusion, float(conf.get("threshold", 0.5)),
                                        labels=self.labels, options=options)
        server_app = sys.modules.get("monailabel.app")  # the running server (absent when used as a library)
        if server_app is not None:
            from medvos.monai_label.server import install

            install(server_app.app)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medvos",
                         description="Few-shot cine segmentation: annotate a frame, propagate to every frame",
                         version="1.0")

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            raise ValueError("medvos reads cines from a local folder (--studies DIR)")
        return CineDatastore(self.studies)

    def init_infers(self) -> dict[str, Any]:
        return {"propagate": self.propagate}

    def init_trainers(self) -> dict[str, Any]:
        return {"relearn": RelearnTrain(self.model_dir, self.base_model, self.image_size, self.clip_length,
                                        self.tau_hidden, int(self.conf.get("max_epochs", 3)),
                                        self.conf.get("tracking_uri"))}

    def init_strategies(self) -> dict[str, Any]:
        return {"least_confident_frame": LeastConfidentFrame(self.propagate)}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Checked inference: the image is a datastore id; the annotation is the label uploaded with the request or
        the datastore's label under ``annotation_tag`` (default ``final``). Bad requests answer 4xx."""
        ds = datastore or self.datastore()
        model = request.get("model")
        task = self._infers.get(model)
        if task is None:
            raise RequestError(404, f"unknown model {model!r} (available: {sorted(self._infers)})")
        image_id = request.get("image")
        if not isinstance(image_id, str) or not image_id or os.sep in image_id:
            raise RequestError(400, "give the cine as a datastore image id (upload new cines with PUT "
                                    "/datastore/image first)")
        image = ds.require_image(image_id)
        fusion = first_choice(request.get("fusion", task.fusion))
        if fusion not in FUSION_MODES:
            raise RequestError(400, f"fusion {fusion!r}: expected one of {FUSION_MODES}")
        frames = parse_frames(request.get("annotated_frames"))
        from_datastore = not request.get("label")
        try:
            if not from_datastore:
                annotation = str(uploaded_file(request["label"]))
            else:
                tag = check_name(request.get("annotation_tag", DefaultLabelTag.FINAL.value), "label tag")
                annotation, corrected = datastore_annotation(ds, image_id, tag)
                frames = frames or corrected
            result_file, params = task({"image": image, "annotation": annotation, "fusion": fusion,
                                        "annotated_frames": frames, "dicom_seg": request.get("output") == "dicom_seg"})
        except CineReadError as exc:
            which = "image" if Path(exc.path) == Path(image) else "label"
            raise RequestError(422, f"{which} of {image_id!r}: {exc.problem}") from exc
        except (CheckpointError, FileNotFoundError) as exc:
            raise RequestError(503, f"model not available: {exc}") from exc
        if from_datastore:  # remembered, so a corrected re-submission can be told apart from the propagation
            ds.save_label(image_id, result_file, PROPAGATED_TAG, {"annotated_frames": params["annotated_frames"],
                                                                  "source_sha1": file_sha1(annotation)})
        label_id = result_file
        if str(request.get("save_label", "false")).lower() == "true":
            tag = check_name(request.get("label_tag", DefaultLabelTag.ORIGINAL.value), "label tag")
            label_id = ds.save_label(image_id, result_file, tag, {"model": model, "params": params})
        out = {"label": label_id, "tag": DefaultLabelTag.ORIGINAL, "file": result_file, "params": params}
        if "dicom_seg" in params:
            out["dicom_seg"] = params["dicom_seg"]
        return out
