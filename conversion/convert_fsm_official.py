"""Convert an official FSM release checkpoint (``.pth``) into a Hugging Face folder.

    python -m conversion.convert_fsm_official --checkpoint fsm_4dlvsm_patch8_res256.pth \\
        [--config fsm_lvsm_inference.yaml] [--preset fsm-4d-lvsm] --output ./fsm-4d-lvsm \\
        [--dtype float32|bfloat16] [--no-pipeline]

Without ``--config`` the architecture is inferred from tensor shapes and the defaults that shapes
cannot reveal (max_frames, elastic settings, chunk size) come from ``--preset`` (default: the
matching released model); what was inferred is printed.
"""

from __future__ import annotations

from typing import List, Optional

from .convert import run


def main(argv: Optional[List[str]] = None) -> int:
    return run("official", argv, "python -m conversion.convert_fsm_official", __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
