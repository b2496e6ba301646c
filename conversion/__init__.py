"""Converters between foreign checkpoints (official FSM, LaCT NVS) and fsm-hf folders."""

from .official import (
    ConversionError,
    config_from_official_yaml,
    convert_official,
    infer_config_from_state_dict,
    map_official_state_dict,
    strip_wrappers,
)

__all__ = [
    "ConversionError",
    "config_from_official_yaml",
    "convert_official",
    "infer_config_from_state_dict",
    "map_official_state_dict",
    "strip_wrappers",
]
