"""Write an fsm-hf model back in the official FSM checkpoint format.

    python -m conversion.export_official ./fsm-4d-lvsm --output fsm_4dlvsm.pth [--config-output fsm.yaml]

``DIR`` is a model folder or an ``FSMPipeline`` folder (its ``model/`` component is used). The
``.pth`` holds ``{"model", "ewc_buffers", "format_version": 2}``; optimiser, scheduler and
loss-network state are not carried. ``official -> fsm-hf -> official`` is bit-identical over the
model tensors and every ``ewc_buffers`` tensor.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch
import yaml

from .official import ConversionError, official_yaml_from_config, to_official_checkpoint


def load_model_folder(folder: Path):
    """Load the model of a model folder or of a pipeline folder (``model_index.json`` + ``model/``)."""
    from fsm_hf.modeling_fsm import FSMForNovelViewSynthesis

    if (folder / "model_index.json").is_file():
        folder = folder / "model"
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{str(folder)!r} is neither a model folder (config.json) nor a pipeline folder (model_index.json).")
    return FSMForNovelViewSynthesis.from_pretrained(folder)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conversion.export_official", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="fsm-hf model or pipeline folder")
    parser.add_argument("--output", required=True, help="official-format .pth to write")
    parser.add_argument("--config-output", help="also write the official YAML config here")
    args = parser.parse_args(argv)
    try:
        model = load_model_folder(Path(args.folder))
        checkpoint = to_official_checkpoint(model.state_dict())
        official_config = official_yaml_from_config(model.config)
    except (ConversionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, output)
    if args.config_output:
        Path(args.config_output).write_text(yaml.safe_dump(official_config, sort_keys=False))
    print(f"Wrote {output} ({len(checkpoint['model'])} model tensors, {len(checkpoint['ewc_buffers'])} ewc_buffers blocks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
