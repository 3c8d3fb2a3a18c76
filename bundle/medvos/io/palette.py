"""Label colours shared by the overlay video and the DICOM SEG's recommended display colours (label % 8)."""

from __future__ import annotations

import numpy as np

PALETTE = np.array([[0, 0, 0], [255, 60, 60], [60, 220, 60], [70, 120, 255], [255, 200, 0], [220, 60, 220],
                    [0, 220, 220], [255, 140, 0]], np.float32)
