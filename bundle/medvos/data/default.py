"""Which datalist a workflow uses: the user's (``datalist`` / ``dataset_dir``) or the embedded synthetic default."""

from __future__ import annotations

import logging
from pathlib import Path

from medvos.data.synthetic import make_synthetic_dataset
from medvos.io.errors import DatalistError

logger = logging.getLogger(__name__)


def resolve_datalist(datalist: str | None, dataset_dir: str | None, synthetic_dir: str | Path, **synthetic_kwargs) -> str:  # noqa: ANN003
    """Path of the datalist JSON to use.

    - ``datalist`` given: that file (relative entries resolve against ``dataset_dir`` if given, else its folder);
    - only ``dataset_dir`` given: ``<dataset_dir>/datalist.json`` (make one with ``scripts/prepare_dataset.py``);
    - neither: the synthetic set is generated (once, deterministic) under ``synthetic_dir``.
    """
    if datalist:
        p = Path(datalist)
        if not p.is_file():
            raise DatalistError(p, "datalist file not found")
        return str(p)
    if dataset_dir:
        p = Path(dataset_dir) / "datalist.json"
        if not p.is_file():
            raise DatalistError(p, "dataset_dir has no datalist.json: create it with scripts/prepare_dataset.py or "
                                "pass --datalist")
        return str(p)
    logger.info("no dataset configured: using the synthetic default set in %s", synthetic_dir)
    return str(make_synthetic_dataset(synthetic_dir, **synthetic_kwargs))
