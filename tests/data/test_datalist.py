"""Datalist builders on public layouts (CVC-ClinicDB and Kvasir-SEG real data; generic/CAMUS on temp files)."""

from __future__ import annotations

import pytest

from conftest import shared
from medvos.data import prepare
from medvos.data.datalist import load_datalist, write_datalist
from medvos.io import CineReadError, DatalistError, read_cine, read_mask
from medvos.io.writers import write_nifti, write_png_frames


@pytest.mark.realdata
def test_cvc_clinicdb_real(tmp_path):
    root = shared("cvc_clinicdb")
    dl = prepare.cvc_clinicdb(root)
    entries = dl["validation"] + dl["test"]
    assert len(entries) == 29 and sum(len(e["image"]) for e in entries) == 612
    assert {e["id"] for e in dl["test"]} == {f"cvc_seq{i:02d}" for i in range(21, 30)}
    assert len(dl["training"]) == 20 and dl["training"][0]["labeled_frames"] == "all"
    write_datalist(tmp_path / "d.json", prepare.with_base(dl, root, tmp_path))
    e = load_datalist(tmp_path / "d.json", "test")[0]
    video = read_cine(e["image"])
    assert read_mask(e["label"], like=video).labels.shape[0] == video.num_frames


@pytest.mark.realdata
def test_kvasir_real():
    dl = prepare.kvasir_seg(shared("kvasir_seg"), validation_fraction=0.1)
    assert len(dl["training"]) + len(dl["validation"]) == 1000
    assert all(e["group"] == "kvasir" for e in dl["training"])


def test_generic_layout(tmp_path, echo_small):
    for v in range(4):
        write_png_frames(tmp_path / f"vid{v}" / "frames", echo_small.frames)
        write_png_frames(tmp_path / f"vid{v}" / "masks", echo_small.labels[:1] * 255, names=["0000"])
    dl = prepare.generic_videos(tmp_path, test_fraction=0.25)
    assert len(dl["test"]) == 1 and len(dl["validation"]) == 3
    e = dl["test"][0]
    video = read_cine(tmp_path / e["image"])
    assert read_mask(tmp_path / e["label"], like=video).labeled_frames == [0]


def test_camus_layout(tmp_path, echo_small):
    for p in (1, 2, 3):
        d = tmp_path / f"patient{p:04d}"
        write_nifti(d / f"patient{p:04d}_2CH_half_sequence.nii.gz", echo_small.frames)
        write_nifti(d / f"patient{p:04d}_2CH_half_sequence_gt.nii.gz", echo_small.labels * 2)
    write_nifti(tmp_path / "patient0004" / "patient0004_4CH_half_sequence.nii.gz", echo_small.frames)
    dl = prepare.camus(tmp_path, test_fraction=0.34)
    assert len(dl["test"]) == 1 and len(dl["validation"]) == 2 and len(dl["unlabeled"]) == 1


def test_missing_layout_is_clear(tmp_path):
    with pytest.raises(DatalistError, match="expected one of the folders"):
        prepare.cvc_clinicdb(tmp_path)


def test_datalist_problems_raise_datalist_errors(tmp_path):
    """A missing, non-JSON or split-less datalist is a DatalistError (a CineReadError too) naming the file."""
    from medvos.data.datalist import load_datalist

    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "nosplit.json").write_text('{"training": []}')
    for name, text in (("missing.json", "not found"), ("bad.json", "not valid JSON"), ("nosplit.json", "no 'test'")):
        with pytest.raises(DatalistError, match=text) as err:
            load_datalist(str(tmp_path / name), "test")
        assert isinstance(err.value, CineReadError) and name in str(err.value)


def test_video_entries_name_a_development_set(synthetic_root):
    from medvos.data.videos import video_entries

    datalist = synthetic_root / "datalist.json"
    every = video_entries(f"{datalist}:test")
    assert every and all("group" not in e for e in every)
    first = str(every[0]["id"])
    assert [e["id"] for e in video_entries(f"{datalist}:test:{first}")] == [first]
    with pytest.raises(DatalistError, match="no video in 'test' with an id starting 'nothing/'") as err:
        video_entries(f"{datalist}:test:nothing/")
    assert err.value.path == str(datalist)
