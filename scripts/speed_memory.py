#!/usr/bin/env python
"""CPU speed (with a per-stage profile) and streaming memory of propagation, plus a SAM2.1-tiny speed anchor.

    python scripts/speed_memory.py --checkpoint bundle/models/relearned.pt --image-size 256 --out bundle/eval/speed

- **speed**: a 256x256 cine propagated window by window (|B| = 8 frames per forward pass, support encoded once,
  inference mode); frames per second end to end, single path and with the `inferring` defaults (motion fusion:
  optical flow at the input size), each runtime (PyTorch, ONNX Runtime, OpenVINO fp32 and bf16), and per stage (preprocessing, backbone, pseudo mask + fusion +
  neck, TAU, head, postprocessing). ``--channels-last`` / ``--threads`` change the execution settings.
- **memory**: peak resident memory of the ``inferring`` workflow's streaming path (its defaults) on a 100-frame and a
  1000-frame (``--memory-lengths``) 256x256 cine, each in its own process, measured from after the model is loaded (Linux ``clear_refs`` resets the
  peak; VmHWM); their ratio. ``--memory-input frames`` (default): a PNG frame folder and a one-file mask folder in;
  PNG masks, overlay MP4 and CSV out. ``--memory-input dicom``: a JPEG-compressed multi-frame DICOM and a
  full-length 2D+t NIfTI label volume annotated on frame 0 in (what an ultrasound user and the MONAI Label app
  send); the NIfTI mask, PNG masks, overlay MP4 and CSV out.
- **end to end** (``--cine FILE``): a real cine through the ``inferring`` command with every default output: seconds
  after start-up, the start-up itself, and the per-stage seconds of the pipeline (first call and warm).
- **propagation** (``--propagation-repeats N``): the predictor with every default on ``--cine`` or the speed cine,
  its tunings run once and reused, so N runs time the propagation alone (median, range, cores, the masks' sha256);
  ``scripts/speed_ab.py`` alternates it between two source trees.
- **SAM2.1-tiny** (``--sam2``): the ``sam2`` package's video predictor (random weights; speed only) on the same
  frames, as a peer anchor.

``--option KEY=VALUE`` (repeatable) gives the timed predictor an `inferring` option instead of ``inference.yaml``'s
(every part that runs the predictor: its speed row, propagation, memory, end to end; and the one-tuning row, which
takes its tuning and propagation options).

Without ``--checkpoint`` a randomly initialised relearned model is timed (speed does not depend on the weights).
Writes ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medvos.data.synthetic import endo_cine
from medvos.benchmarking.evaluation import machine_info
from medvos.io.atomic import atomic_write_bytes
from medvos.io.writers import write_png_frames


def load_network(args: argparse.Namespace) -> torch.nn.Module:
    from medvos.networks.checkpoint import load_model
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.relearn_model import RelearnNet

    if args.checkpoint:  # rebuilt from the file alone (its spec); older files: --clip-length/--tau-hidden
        net = load_model(args.checkpoint, None, args.clip_length, args.tau_hidden)
    else:  # seeded: two processes (two versions: scripts/speed_ab.py) time the same network
        torch.manual_seed(0)
        net = RelearnNet.from_sizes(FewShotSegNet.from_sizes(backbone_weights=None), args.clip_length)  # default TAU
    net = net.eval()
    return net.to(memory_format=torch.channels_last) if args.channels_last else net


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs: `inferring` options (``inference.yaml``'s) the timed predictor takes instead of
    the defaults (values read as YAML)."""
    import yaml

    from medvos.inference.defaults import OPTIONS

    out = {}
    for pair in args.option:
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"--option {pair!r}: expected KEY=VALUE, KEY an inference option: {', '.join(OPTIONS)}")
        out[key] = yaml.safe_load(value)
    return out


def centred_box(h: int, w: int) -> np.ndarray:
    """A timing-only annotation: the middle third of an ``h x w`` frame."""
    box = np.zeros((h, w), np.uint8)
    box[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 1
    return box


def ping_pong(frames: int, clip: int = 40) -> np.ndarray:
    """Indices that play a ``clip``-frame clip back and forth for ``frames`` frames."""
    return np.abs((np.arange(frames) + clip - 1) % (2 * clip - 2) - (clip - 1))


def test_cine(frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``frames``-long 256x256 cine (a 40-frame synthetic endoscopy clip played back and forth)."""
    c = endo_cine(seed=11, size=size, num_frames=40)
    idx = ping_pong(frames)
    return c.frames[idx], c.labels[idx]


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end and per-stage frames per second on a 256x256 cine."""
    from medvos.inference.defaults import inference_defaults, make_propagator
    from medvos.inference.propagator import FewShotPropagator, frame_confidence

    from medvos.networks.exported import RUNTIMES, for_runtime

    torch.set_num_threads(args.threads)
    net = load_network(args)
    frames_u8, labels = test_cine(args.speed_frames, args.image_size)
    frames = torch.from_numpy(frames_u8.astype(np.float32) / 255.0)
    cl = (lambda x: x.contiguous(memory_format=torch.channels_last)) if args.channels_last else (lambda x: x)
    fps_runtime = {}
    with torch.inference_mode():
        for runtime in RUNTIMES:  # network propagation (single path) in each runtime
            t0 = time.perf_counter()
            prop = FewShotPropagator(for_runtime(net, runtime, args.image_size, args.clip_length), args.image_size,
                                     args.clip_length)
            setup = time.perf_counter() - t0  # ONNX: the export (first run of a model) or the cached graphs' load
            warm = 2 * args.clip_length
            prop.propagate(frames[:warm], torch.from_numpy(labels[:warm]), [0])  # warm-up
            t0 = time.perf_counter()
            prop.propagate(frames, torch.from_numpy(labels), [0])
            fps_runtime[runtime] = {"fps": frames.shape[0] / (time.perf_counter() - t0), "setup_seconds": setup}
        e2e = frames.shape[0] / fps_runtime["torch"]["fps"]
        prop = FewShotPropagator(net, args.image_size, args.clip_length)
        sup = prop.supports({0: (frames[0], torch.from_numpy(labels[0]))})[0].encoding
        default = make_propagator(net, args.image_size, args.clip_length)  # the inferring defaults (motion fusion ...)
        default.propagate(frames[: 2 * args.clip_length], torch.from_numpy(labels[: 2 * args.clip_length]), [0])
        t0 = time.perf_counter()
        default.propagate(frames, torch.from_numpy(labels), [0])
        e2e_default = time.perf_counter() - t0
        tuned = tuned_speed(net, frames, labels, args) if not hasattr(net, "tau") else None
        predictor = predictor_speed(net, frames_u8, labels, args)
        stages = dict.fromkeys(["preprocess", "backbone", "pseudo mask + fusion + neck", "TAU", "head",
                                "postprocess"], 0.0)
        relearned = hasattr(net, "tau")
        size = (args.image_size, args.image_size)
        for start in range(0, frames.shape[0], args.clip_length):
            t = time.perf_counter()
            q = cl(F.interpolate(frames[start : start + args.clip_length], size=size, mode="bilinear",
                                 align_corners=False, antialias=True))
            t1 = time.perf_counter()
            enc = net.encode_query(q)
            t2 = time.perf_counter()
            feats = net.encoded_neck_features(enc, sup)
            t3 = time.perf_counter()
            feats = net.temporal(feats)  # the identity in a phase-1 model
            t4 = time.perf_counter()
            logits = net.decode(feats, size)
            t5 = time.perf_counter()
            p = torch.softmax(logits, 1)[:, 1]
            lab = (p > 0.5).to(torch.uint8).numpy()
            frame_confidence(p).numpy()
            t6 = time.perf_counter()
            for k, (a, b) in zip(stages, [(t, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]):
                stages[k] += b - a
            del lab
    n = frames.shape[0]
    total = sum(stages.values())
    return {"frames": n, "image_size": args.image_size, "clip_length": args.clip_length, "threads": args.threads,
            "channels_last": args.channels_last, "model": "relearned" if relearned else "phase 1",
            "fps_end_to_end": n / e2e, "fps_by_runtime": fps_runtime, "fps_inferring_defaults": n / e2e_default,
            "inferring_defaults_with_tuning": tuned, "inferring_predictor": predictor,
            "inferring_defaults": {k: v for k, v in inference_defaults().items()},
            "stages_ms_per_frame": {k: 1000 * v / n for k, v in stages.items()},
            "stages_share": {k: v / total for k, v in stages.items()}, "fps_stages_sum": n / total}


def tuned_speed(net: torch.nn.Module, frames: torch.Tensor, labels: np.ndarray, args: argparse.Namespace
                ) -> dict[str, Any]:
    """The `inferring` defaults with test-time tuning on: the seconds the tuning takes on the first frame, and the
    propagation's frames per second afterwards with the tuned copy as the predictor runs it (its memory layout, the
    tuned motion settings, the runtime :func:`medvos.networks.exported.for_tuned` gives a network tuned on a cine of
    this length: sharing the untuned network's exported query graph where the backbone stayed frozen). ``--option``'s
    tuning and propagation options apply."""
    from medvos.inference.tuning import AnnotationTuning
    from medvos.inference.defaults import KEYS, inference_defaults, make_propagator, tuning_options
    from medvos.networks.exported import OnnxNetwork, SharedQueryNetwork, for_runtime, for_tuned

    tune_opts, options = tuning_options(predictor_options(args))
    options = {k: v for k, v in options.items() if k in KEYS}  # the propagation's (not self-annotation's)
    tuning = AnnotationTuning(**tune_opts)
    size = (args.image_size, args.image_size)
    first = F.interpolate(frames[:1], size=size, mode="area")
    mask = F.interpolate(torch.from_numpy(labels[:1, None]).float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
    t0 = time.perf_counter()
    tuned = tuning(net, first, mask)
    seconds = time.perf_counter() - t0
    runtime = str({**inference_defaults(), **options}["runtime"])
    base = for_runtime(net, runtime, args.image_size, args.clip_length)
    tuned = for_tuned(tuned, base, runtime, args.image_size, args.clip_length, frames.shape[0])
    ran = ("torch + " + runtime + " query graph" if isinstance(tuned, SharedQueryNetwork)
           else runtime if isinstance(tuned, OnnxNetwork) else "torch")
    prop = make_propagator(tuned, args.image_size, args.clip_length, tuned=True, prepared=True, **options)
    warm = 2 * args.clip_length
    prop.propagate(frames[:warm], torch.from_numpy(labels[:warm]), [0])
    t0 = time.perf_counter()
    prop.propagate(frames, torch.from_numpy(labels), [0])
    return {"tune_steps": tuning.steps, "tune_precision": tuning.precision, "tuning_seconds": seconds, "runtime": ran,
            "fps_propagation": frames.shape[0] / (time.perf_counter() - t0)}


def predictor_speed(net: torch.nn.Module, frames: np.ndarray, labels: np.ndarray, args: argparse.Namespace,
                    repeats: int = 3) -> dict[str, Any]:
    """The `inferring` predictor with every default (test-time tuning, self-annotation's two passes) on the cine
    annotated on frame 0, warm (a first call before them), ``repeats`` times: per run the seconds in all, the
    tunings' share and the cine's frames per second of propagation (every pass, the tunings apart); the median run's
    figures, the range of the propagation's frames per second, the passes that ran and what the second reused."""
    from medvos.inference.predictor import VideoPredictor
    from medvos.io.cine import Cine

    pred = VideoPredictor.with_defaults(net, args.image_size, args.clip_length, **predictor_options(args))
    cine = Cine(frames.astype(np.float32), source="speed test cine", format="frames")
    n, runs = frames.shape[0], []
    for k in range(1 + repeats):  # the first call exports and caches; the others are timed
        state = pred.init_state(cine)
        pred.add_annotation(state, 0, labels[0])
        stats: dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in pred.propagate(state, stats=stats):
            pass
        total = time.perf_counter() - t0
        tuning = stats.get("test-time tuning", 0.0)
        if k:
            runs.append({"seconds": total, "tuning_seconds": tuning, "fps_propagation": n / (total - tuning),
                         "fps_overall": n / total})
    median = sorted(runs, key=lambda r: r["fps_propagation"])[len(runs) // 2]
    reuse = state.reuse  # what the second pass took from the first (flows, query encodings)
    return {"self_annotate": pred.self_annotate, "passes": 1 + ("self-annotation pass" in stats), **median,
            "fps_propagation_range": [min(r["fps_propagation"] for r in runs),
                                      max(r["fps_propagation"] for r in runs)], "runs": runs,
            "reused": None if reuse is None else {"results": len(reuse), "hits": reuse.hits,
                                                  "megabytes": reuse.used / 2**20}}


def propagation_speed(args: argparse.Namespace) -> dict[str, Any]:
    """The `inferring` predictor with every default, timed for its propagation alone, ``--propagation-repeats``
    times after a first call: each test-time tuning runs once, in the first call, and later runs reuse its tuned
    network (the same network, frames and labels give the same tuning), so the runs differ only in what a change to
    the propagation changes. The cine: ``--cine`` (annotated by ``--annotation``, else a centred box on frame 0) or
    the ``--speed-frames`` speed cine annotated on frame 0. Per run the frames per second over every pass and the
    process's CPU seconds over wall seconds (the cores in use); the median, the range, and the sha256 of the masks
    (runs, and two versions that should agree exactly, give the same digest)."""
    import hashlib
    from unittest import mock

    from medvos.inference.predictor import VideoPredictor
    from medvos.inference.tuning import AnnotationTuning
    from medvos.io import read_cine
    from medvos.io.cine import Cine

    torch.set_num_threads(args.threads)
    net = load_network(args)
    if args.cine:
        cine = read_cine(args.cine, lazy=True)
        source = str(args.cine)
    else:
        frames_u8, labels = test_cine(args.speed_frames, args.image_size)
        cine = Cine(frames_u8.astype(np.float32), source="speed test cine", format="frames")
        source = f"speed test cine ({args.speed_frames} frames)"
    pred = VideoPredictor.with_defaults(net, args.image_size, args.clip_length, **predictor_options(args))
    tune, tuned, calls = AnnotationTuning.__call__, {}, [0]

    def tune_once(tuning: Any, network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        calls[0] += 1
        key = (id(network), hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest())
        if key not in tuned:
            tuned[key] = tune(tuning, network, images, labels)
        return tuned[key]

    def annotate(state: Any) -> None:
        if args.cine and args.annotation:
            pred.add_annotations(state, args.annotation)
        elif args.cine:
            pred.add_annotation(state, 0, centred_box(*cine.size))
        else:
            pred.add_annotation(state, 0, labels[0])

    runs, digests, n = [], set(), cine.num_frames
    with mock.patch.object(AnnotationTuning, "__call__", tune_once):
        for k in range(1 + args.propagation_repeats):  # the first call tunes, exports and caches; not timed
            state = pred.init_state(cine)
            annotate(state)
            stats: dict[str, float] = {}
            digest = hashlib.sha256()
            t0, c0 = time.perf_counter(), time.process_time()
            for window in pred.propagate(state, stats=stats):
                digest.update(np.ascontiguousarray(window.labels).tobytes())
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            tuning = stats.get("test-time tuning", 0.0)  # the reused tunings' few milliseconds
            if k:
                runs.append({"fps_propagation": n / (wall - tuning), "cores": cpu / wall, "seconds": wall})
                digests.add(digest.hexdigest())
    median = sorted(runs, key=lambda r: r["fps_propagation"])[len(runs) // 2]
    return {"cine": source, "frames": n, "passes": 1 + ("self-annotation pass" in stats), **median,
            "fps_propagation_range": [min(r["fps_propagation"] for r in runs),
                                      max(r["fps_propagation"] for r in runs)], "runs": runs,
            "masks_sha256": sorted(digests), "tunings": {"asked": calls[0], "computed": len(tuned)}}


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """A real cine through the ``inferring`` command with every default output: the command's wall time, the
    pipeline's own seconds (from its log) and so the start-up (imports, model, graph compile), then the same
    pipeline in this process twice (first call and warm) with its per-stage seconds."""
    import re

    from medvos.inference.predictor import VideoPredictor
    from medvos.inference.workflow import run_inference
    from medvos.io import read_cine
    from medvos.io.writers import NiftiWriter

    repo = Path(__file__).resolve().parents[1]
    cine = read_cine(args.cine, lazy=True)
    out: dict[str, Any] = {"cine": str(args.cine), "frames": cine.num_frames, "size": list(cine.size)}
    with tempfile.TemporaryDirectory() as tmp:
        annotation = args.annotation
        if annotation is None:  # timing only: a centred box on frame 0
            h, w = cine.size
            annotation = Path(tmp) / "annotation.nii.gz"
            with NiftiWriter(annotation, cine.num_frames, (h, w)) as nw:
                nw.append(centred_box(h, w)[None])
                nw.append(np.zeros((cine.num_frames - 1, h, w), np.uint8))
        cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
               repr([str(repo / "bundle/configs/train.yaml"), str(repo / "bundle/configs/inference.yaml")]),
               "--video", str(args.cine), "--annotation", str(annotation), "--inference_dir", str(Path(tmp) / "out"),
               "--output_dir", str(Path(tmp) / "eval")] + (["--runtime", args.runtime] if args.runtime else [])
        for key, value in predictor_options(args).items():
            cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]  # (a Python literal to fire)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        found = re.search(r"frames in ([0-9.]+) s", proc.stderr + proc.stdout)
        pipeline = float(found.group(1)) if found else float("nan")
        out["command"] = {"wall_seconds": wall, "pipeline_seconds": pipeline, "startup_seconds": wall - pipeline}
        torch.set_num_threads(args.threads)
        net = load_network(args)
        options = {**predictor_options(args), **({"runtime": args.runtime} if args.runtime else {})}
        for run in ("first call", "warm"):
            pred = VideoPredictor.with_defaults(net, args.image_size, args.clip_length, **options)
            res = run_inference(str(args.cine), str(annotation), Path(tmp) / run.replace(" ", "_"), net,
                                args.image_size, args.clip_length, progress=False, keep_labels=False, predictor=pred)
            out[run] = res["timings"]
    return out


def memory_child(args: argparse.Namespace) -> None:
    """Child process: the streaming inference path on the cine in ``--cine-dir``; prints its peak RSS (MB)."""
    from medvos.inference.predictor import VideoPredictor
    from medvos.inference.workflow import run_inference

    torch.set_num_threads(args.threads)
    net = load_network(args)
    pred = VideoPredictor.with_defaults(net, args.image_size, args.clip_length,  # the inferring defaults, or
                                        **predictor_options(args))  # --option's
    base = vm_kb("VmRSS") / 1024
    reset = reset_peak_rss()  # so the peak below is the inference's, not the model loading's
    dicom = args.memory_input == "dicom"
    video, annotation = (("cine.dcm", "annotation.nii.gz") if dicom else ("frames", "masks"))
    outputs = ("nifti", "png", "overlay", "csv") if dicom else ("png", "overlay", "csv")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_inference(str(args.cine_dir / video), str(args.cine_dir / annotation), Path(tmp), net, args.image_size,
                      args.clip_length, outputs=outputs, keep_labels=False, progress=False, predictor=pred)
        dt = time.perf_counter() - t0
    peak = (vm_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    print(json.dumps({"peak_rss_mb": peak, "rss_before_inference_mb": base, "seconds": dt, "peak_reset": reset}))


def vm_kb(field: str) -> float:
    """A ``/proc/self/status`` memory field in kB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (VmHWM) on Linux; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def write_test_cine(folder: Path, frames: int, size: int, kind: str = "frames") -> None:
    """``frames``: a frame folder + first-frame mask folder, written frame by frame. ``dicom``: a JPEG-compressed
    multi-frame DICOM + a full-length NIfTI label volume with only frame 0 annotated (streamed out)."""
    from medvos.io.writers import NiftiWriter
    from medvos.data.synthetic_dicom import write_dicom_cine

    clip, labels = test_cine(40, size)
    order = ping_pong(frames)
    if kind == "dicom":
        write_dicom_cine(folder / "cine.dcm", clip[order], compression="jpeg")
        with NiftiWriter(folder / "annotation.nii.gz", frames, labels.shape[1:]) as w:
            w.append(labels[:1])
            w.append(np.zeros((frames - 1, *labels.shape[1:]), np.uint8))
        return
    for t, i in enumerate(order):
        write_png_frames(folder / "frames", clip[i : i + 1], names=[f"{t:05d}"])
    write_png_frames(folder / "masks", labels[:1], names=["00000"])


def memory(args: argparse.Namespace, lengths: list[int]) -> dict[str, Any]:
    """Peak RSS of the streaming path per cine length, each in a fresh process; ratio longest / shortest."""
    out = {}
    for n in lengths:
        with tempfile.TemporaryDirectory() as tmp:
            write_test_cine(Path(tmp), n, args.image_size, args.memory_input)
            cmd = [sys.executable, __file__, "--memory-child", "--cine-dir", tmp, "--memory-input", args.memory_input,
                   "--image-size", str(args.image_size),
                   "--clip-length", str(args.clip_length), "--threads", str(args.threads)]
            if args.tau_hidden is not None:  # (None: the checkpoint's own, or the default TAU)
                cmd += ["--tau-hidden", str(args.tau_hidden)]
            if args.checkpoint:
                cmd += ["--checkpoint", str(args.checkpoint)]
            for pair in args.option:
                cmd += ["--option", pair]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        out[str(n)] = {"frames": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
    a, b = out[str(lengths[0])]["peak_rss_mb"], out[str(lengths[-1])]["peak_rss_mb"]
    return {"input": args.memory_input, "runs": out, "ratio": b / a}


def sam2_speed(args: argparse.Namespace, frames: int = 8) -> dict[str, Any]:
    """SAM2.1-tiny video propagation (random weights) on the same 256x256 frames: seconds per frame."""
    import sam2
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    torch.set_num_threads(args.threads)
    cfg_dir = str(Path(sam2.__file__).parent / "configs" / "sam2.1")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=cfg_dir, version_base=None):
        cfg = compose(config_name="sam2.1_hiera_t.yaml",
                      overrides=["++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor"])
    predictor = instantiate(cfg.model, _recursive_=True).eval()
    video, labels = test_cine(frames, args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        from medvos.io.writers import write_png

        for t, f in enumerate(video):
            write_png(Path(tmp) / f"{t:05d}.jpg", np.moveaxis(f, 0, -1))
        with torch.inference_mode():
            state = predictor.init_state(video_path=tmp, offload_video_to_cpu=True)
            predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=torch.from_numpy(labels[0] > 0))
            t0 = time.perf_counter()
            n = sum(1 for _ in predictor.propagate_in_video(state))
            dt = time.perf_counter() - t0
    return {"frames": n, "seconds": dt, "fps": n / dt, "input_size": predictor.image_size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--clip-length", type=int, default=8)
    ap.add_argument("--tau-hidden", type=int, default=None, help="older relearned files without a spec only")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--speed-frames", type=int, default=96)
    ap.add_argument("--memory-lengths", default="100,1000")
    ap.add_argument("--memory-input", choices=("frames", "dicom"), default="frames",
                    help="frame folder + mask folder, or JPEG DICOM + full-length NIfTI labels (see above)")
    ap.add_argument("--skip", default="", help="comma-separated: speed, memory, end-to-end")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an inferring option for the timed predictor instead of inference.yaml's (repeatable)")
    ap.add_argument("--propagation-repeats", type=int, default=0,
                    help="also time the predictor's propagation alone (tunings reused) this many times, on --cine "
                         "or the speed cine")
    ap.add_argument("--cine", type=Path, help="also time this real cine through `inferring` end to end")
    ap.add_argument("--annotation", type=Path, help="its annotation (default: a centred box on frame 0)")
    ap.add_argument("--runtime", default=None, help="runtime for --cine (default: inference.yaml's)")
    ap.add_argument("--sam2", action="store_true", help="also time SAM2.1-tiny (random weights)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cine-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return {}
    skip = {s.strip() for s in args.skip.split(",")}
    res: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items() if k not in ("memory_child",
                                                                                               "cine_dir")}}
    res["machine"] = machine_info()
    if "speed" not in skip:
        res["speed"] = speed(args)
        print(json.dumps(res["speed"], indent=1), flush=True)
    if "memory" not in skip:
        res["memory"] = memory(args, [int(n) for n in args.memory_lengths.split(",")])
        print(json.dumps(res["memory"], indent=1), flush=True)
    if args.propagation_repeats > 0:
        res["propagation"] = propagation_speed(args)
        print(json.dumps(res["propagation"], indent=1), flush=True)
    if args.cine and "end-to-end" not in skip:
        res["end_to_end"] = end_to_end(args)
        print(json.dumps(res["end_to_end"], indent=1), flush=True)
    if args.sam2:
        res["sam2.1_tiny"] = sam2_speed(args)
        print(json.dumps(res["sam2.1_tiny"], indent=1), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "results.json", json.dumps(res, indent=1).encode())
        atomic_write_bytes(args.out / "table.md", (markdown(res) + "\n").encode())
    print(markdown(res))
    return res


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, GPU: {m['gpu']}.", ""]
    given = res["settings"].get("option", "[]")
    if given != "[]":
        lines += [f"The predictor's options instead of the defaults: {given}.", ""]
    if "speed" in res:
        sp = res["speed"]
        by = sp.get("fps_by_runtime", {})
        lines += [f"Propagation, {sp['model']} model, {sp['image_size']}x{sp['image_size']}, clip length {sp['clip_length']}: "
                  f"**{sp['fps_end_to_end']:.1f} frames/s** end to end (network, single path, PyTorch)"
                  + "".join(f"; {r}: **{v['fps']:.1f} frames/s** (set-up {v['setup_seconds']:.1f} s)"
                            for r, v in by.items() if r != "torch")
                  + f"; with the `inferring` defaults (motion {sp['inferring_defaults']['motion']}, memory tree "
                  f"{sp['inferring_defaults']['memory_tree']}, runtime {sp['inferring_defaults'].get('runtime')}): "
                  f"**{sp['fps_inferring_defaults']:.1f} frames/s**.", ""]
        pr = sp.get("inferring_predictor")
        if pr:
            lines += [f"The `inferring` predictor, every default ({pr['passes']} pass(es), self_annotate "
                      f"{pr['self_annotate']}; median of {len(pr['runs'])} runs): **{pr['fps_propagation']:.1f} "
                      f"frames/s** of propagation over all passes ({pr['fps_propagation_range'][0]:.1f}-"
                      f"{pr['fps_propagation_range'][1]:.1f}), {pr['fps_overall']:.1f} frames/s overall ({pr['seconds']:.1f} s, of which test-time "
                      f"tuning {pr['tuning_seconds']:.1f} s).", ""]
        lines += ["| stage | ms per frame | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {sp['stages_share'][k]:.0%} |" for k, v in sp["stages_ms_per_frame"].items()]
        lines.append("")
    if "memory" in res:
        lines += [f"Input: {res['memory'].get('input', 'frames')}.", "",
                  "| cine (256x256) | peak RSS during inference (MB) | RSS before inference (MB) | seconds |",
                  "|---|---|---|---|"]
        lines += [f"| {r['frames']} frames | {r['peak_rss_mb']:.0f} | {r['rss_before_inference_mb']:.0f} | "
                  f"{r['seconds']:.0f} |" for r in res["memory"]["runs"].values()]
        lines += ["", f"Peak-memory ratio longest/shortest: **{res['memory']['ratio']:.3f}**", ""]
    if "propagation" in res:
        pg = res["propagation"]
        lines += [f"The `inferring` predictor's propagation alone on the {pg['cine']} ({pg['frames']} frames, "
                  f"{pg['passes']} pass(es), tunings reused; median of {len(pg['runs'])} runs): "
                  f"**{pg['fps_propagation']:.1f} frames/s** ({pg['fps_propagation_range'][0]:.1f}-"
                  f"{pg['fps_propagation_range'][1]:.1f}), {pg['cores']:.2f} cores in use; masks sha256 "
                  + ", ".join(d[:12] for d in pg["masks_sha256"]) + ".", ""]
    if "end_to_end" in res:
        e = res["end_to_end"]
        c = e["command"]
        lines += [f"`inferring` on {Path(e['cine']).name} ({e['frames']} frames, {e['size'][0]}x{e['size'][1]}, every "
                  f"default output): **{c['pipeline_seconds']:.2f} s** after start-up "
                  f"({e['frames'] / c['pipeline_seconds']:.1f} frames/s); the command {c['wall_seconds']:.1f} s in all, "
                  f"start-up {c['startup_seconds']:.1f} s.", "", "| stage (s) | first call | warm |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {e['warm'].get(k, float('nan')):.2f} |" for k, v in e["first call"].items()]
        lines.append("")
    if "sam2.1_tiny" in res:
        s2 = res["sam2.1_tiny"]
        lines.append(f"SAM2.1-tiny video propagation (random weights, internal size {s2['input_size']}): "
                     f"{s2['fps']:.2f} frames/s over {s2['frames']} frames.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
