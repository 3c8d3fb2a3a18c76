"""DICOM cines: a multi-frame file (any transfer syntax pydicom decodes, JPEG colour ultrasound included) or a
series of single-frame files, read whole or window by window."""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.cine import Cine
from medvos.io.errors import CineReadError
from medvos.io.formats import PathLike, natural_key
from medvos.io.frames import LazyFrames, check_size, to_tchw


def _dicom_geometry(ds: Any) -> dict[str, Any]:
    spacing = (1.0, 1.0)
    if "PixelSpacing" in ds:
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    elif "ImagerPixelSpacing" in ds:
        spacing = (float(ds.ImagerPixelSpacing[0]), float(ds.ImagerPixelSpacing[1]))
    elif "SequenceOfUltrasoundRegions" in ds and len(ds.SequenceOfUltrasoundRegions):
        reg = ds.SequenceOfUltrasoundRegions[0]
        # Physical units 3 = cm: convert to mm.
        scale = 10.0 if int(reg.get("PhysicalUnitsXDirection", 3)) == 3 else 1.0
        if "PhysicalDeltaX" in reg and "PhysicalDeltaY" in reg:
            spacing = (abs(float(reg.PhysicalDeltaY)) * scale, abs(float(reg.PhysicalDeltaX)) * scale)
    frame_time = None
    if "FrameTime" in ds and ds.FrameTime:
        frame_time = float(ds.FrameTime)
    elif "FrameTimeVector" in ds and len(ds.FrameTimeVector) > 1:
        frame_time = float(np.mean([float(v) for v in ds.FrameTimeVector[1:]]))
    elif "CineRate" in ds and ds.CineRate:
        frame_time = 1000.0 / float(ds.CineRate)
    elif "RecommendedDisplayFrameRate" in ds and ds.RecommendedDisplayFrameRate:
        frame_time = 1000.0 / float(ds.RecommendedDisplayFrameRate)
    origin = (0.0, 0.0, 0.0)
    if "ImagePositionPatient" in ds:
        origin = tuple(float(v) for v in ds.ImagePositionPatient)  # type: ignore[assignment]
    direction = np.eye(3)
    if "ImageOrientationPatient" in ds:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        row, col = np.array(iop[:3]), np.array(iop[3:])
        direction = np.stack([row, col, np.cross(row, col)], axis=1)
    return {"spacing": spacing, "frame_time_ms": frame_time, "origin": origin, "direction": direction}


# Transfer syntaxes whose colour frames are decoded without any colour transform (libjpeg), so that the colour
# space is decided here from the DICOM header and the JPEG markers, as dcmtk does.
_JPEG_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70")
_STORED_YCBCR = ("YBR_FULL", "YBR_FULL_422")  # pixels are stored YCbCr; YBR_RCT/ICT are undone by the J2K decoder


def _jpeg_markers(frame: bytes) -> tuple[bool, int | None]:
    """``(JFIF APP0 present, Adobe APP14 transform flag or None)`` of a JPEG stream."""
    head = frame[: 64 * 1024]
    adobe, at = None, head.find(b"\xff\xee")
    while at >= 0 and adobe is None:
        if head[at + 4: at + 9] == b"Adobe" and len(head) > at + 15:
            adobe = head[at + 15]
        at = head.find(b"\xff\xee", at + 2)
    jfif = head.find(b"\xff\xe0") >= 0 and b"JFIF\0" in head[:256]
    return jfif, adobe


def jpeg_stores_ycbcr(frame: bytes, photometric: str) -> bool:
    """Whether a colour JPEG frame's components are YCbCr: a JFIF APP0 marker says so, an Adobe APP14 marker's
    transform flag decides, else the Photometric Interpretation does (DICOM PS3.5 8.2.1: RGB means the encoder
    applied no colour transform; dcmtk decodes it so)."""
    return _stores_ycbcr(*_jpeg_markers(frame), photometric)


def _stores_ycbcr(jfif: bool, adobe: int | None, photometric: str) -> bool:
    if jfif or adobe is not None:
        return jfif or adobe != 0
    return photometric in _STORED_YCBCR


def _jpeg_rgb(frame: bytes, photometric: str) -> np.ndarray:
    """One 8-bit colour JPEG frame as RGB ``(H,W,3)``: Pillow (libjpeg-turbo) decodes; where its own colour-space
    guess (markers, else component ids 'R','G','B' mean RGB) differs from :func:`jpeg_stores_ycbcr`, the raw
    components are taken and converted here."""
    import io

    from PIL import Image
    from pydicom.pixel_data_handlers.util import convert_color_space

    jfif, adobe = _jpeg_markers(frame)
    stored = _stores_ycbcr(jfif, adobe, photometric)
    im = Image.open(io.BytesIO(frame))
    rgb_ids = [layer[0] for layer in getattr(im, "layer", [])] in ([82, 71, 66], ["R", "G", "B"])
    guess = jfif or adobe != 0 if (jfif or adobe is not None) else not rgb_ids
    if stored == guess:
        return np.asarray(im.convert("RGB"))
    im.draft("YCbCr", im.size)  # no conversion: the stored components as they are
    arr = np.asarray(im)
    return convert_color_space(arr, "YBR_FULL", "RGB") if stored else arr


def _jpeg_colour_frames(ds: Any, nframes: int, path: PathLike) -> np.ndarray:
    """Colour JPEG frames ``(T,H,W,3)`` in RGB, the colour space decided by :func:`jpeg_stores_ycbcr` (8-bit through
    Pillow; 12/16-bit through libjpeg with no transform)."""
    from pydicom.encaps import generate_pixel_data_frame
    from pydicom.pixel_data_handlers.util import convert_color_space

    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    eight_bit = int(ds.get("BitsAllocated", 8) or 8) == 8
    out = []
    for frame in generate_pixel_data_frame(ds.PixelData, nframes):
        try:
            if eight_bit:
                arr = _jpeg_rgb(frame, pi)
            else:
                from libjpeg import decode

                arr = decode(frame, colour_transform=0)
                arr = convert_color_space(arr, "YBR_FULL", "RGB") if jpeg_stores_ycbcr(frame, pi) else arr
        except Exception as exc:
            raise CineReadError(path, f"cannot decode a JPEG frame ({type(exc).__name__}: {exc})") from exc
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise CineReadError(path, f"a JPEG frame decodes to shape {arr.shape}, not 3-sample colour")
        out.append(arr)
    return np.stack(out)


def _palette_to_rgb(arr: np.ndarray, ds: Any) -> np.ndarray:
    """PALETTE COLOR indices -> RGB through the file's lookup tables (segmented ones too), 16-bit entries to 8 bits."""
    from pydicom.pixel_data_handlers.util import apply_color_lut

    rgb = apply_color_lut(arr, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    return np.rint(rgb.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8) if bits == 16 else rgb


def _dicom_pixels(ds: Any, path: PathLike) -> np.ndarray:
    """Decoded pixels of a dataset (all its frames) in RGB (colour) or grey, shape ``(T,H,W[,C])``.

    Colour follows the Photometric Interpretation and transfer syntax: YBR_FULL(_422) stored pixels are converted
    to RGB once; JPEG 2000's YBR_RCT/YBR_ICT are already undone by its decoder; colour JPEG is decoded untransformed
    and converted only where the stream holds YCbCr; PALETTE COLOR goes through its lookup tables.
    """
    if "PixelData" not in ds:
        raise CineReadError(path, "DICOM file has no pixel data")
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols, spp = _dicom_frame_shape(ds, path)
    check_size(path, (nframes, rows, cols, spp))
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    ts = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    if spp == 3 and ts in _JPEG_SYNTAXES:
        return _jpeg_colour_frames(ds, nframes, path)
    try:
        arr = ds.pixel_array
        if pi == "PALETTE COLOR":
            arr = _palette_to_rgb(arr, ds)
    except Exception as exc:  # pydicom raises many types for corrupt/truncated pixel data
        raise CineReadError(path, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    if spp == 3 and pi in _STORED_YCBCR:
        # pydicom 2 returns the stored YCbCr values (4:2:2 native data upsampled); pydicom 3 converts by default.
        import pydicom

        if int(pydicom.__version__.split(".")[0]) < 3:
            from pydicom.pixel_data_handlers.util import convert_color_space

            arr = convert_color_space(arr, "YBR_FULL", "RGB", per_frame=arr.ndim == 4)
    if pi == "MONOCHROME1":  # inverted relative to the stored range, so every window of a cine inverts alike
        bits = int(ds.get("BitsStored", 8) or 8)
        arr = (-1 - arr.astype(np.int64)) if int(ds.get("PixelRepresentation", 0)) else ((1 << bits) - 1) - arr
    if nframes == 1:
        arr = arr[None]
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if spp == 1 and pi != "PALETTE COLOR" and (slope != 1.0 or intercept != 0.0):
        arr = arr.astype(np.float32) * slope + intercept
    return arr


def _read_dicom_dataset(path: Path, **kwargs: Any) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), **kwargs)
    except Exception as exc:
        raise CineReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _dicom_frame_shape(ds: Any, path: PathLike) -> tuple[int, int, int]:
    """``(rows, columns, samples per pixel)`` from a header, refusing empty or implausible sizes."""
    rows, cols, spp = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), int(ds.get("SamplesPerPixel", 1))
    if rows <= 0 or cols <= 0:
        raise CineReadError(path, f"DICOM declares an empty image ({rows}x{cols})")
    check_size(path, (rows, cols, spp))
    return rows, cols, spp


def _transfer_syntax(path: Path) -> Any:
    """The file's Transfer Syntax UID from its meta header alone (None when it has none or is unreadable: the full
    read then says why)."""
    from pydicom.filereader import read_file_meta_info

    try:
        return read_file_meta_info(str(path)).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - reported by the full read
        return None


def _encapsulated_index(path: Path) -> tuple[Any, list[list[tuple[int, int]]]] | None:
    """The header and, per frame, the file spans ``(offset, length)`` of its encapsulated fragments, found by walking
    the item headers after the header (no pixel bytes are read), so a long compressed cine is never held in memory.
    None when frames cannot be told apart without reading the data (several fragments per frame, no offset
    table) or the layout is not the usual explicit little-endian one."""
    import struct

    import pydicom

    size = path.stat().st_size
    with open(path, "rb") as fh:
        try:
            header = pydicom.dcmread(fh, stop_before_pixels=True)
        except Exception as exc:
            raise CineReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
        nframes = int(header.get("NumberOfFrames", 1) or 1)
        lead = fh.read(12)
        if len(lead) < 12 or lead[:4] != b"\xe0\x7f\x10\x00" or lead[4:6] not in (b"OB", b"OW") or \
                lead[8:12] != b"\xff\xff\xff\xff":
            return None
        fragments, table, first = [], None, True
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise CineReadError(path, "encapsulated pixel data ends before its sequence delimiter "
                                    "(truncated file?)")
            group, element, length = struct.unpack("<HHI", head)
            if (group, element) == (0xFFFE, 0xE0DD):
                break
            if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                return None
            start = fh.tell()
            if start + length > size:
                raise CineReadError(path, f"a pixel data fragment runs {start + length - size} bytes past the end of "
                                    "the file (truncated file?)")
            if first:  # the first item is the Basic Offset Table (often empty)
                table, first = fh.read(length) or None, False
                continue
            fragments.append((start - 8, start, length))
            fh.seek(length, 1)
    if len(fragments) == nframes:
        return header, [[(data, length)] for _, data, length in fragments]
    if table and len(table) == 4 * nframes:  # frame k starts at its offset from the first fragment's item
        offsets = list(struct.unpack(f"<{nframes}I", table)) + [1 << 62]
        base = fragments[0][0] if fragments else 0
        frames = [[(d, n) for item, d, n in fragments if offsets[k] <= item - base < offsets[k + 1]]
                  for k in range(nframes)]
        return (header, frames) if all(frames) else None
    return None


class _DicomFileFrames:
    """Frames of one (multi-frame) DICOM file, decoded window by window by pydicom's own handlers.

    Native pixel data stays on disk: a window reads only its frames' bytes, at the element's file offset.
    Encapsulated (JPEG, RLE, ...) pixel data stays on disk too: its item headers are walked once (frame k's fragments
    and file offsets), and a window reads and decodes only its frames; layouts where frames cannot be told apart
    without the data are held compressed in memory instead. No decoded whole-cine array exists unless all frames are
    asked for, and memory does not grow with the number of frames.
    """

    def __init__(self, path: Path) -> None:
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        self.spans: list[list[tuple[int, int]]] | None = None
        ts = _transfer_syntax(path)
        if ts is not None and ts.is_compressed and ts != DeflatedExplicitVRLittleEndian:
            found = _encapsulated_index(path)
            if found is not None:  # compressed frames stay on disk: each window reads its fragments
                self.path, self.header, self.spans = path, found[0], found[1]
                self.rows, self.cols, self.spp = _dicom_frame_shape(self.header, path)
                self.num = len(self.spans)
                self.fragments = self.data = self.offset = None
                return
        ds = _read_dicom_dataset(path, defer_size="256 KB")
        ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if ts == DeflatedExplicitVRLittleEndian:  # offsets refer to the inflated stream: read it all
            ds = _read_dicom_dataset(path)
        if "PixelData" not in ds:
            raise CineReadError(path, "DICOM file has no pixel data")
        self.path = path
        self.rows, self.cols, self.spp = _dicom_frame_shape(ds, path)
        self.num = int(ds.get("NumberOfFrames", 1) or 1)
        if self.num <= 0:
            raise CineReadError(path, f"DICOM declares {self.num} frames")
        elem = ds.get_item("PixelData")
        self.fragments: list[bytes] | None = None
        self.offset: int | None = None
        self.data: bytes | None = None
        if ts is not None and ts.is_compressed:
            from pydicom.encaps import generate_pixel_data_frame

            try:
                self.fragments = list(generate_pixel_data_frame(ds.PixelData, self.num))
            except Exception as exc:
                raise CineReadError(path, f"cannot split the encapsulated pixel data into {self.num} frames "
                                    f"({type(exc).__name__}: {exc})") from exc
            if len(self.fragments) != self.num:
                raise CineReadError(path, f"declares {self.num} frames but its pixel data holds "
                                    f"{len(self.fragments)}")
        else:
            bits = int(ds.get("BitsAllocated", 8) or 8)
            if bits % 8:
                raise CineReadError(path, f"BitsAllocated {bits} is not supported for cines")
            pi = str(ds.get("PhotometricInterpretation", "")).upper()
            samples = 2 if pi == "YBR_FULL_422" and self.spp == 3 else self.spp  # 4:2:2: Y Y Cb Cr per 2 pixels
            self.frame_bytes = self.rows * self.cols * samples * bits // 8
            need = self.num * self.frame_bytes
            if getattr(elem, "value", None) is None and getattr(elem, "value_tell", None) is not None:
                self.offset, have = int(elem.value_tell), int(elem.length)  # deferred: still on disk
            else:
                self.data = bytes(ds.PixelData)
                have = len(self.data)
            if have < need:
                raise CineReadError(path, f"pixel data holds {have} bytes; {self.num} frames of {self.rows}x"
                                    f"{self.cols}x{samples} at {bits} bits need {need} (truncated file?)")
        del ds.PixelData
        self.header = ds

    def _pixel_dataset(self) -> Any:
        """A new dataset holding only what decoding reads: the Image Pixel module (group 0028: size, samples,
        photometric interpretation, bits, palette tables, rescale), the transfer syntax and byte order (a deep copy
        of the whole header per window cost more than decoding small frames)."""
        from pydicom.dataset import Dataset

        fds = Dataset()
        for elem in self.header.group_dataset(0x0028):
            fds.add(copy.copy(elem))  # own elements: setting NumberOfFrames below must not change the header
        fds.file_meta = self.header.file_meta
        fds.is_little_endian, fds.is_implicit_VR = self.header.is_little_endian, self.header.is_implicit_VR
        return fds

    def read(self, start: int, stop: int) -> np.ndarray:
        n = stop - start
        fds = self._pixel_dataset()
        fds.NumberOfFrames = n
        if self.spans is not None or self.fragments is not None:
            from pydicom.encaps import encapsulate

            if self.spans is not None:
                with open(self.path, "rb") as fh:
                    frames = []
                    for spans in self.spans[start:stop]:
                        parts = []
                        for offset, length in spans:
                            fh.seek(offset)
                            parts.append(fh.read(length))
                        frames.append(b"".join(parts))
            else:
                frames = self.fragments[start:stop]
            fds.PixelData = encapsulate(frames)
            fds["PixelData"].VR = "OB"
            fds["PixelData"].is_undefined_length = True
        elif self.data is not None:
            fds.PixelData = self.data[start * self.frame_bytes:stop * self.frame_bytes]
        else:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset + start * self.frame_bytes)  # type: ignore[operator]
                fds.PixelData = fh.read(n * self.frame_bytes)
        return to_tchw(_dicom_pixels(fds, self.path), self.path)


def _eight_bit(ds: Any) -> bool:
    """Whether decoded values are 0..255: 8 bits stored unsigned, no rescale, not inverted (palette: 8-bit tables)."""
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    if pi == "PALETTE COLOR":
        return int(ds.RedPaletteColorLookupTableDescriptor[2]) in (8, 16)  # 16-bit entries are scaled to 8 bits
    rescaled = float(ds.get("RescaleSlope", 1) or 1) != 1.0 or float(ds.get("RescaleIntercept", 0) or 0) != 0.0
    return (int(ds.get("BitsStored", 8) or 8) <= 8 and int(ds.get("PixelRepresentation", 0) or 0) == 0
            and not rescaled and pi != "MONOCHROME1")


def read_dicom_file(path: Path, lazy: bool = False) -> Cine:
    src = _DicomFileFrames(path)
    frames: Any = (LazyFrames((src.num, *src.read(0, 1).shape[1:]), src.read, eight_bit=_eight_bit(src.header))
                   if lazy else src.read(0, src.num))
    return Cine(frames=frames, source=str(path), format="dicom", meta={"dicom": src.header},
                **_dicom_geometry(src.header))


def read_dicom_series(files: list[Path], source: Path, lazy: bool = False) -> Cine:
    """A folder of single-frame DICOM files: headers order the frames; pixels are decoded when a window is read."""
    entries = []
    for f in files:
        ds = _read_dicom_dataset(f, stop_before_pixels=True)
        order = (
            int(ds.get("InstanceNumber", 0) or 0),
            str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or ""),
            natural_key(f.name),
        )
        entries.append((order, f, ds))
    series: dict[str, list[Path]] = {}
    for _, f, ds in entries:
        series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append(f)
    if len(series) > 1:  # frames of different series would interleave by instance number
        found = "; ".join(f"{uid or '(no SeriesInstanceUID)'}: {len(fs)} file(s), e.g. {fs[0].name}"
                          for uid, fs in sorted(series.items()))
        raise CineReadError(source, f"holds {len(series)} DICOM series ({found}); put one series per folder or "
                            "pass the files of one series")
    entries.sort(key=lambda e: e[0])
    first = entries[0][2]
    shape = _dicom_frame_shape(first, entries[0][1])
    for _, f, ds in entries[1:]:
        if _dicom_frame_shape(ds, f) != shape:
            raise CineReadError(f, f"frame size {_dicom_frame_shape(ds, f)} differs from the series' {shape}")
    ordered = [e[1] for e in entries]

    def read(start: int, stop: int) -> np.ndarray:
        # every header was checked against the series' frame size above; pixels are decoded to that size
        return to_tchw(np.concatenate([_dicom_pixels(_read_dicom_dataset(f), f) for f in ordered[start:stop]]), source)

    frames: Any = LazyFrames((len(ordered), *read(0, 1).shape[1:]), read) if lazy else read(0, len(ordered))
    geom = _dicom_geometry(first)
    if geom["frame_time_ms"] is None and len(entries) > 1:
        geom["frame_time_ms"] = _series_frame_time(entries[0][2], entries[1][2])
    return Cine(
        frames=frames,
        source=str(source),
        format="dicom-series",
        meta={"dicom": first, "files": [str(f) for f in ordered]},
        **geom,
    )


def _series_frame_time(a: Any, b: Any) -> float | None:
    def seconds(ds: Any) -> float | None:
        t = str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or "")
        if len(t) < 6:
            return None
        try:
            return int(t[0:2]) * 3600 + int(t[2:4]) * 60 + float(t[4:])
        except ValueError:
            return None

    ta, tb = seconds(a), seconds(b)
    return (tb - ta) * 1000.0 if ta is not None and tb is not None and tb > ta else None
