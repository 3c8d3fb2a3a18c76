#!/usr/bin/env python
"""CPU speed (with a per-stage profile) and streaming memory of propagation, plus a SAM2.1-tiny speed anchor.

    python scripts/speed_memory.py --checkpoint bundle/models/relearned.pt --image-size 256 --out bundle/eval/speed

- **speed**: a 256x256 cine propagated window by window (|B| = 8 frames per forward pass, support encoded once,
  inference mode); frames per second end to end, single path and with the `inferring` defaults (motion fusion:
  optical flow at the input size), and per stage (preprocessing, backbone, pseudo mask + fusion +
  neck, TAU, head, postprocessing). ``--channels-last`` / ``--threads`` change the execution settings.
- **memory**: peak resident memory of the ``inferring`` workflow's streaming path on a 100-frame and a 1000-frame
  256x256 cine, each in its own process, measured from after the model is loaded (Linux ``clear_refs`` resets the
  peak; VmHWM); their ratio. ``--memory-input frames`` (default): a PNG frame folder and a one-file mask folder in;
  PNG masks, overlay MP4 and CSV out. ``--memory-input dicom``: a JPEG-compressed multi-frame DICOM and a
  full-length 2D+t NIfTI label volume annotated on frame 0 in (what an ultrasound user and the MONAI Label app
  send); the NIfTI mask, PNG masks, overlay MP4 and CSV out.
- **SAM2.1-tiny** (``--sam2``): the ``sam2`` package's video predictor (random weights; speed only) on the same
  frames, as a peer anchor.

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
from medvos.inference.evaluation import machine_info
from medvos.io.atomic import atomic_write_bytes
from medvos.io.writers import write_png_frames


def load_network(args: argparse.Namespace) -> torch.nn.Module:
    from medvos.networks.checkpoint import load_model
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.relearn_model import RelearnNet

    if args.checkpoint:  # rebuilt from the file alone (its spec); older files: --window/--tau-hidden
        net = load_model(args.checkpoint, None, args.window, args.tau_hidden)
    else:
        net = RelearnNet(FewShotSegNet(backbone_weights=None), args.window, args.tau_hidden)
    net = net.eval()
    return net.to(memory_format=torch.channels_last) if args.channels_last else net


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

    torch.set_num_threads(args.threads)
    net = load_network(args)
    frames_u8, labels = test_cine(args.speed_frames, args.image_size)
    frames = torch.from_numpy(frames_u8.astype(np.float32) / 255.0)
    prop = FewShotPropagator(net, args.image_size, args.window)
    cl = (lambda x: x.contiguous(memory_format=torch.channels_last)) if args.channels_last else (lambda x: x)
    with torch.inference_mode():
        sup = prop.supports({0: (frames[0], torch.from_numpy(labels[0]))})[0].encoding
        prop.propagate(frames[: 2 * args.window], torch.from_numpy(labels[: 2 * args.window]), [0])  # warm-up
        t0 = time.perf_counter()
        prop.propagate(frames, torch.from_numpy(labels), [0])
        e2e = time.perf_counter() - t0
        default = make_propagator(net, args.image_size, args.window)  # the inferring defaults (motion fusion ...)
        default.propagate(frames[: 2 * args.window], torch.from_numpy(labels[: 2 * args.window]), [0])
        t0 = time.perf_counter()
        default.propagate(frames, torch.from_numpy(labels), [0])
        e2e_default = time.perf_counter() - t0
        stages = dict.fromkeys(["preprocess", "backbone", "pseudo mask + fusion + neck", "TAU", "head",
                                "postprocess"], 0.0)
        relearned = hasattr(net, "temporal")
        size = (args.image_size, args.image_size)
        for start in range(0, frames.shape[0], args.window):
            t = time.perf_counter()
            q = cl(F.interpolate(frames[start : start + args.window], size=size, mode="bilinear",
                                 align_corners=False, antialias=True))
            t1 = time.perf_counter()
            enc = net.encode_query(q)
            t2 = time.perf_counter()
            feats = net.condition(enc, sup)
            t3 = time.perf_counter()
            feats = net.temporal(feats) if relearned else feats
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
    return {"frames": n, "image_size": args.image_size, "window": args.window, "threads": args.threads,
            "channels_last": args.channels_last, "model": "relearned" if relearned else "phase 1",
            "fps_end_to_end": n / e2e, "fps_inferring_defaults": n / e2e_default,
            "inferring_defaults": {k: v for k, v in inference_defaults().items()},
            "stages_ms_per_frame": {k: 1000 * v / n for k, v in stages.items()},
            "stages_share": {k: v / total for k, v in stages.items()}, "fps_stages_sum": n / total}


def memory_child(args: argparse.Namespace) -> None:
    """Child process: the streaming inference path on the cine in ``--cine-dir``; prints its peak RSS (MB)."""
    from medvos.inference.workflow import run_inference

    torch.set_num_threads(args.threads)
    net = load_network(args)
    base = vm_kb("VmRSS") / 1024
    reset = reset_peak_rss()  # so the peak below is the inference's, not the model loading's
    dicom = args.memory_input == "dicom"
    video, annotation = (("cine.dcm", "annotation.nii.gz") if dicom else ("frames", "masks"))
    outputs = ("nifti", "png", "overlay", "csv") if dicom else ("png", "overlay", "csv")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_inference(str(args.cine_dir / video), str(args.cine_dir / annotation), Path(tmp), net, args.image_size,
                      args.window, outputs=outputs, keep_labels=False, progress=False)
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
    from medvos.io.writers import NiftiWriter, write_dicom_cine

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
                   "--window", str(args.window), "--tau-hidden", str(args.tau_hidden), "--threads", str(args.threads)]
            if args.checkpoint:
                cmd += ["--checkpoint", str(args.checkpoint)]
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
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--tau-hidden", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--speed-frames", type=int, default=96)
    ap.add_argument("--memory-lengths", default="100,1000")
    ap.add_argument("--memory-input", choices=("frames", "dicom"), default="frames",
                    help="frame folder + mask folder, or JPEG DICOM + full-length NIfTI labels (see above)")
    ap.add_argument("--skip", default="", help="comma-separated: speed, memory")
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
    if "speed" in res:
        sp = res["speed"]
        lines += [f"Propagation, {sp['model']} model, {sp['image_size']}x{sp['image_size']}, window {sp['window']}: "
                  f"**{sp['fps_end_to_end']:.1f} frames/s** end to end (network, single path); with the `inferring` "
                  f"defaults (motion {sp['inferring_defaults']['motion']}, memory tree "
                  f"{sp['inferring_defaults']['memory_tree']}): **{sp['fps_inferring_defaults']:.1f} frames/s**.", "",
                  "| stage | ms per frame | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {sp['stages_share'][k]:.0%} |" for k, v in sp["stages_ms_per_frame"].items()]
        lines.append("")
    if "memory" in res:
        lines += [f"Input: {res['memory'].get('input', 'frames')}.", "",
                  "| cine (256x256) | peak RSS during inference (MB) | RSS before inference (MB) | seconds |",
                  "|---|---|---|---|"]
        lines += [f"| {r['frames']} frames | {r['peak_rss_mb']:.0f} | {r['rss_before_inference_mb']:.0f} | "
                  f"{r['seconds']:.0f} |" for r in res["memory"]["runs"].values()]
        lines += ["", f"Peak-memory ratio longest/shortest: **{res['memory']['ratio']:.3f}**", ""]
    if "sam2.1_tiny" in res:
        s2 = res["sam2.1_tiny"]
        lines.append(f"SAM2.1-tiny video propagation (random weights, internal size {s2['input_size']}): "
                     f"{s2['fps']:.2f} frames/s over {s2['frames']} frames.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
