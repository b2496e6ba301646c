"""Convert a LaCT novel-view-synthesis checkpoint (``{"model": state_dict}``, 12 input channels,
no time) into a Hugging Face folder.

    python -m conversion.convert_lact_nvs --checkpoint scene_res256.pt [--config lact_l24_d768_ttt2x.yaml] \\
        --output ./lact-nvs-scene

Without ``--config`` the layer count and fast-weight width are read from the shapes (presets
``lact-nvs-l14-ttt2x``, ``lact-nvs-l24-ttt2x``, ``lact-nvs-l24-ttt4x``).
"""

from __future__ import annotations

from typing import List, Optional

from .convert import run


def main(argv: Optional[List[str]] = None) -> int:
    return run("lact", argv, "python -m conversion.convert_lact_nvs", __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
