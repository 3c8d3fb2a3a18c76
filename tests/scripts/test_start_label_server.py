"""scripts/start_label_server.py: its options reach the app as ``--conf`` pairs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from start_label_server import command, parser  # noqa: E402


def _conf(cmd: list[str]) -> dict[str, str]:
    return {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "--conf"}


def test_inference_options_reach_the_app_only_when_given(tmp_path):
    base = ["--studies", str(tmp_path)]
    conf = _conf(command(parser().parse_args(base), []))
    assert not {"tune_steps", "tune_views", "self_annotate", "runtime", "motion", "tune_precision"} & set(conf)
    args = parser().parse_args(base + ["--tune-steps", "200", "--tune-views", "64", "--self-annotate", "2",
                                       "--no-motion", "--tune-precision", "auto"])
    conf = _conf(command(args, ["--workers", "1"]))
    assert conf["tune_steps"] == "200" and conf["tune_views"] == "64" and conf["self_annotate"] == "2"
    assert conf["motion"] == "false" and conf["tune_precision"] == "auto"
