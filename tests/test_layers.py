"""The package's layers: no module imports a layer above its own (issue 17 item 4).

0: ``io``, ``flow``, ``metrics``, ``config_parsing`` (and the package root) - files, optical flow and warping,
scores, MONAI's config parser made safe for threads;
1: ``networks``, ``data``, ``losses`` - what is trained and on what;
2: ``inference`` - propagation, the `inferring` workflow and batch inference;
3: ``engines`` - training, relearning (test-time relearning too), evaluation handlers;
4: ``benchmarking``, ``monai_label`` (the MONAI Label app's tasks), ``bundle_command`` - tools built on all of the above.
Imports inside functions count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "bundle" / "medvos"
LAYERS = {"": 0, "command_line": 0, "io": 0, "flow": 0, "metrics": 0, "config_parsing": 0,
          "networks": 1, "data": 1, "losses": 1,
          "inference": 2,
          "engines": 3,
          "benchmarking": 4, "monai_label": 4, "bundle_command": 4}


def part(module: str) -> str:
    """``medvos.io.readers`` -> ``io``; ``medvos`` -> ``""``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "medvos"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "medvos" \
                and node.level == 0:
            found.add(node.module)
            if node.module == "medvos":  # from medvos import io
                found |= {f"medvos.{a.name}" for a in node.names if a.name in LAYERS}
    return found


def test_every_module_is_in_a_layer():
    modules = {part("medvos." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
               for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert modules <= set(LAYERS), f"modules outside every layer: {sorted(modules - set(LAYERS))}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        own = part("medvos." + ".".join(p for p in rel if p != "__init__"))
        for target in imports(path):
            if LAYERS[part(target)] > LAYERS[own]:
                upward.append(f"{path.relative_to(REPO)} ({own}, layer {LAYERS[own]}) imports {target} "
                              f"(layer {LAYERS[part(target)]})")
    assert not upward, "\n".join(upward)


def test_the_bundle_command_finds_the_configs():
    from medvos.bundle_command import CONFIGS, bundle_command

    assert (CONFIGS / "train.yaml").is_file() and (CONFIGS / "relearn.yaml").is_file()
    assert str(CONFIGS / "metadata.json") in bundle_command("training", ["train.yaml"])
