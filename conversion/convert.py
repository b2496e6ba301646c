"""Shared command-line conversion flow for official FSM and LaCT NVS checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import torch
import yaml

from .io import conversion_command, load_checkpoint, save_converted, sha256_of, write_folder_atomically
from .official import (
    ConversionError,
    build_model,
    config_from_official_yaml,
    infer_config_from_state_dict,
    map_official_state_dict,
    model_class_for,
    split_checkpoint,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

#: Per source: description, default preset for shape inference, forced config fields, licence of the weights.
SOURCES = {
    "official": dict(
        description="official FSM release (github Mars-tin/fast-spatial-mem, Hub marstin/fast-spatial-mem)",
        preset=None,  # fsm-4d-lvsm or fsm-3d-lvsm, from the number of input channels
        forced={},
        license="cc-by-nc-sa-4.0",
    ),
    "lact": dict(
        description="LaCT novel view synthesis (github a1600012888/LaCT, Hub airsplay/lact_nvs)",
        preset="lact-nvs-l24-ttt2x",  # layers / inter_multi come from the shapes
        forced=dict(use_time=False, elastic_enabled=False),
        license="other",
    ),
}


def build_parser(kind: str, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--checkpoint", required=True, help="source checkpoint (torch.save dict with a 'model' state dict)")
    parser.add_argument("--config", help="the source YAML config; omit to infer the architecture from tensor shapes")
    parser.add_argument("--preset", help="fsm-hf preset giving the defaults shapes cannot reveal (see FSMConfig PRESETS)")
    parser.add_argument("--output", required=True, help="output folder (written atomically)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="write a model folder, not an FSMPipeline folder")
    parser.add_argument("--max-shard-size", default="5GB", help="shard model.safetensors above this size")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def convert_file(kind: str, checkpoint_path: Path, config_path: Optional[Path] = None, preset: Optional[str] = None,
                 log: Callable[[str], None] = print):  # fmt: skip
    """Load (``weights_only``), map every key and build the model.

    Returns ``(model, provenance)``; raises :class:`ConversionError` naming every problem.
    """
    source = SOURCES[kind]
    checkpoint = load_checkpoint(checkpoint_path)
    state, ewc, dropped_entries = split_checkpoint(checkpoint)
    source_config = None
    if config_path is not None:
        source_config = yaml.safe_load(Path(config_path).read_text())
        config = config_from_official_yaml(source_config, **source["forced"])
    else:
        config, inferred = infer_config_from_state_dict(state, preset=preset or source["preset"], **source["forced"])
        log(f"Inferred from tensor shapes: {json.dumps(inferred)}")
        log(f"Defaults from preset {preset or source['preset'] or ('fsm-4d-lvsm' if config.use_time else 'fsm-3d-lvsm')!r}: "
            f"max_frames={config.max_frames}, ttt_chunk_size={config.ttt_chunk_size}, elastic_enabled={config.elastic_enabled}, "
            f"elastic_estimator={config.elastic_estimator!r}, elastic_anchor_policy={config.elastic_anchor_policy!r}")  # fmt: skip
    mapped, dropped_keys = map_official_state_dict(state, ewc)
    if dropped_entries:
        log(f"Dropped training state (not carried): {sorted(dropped_entries)}")
    if dropped_keys:
        log(f"Dropped {len(dropped_keys)} loss-network tensors: {dropped_keys}")
    if not ewc and config.elastic_enabled:
        log("No ewc_buffers in the checkpoint: anchors/importances are built from the loaded fast weights.")
    model = build_model(model_class_for(config), config, mapped)
    provenance = {
        "source": source["description"],
        "source_file": checkpoint_path.name,
        "source_sha256": sha256_of(checkpoint_path),
        "source_config": source_config,
        "conversion_command": conversion_command(),
        "license": source["license"],
    }
    return model, provenance


def run(kind: str, argv: Optional[List[str]], prog: str, description: str) -> int:
    args = build_parser(kind, prog, description).parse_args(argv)
    try:
        model, provenance = convert_file(kind, Path(args.checkpoint), Path(args.config) if args.config else None, args.preset)
        write_folder_atomically(
            args.output,
            lambda tmp: save_converted(model, tmp, provenance=provenance, as_pipeline=args.pipeline,
                                       dtype=DTYPES[args.dtype], max_shard_size=args.max_shard_size),  # fmt: skip
            overwrite=args.overwrite,
        )
    except (ConversionError, FileExistsError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {'an FSMPipeline' if args.pipeline else 'a model'} folder to {args.output}")
    return 0
