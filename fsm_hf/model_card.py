"""Model cards (the repository README.md the Hub shows) for FSM checkpoints.

:func:`generate_model_card` turns a model config plus what is known about the weights (where they came
from, how they were trained, how they score) into a README.md with a YAML metadata header the Hub
understands and a body that says what the model is, which conventions it expects, how to run it, and
under which licence the weights are.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from .configuration_fsm import FSMConfig

#: Tags every FSM card carries (in addition to the library name the Hub adds itself).
CARD_TAGS = ("4d-reconstruction", "novel-view-synthesis", "test-time-training", "fsm", "lacet")


def _card_tags(config: FSMConfig) -> List[str]:
    """:data:`CARD_TAGS` as they apply: static models reconstruct 3D, plain LaCT (elastic prior off) is not LaCET."""
    swaps = {"4d-reconstruction": "4d-reconstruction" if config.use_time else "3d-reconstruction",
             "lacet": "lacet" if config.elastic_enabled else "lact"}  # fmt: skip
    return [swaps.get(tag, tag) for tag in CARD_TAGS] + (["gaussian-splatting"] if config.head_type == "gaussian" else [])

#: ``library_name`` in the metadata: the Hub links it to this package.
LIBRARY_NAME = "fsm-hf"

#: Placeholder repo id of the usage snippet when the card is written before the repo id is known.
PLACEHOLDER_REPO_ID = "your-username/your-fsm-model"

# What is known about the licences of the weights this project converts (DESIGN §7): (substrings of
# the provenance's ``source`` / ``source_url``, text that goes into the card verbatim).
_KNOWN_SOURCE_LICENCES = (
    (
        ("mars-tin/fast-spatial-mem", "marstin/fast-spatial-mem"),
        "The official FSM release is not Apache-2.0: its FSM-LVSM weights are released under CC BY-NC-SA "
        "(non-commercial, share-alike) and its LRM code path is non-commercial.",
    ),
    (
        ("a1600012888/lact", "airsplay/lact_nvs"),
        "The LaCT release states its own terms; no licence for its weights is recorded here.",
    ),
)

ConfigLike = Union[FSMConfig, Mapping[str, Any]]


def generate_model_card(
    config: ConfigLike,
    *,
    provenance: Optional[Mapping[str, Any]] = None,
    eval_results: Optional[Union[Sequence[Mapping[str, Any]], Mapping[str, Mapping[str, float]]]] = None,
    base_model: Optional[Union[str, Sequence[str]]] = None,
    datasets: Optional[Union[str, Sequence[str]]] = None,
    license: Optional[str] = None,
    training_config: Optional[Mapping[str, Any]] = None,
    repo_id: Optional[str] = None,
    subfolder: Optional[str] = None,
    include_code: bool = False,
) -> str:
    """Write the README.md model card of an FSM checkpoint.

    Args:
        config: the model's :class:`~fsm_hf.FSMConfig` (or a subclass such as ``FSMGaussianConfig``), or
            the dict of its ``config.json``.
        provenance: where the weights come from (default: the config's ``fsm_provenance``, which the
            converter records in config.json). For converted checkpoints (the keys
            ``conversion.convert`` writes): ``source`` (description, e.g. ``"official FSM release
            (github Mars-tin/fast-spatial-mem, ...)"``), ``source_file``, ``source_sha256``,
            ``source_config`` (the official YAML as a dict), ``conversion_command``, ``license`` (licence
            id of the source weights, e.g. ``"cc-by-nc-sa-4.0"`` or ``"other"``); optional ``source_url``
            and ``license_note``. Any other key is listed as is.
        eval_results: evaluation scores, either rows ``{"dataset": ..., "metric": ..., "value": ...}``
            (optional ``dataset_id`` (Hub id), ``split``, ``setting``, e.g. ``"16 input views"``, and
            ``reference: True`` for a score of a reference method such as a baseline: listed in the
            card's table, not in the ``model-index`` results of this model) or a mapping
            ``{dataset: {metric: value}}``.
        base_model: Hub id(s) of the checkpoint this one was finetuned from.
        datasets: Hub id(s) of the training / finetuning datasets.
        license: licence id of these weights for the metadata header; default: the source's licence
            (``provenance["license"]``, which weights converted from a release, and weights finetuned
            from those, keep), else ``"apache-2.0"``. The code of fsm-hf is Apache-2.0 either way.
            ``"other"`` adds ``license_name``/``license_link`` pointing at the source.
        training_config: the training / finetuning configuration (e.g. the parsed YAML), recorded
            verbatim.
        repo_id: the repository id the usage snippet loads (a placeholder when ``None``).
        subfolder: where the model lives inside the repository (``"model"`` for an ``FSMPipeline``
            folder; ``None`` for a model folder).
        include_code: the repository bundles the model code (``trust_remote_code=True`` loading).

    Returns:
        The README.md text: a ``---``-delimited YAML header, then markdown.
    """
    config = _as_config(config)
    if provenance is None:  # conversion records it in config.json as `fsm_provenance`
        provenance = getattr(config, "fsm_provenance", None)
    provenance = dict(provenance or {})
    if license is None:
        license = provenance.get("license") or "apache-2.0"
    rows = _eval_rows(eval_results)
    is_gaussian = config.head_type == "gaussian"
    base_models = _as_list(base_model)
    dataset_ids = _as_list(datasets)
    converted = bool(provenance.get("source_file") or provenance.get("source_sha256"))

    metadata: Dict[str, Any] = {"license": license}
    if license == "other":
        metadata["license_name"] = "source-weights-license"
        link = _source_url(provenance)
        if link:
            metadata["license_link"] = link
    metadata["library_name"] = LIBRARY_NAME
    # The Hub has no novel-view-synthesis task. The LVSM head maps posed input images to images of new
    # views/times, which is what the Hub's "image-to-image" task means (images in, images out); the LRM
    # head outputs a 3D (4D Gaussian) representation of the scene, the Hub's "image-to-3d" task.
    metadata["pipeline_tag"] = "image-to-3d" if is_gaussian else "image-to-image"
    metadata["tags"] = _card_tags(config)
    if base_models:
        metadata["base_model"] = base_models[0] if len(base_models) == 1 else base_models
    if dataset_ids:
        metadata["datasets"] = dataset_ids
    own_rows = [row for row in rows if not row.get("reference")]
    if own_rows:  # scores of reference methods stay out of the results the Hub shows for this model
        metadata["model-index"] = _model_index(own_rows, repo_id or PLACEHOLDER_REPO_ID, metadata["pipeline_tag"])

    name = (repo_id or "").split("/")[-1] or ("FSM-LRM" if is_gaussian else "FSM-LVSM")
    sections = [
        f"# {name}",
        _description(config, converted, base_models, finetuned=bool(training_config)),
        _architecture(config),
        _conventions(config),
        _usage(config, repo_id or PLACEHOLDER_REPO_ID, subfolder, include_code),
    ]
    if rows:
        sections.append(_evaluation(rows))
    sections.append(_provenance(provenance, training_config, base_models, dataset_ids))
    sections.append(_licence(license, provenance, converted))
    sections.append(_citation())
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000).strip()
    body = "\n\n".join(s.strip() for s in sections if s and s.strip())
    return f"---\n{header}\n---\n\n{body}\n"


# -- helpers ------------------------------------------------------------------------------------------
def _as_config(config: ConfigLike) -> FSMConfig:
    if isinstance(config, FSMConfig):
        return config
    if isinstance(config, Mapping):
        data = dict(config)
        if data.get("model_type") == "fsm_gaussian" or data.get("head_type") == "gaussian":
            from .modeling_fsm_gaussian import FSMGaussianConfig

            return FSMGaussianConfig.from_dict(data)
        return FSMConfig.from_dict(data)
    raise TypeError(f"generate_model_card needs an FSMConfig or a config.json dict, got {type(config).__name__}.")


def _as_list(value: Optional[Union[str, Sequence[str]]]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _eval_rows(eval_results) -> List[Dict[str, Any]]:
    """Normalise evaluation results to rows with ``dataset``, ``metric``, ``value`` (+ optional fields)."""
    if not eval_results:
        return []
    if isinstance(eval_results, Mapping):
        rows = [
            {"dataset": dataset, "metric": metric, "value": value}
            for dataset, scores in eval_results.items()
            for metric, value in dict(scores).items()
        ]
    else:
        rows = [dict(row) for row in eval_results]
    for row in rows:
        missing = [k for k in ("dataset", "metric", "value") if k not in row]
        if missing:
            raise ValueError(
                f"Each evaluation result needs 'dataset', 'metric' and 'value'; {row!r} lacks {missing}."
            )
        if not isinstance(row["value"], (int, float)):
            raise ValueError(f"Evaluation value must be a number, got {row['value']!r} in {row!r}.")
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def _model_index(rows: List[Dict[str, Any]], repo_id: str, task: str) -> List[Dict[str, Any]]:
    """The Hub's ``model-index`` metadata (results shown on the model page)."""
    results = []
    for row in rows:
        dataset = {"name": str(row["dataset"]), "type": str(row.get("dataset_id") or _slug(row["dataset"]))}
        if row.get("split"):
            dataset["split"] = str(row["split"])
        metric = {"type": _slug(row["metric"]), "value": float(row["value"]), "name": str(row["metric"])}
        if row.get("setting"):
            metric["name"] = f"{row['metric']} ({row['setting']})"
        results.append({"task": {"type": task}, "dataset": dataset, "metrics": [metric]})
    return [{"name": repo_id.split("/")[-1], "results": results}]


def _source_url(provenance: Mapping[str, Any]) -> Optional[str]:
    if provenance.get("source_url"):
        return str(provenance["source_url"])
    match = re.search(r"github ([\w.-]+/[\w.-]+)", str(provenance.get("source", "")))
    return f"https://github.com/{match.group(1)}" if match else None


def _description(config: FSMConfig, converted: bool, base_models: List[str], finetuned: bool = False) -> str:
    kind = (
        "**FSM-LRM**: it decodes every input pixel into a 4D Gaussian (a 3D Gaussian with a time axis), slices "
        "the Gaussians at the target time and rasterises them"
        if config.head_type == "gaussian"
        else "**FSM-LVSM**: it renders the pixels of each target view directly from the target's tokens"
    )
    dims = "in space and time" if config.use_time else "of static scenes (this checkpoint has no time channel)"
    if config.elastic_enabled:
        blocks = "**LaCET** blocks (Large Chunk *Elastic* Test-Time Training)"
        prior = "keeps them close to an anchor with an elastic, importance-weighted prior, "
    else:
        blocks = "**LaCT** blocks (Large Chunk Test-Time Training; this checkpoint has the elastic prior off)"
        prior = ""
    if converted and finetuned:
        origin = (
            "These weights were finetuned (see *Training configuration*) from weights converted from a released "
            "checkpoint (see *Provenance*), whose licence they keep."
        )
    elif converted:
        origin = "These weights were converted from a released checkpoint (see *Provenance*)."
    elif base_models:
        origin = f"These weights were finetuned from `{base_models[0]}` (see *Provenance*)."
    else:
        origin = "See *Provenance* for where these weights come from."
    return textwrap.dedent(
        f"""
        A **Fast Spatial Memory (FSM)** checkpoint for **fsm-hf**, the Hugging Face-native, Apache-2.0
        implementation of *Fast Spatial Memory with Elastic Test-Time Training*
        (Ma, Yu, Zhen, Yang, Chai, Gan, 2026; arXiv 2604.07350).

        FSM reads a sequence of posed frames captured over time and renders novel view-time combinations
        {dims}. Its backbone is a stack of {blocks}: each
        block updates per-scene *fast weights* on the input-view tokens in large chunks, {prior}and then applies
        them to every token. The fast weights
        after reading the inputs are the scene's *spatial memory*: `model.reconstruct(...)` returns it and
        `model.render(memory, ...)` renders new targets without re-reading the inputs.

        This checkpoint is {kind}. {origin}
        """
    ).strip()


def _architecture(config: FSMConfig) -> str:
    elastic = (
        f"on: {config.elastic_estimator} importances, {config.elastic_anchor_policy} anchor, "
        f"alpha={config.elastic_alpha}, beta={config.elastic_beta}, lambda={config.elastic_lambda}, "
        f"{config.elastic_state} state"
        if config.elastic_enabled
        else "off (plain LaCT)"
    )
    rows = [
        ("head", "LVSM (pixels)" if config.head_type != "gaussian" else "LRM (4D Gaussians)"),
        ("blocks x width", f"{config.num_hidden_layers} x {config.hidden_size}"),
        ("patch size / training resolution", f"{config.patch_size} / {config.image_size}"),
        ("pose features", ", ".join(config.pose_features)),
        ("time channel", f"yes, max_frames={config.max_frames}" if config.use_time else "no"),
        ("fast weights", f"SwiGLU, head dim {config.ttt_head_dim}, x{config.ttt_inter_multi} hidden"),
        ("chunk size (tokens)", str(config.ttt_chunk_size) if config.ttt_chunk_size else "all input tokens at once"),
        ("elastic prior", elastic),
        ("Newton-Schulz dtype", config.newton_schulz_dtype),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Architecture\n\n| | |\n|---|---|\n{table}"


def _conventions(config: FSMConfig) -> str:
    time_row = (
        f"| `*_times` | `[B, V]` | model time in [-1, 1]: `tau = t / (max_frames - 1) * 2 - 1` for an integer frame "
        f"time `t` (`max_frames` = {config.max_frames}) |"
        if config.use_time
        else "| `*_times` | - | not used (no time channel); pass `None` |"
    )
    return textwrap.dedent(
        f"""
        ## Conventions

        The model works in one set of conventions; `FSMPipeline` converts from user-facing ones (OpenGL or
        OpenCV, c2w or w2c, normalised or pixel intrinsics, timestamps in any unit) and normalises poses and time
        from the input views.

        | input | shape | convention |
        |---|---|---|
        | `input_images` | `[B, V, 3, H, W]` | float RGB in [0, 1]; `H`, `W` multiples of {config.patch_size} |
        | `*_fxfycxcy` | `[B, V, 4]` | intrinsics in **pixels** of the given `H`, `W` |
        | `*_c2w` | `[B, V, 4, 4]` | camera-to-world, **OpenCV** camera (x right, y down, z forward) |
        {time_row}
        | output `images` | `[B, T, 3, H, W]` | rendered targets in [0, 1] |

        Rays go through pixel centres (+0.5). Poses should be normalised the way the model was trained
        (the pipeline does this).
        """
    ).strip()


def _usage(config: FSMConfig, repo_id: str, subfolder: Optional[str], include_code: bool) -> str:
    load_args = f"model_id, subfolder={subfolder!r}" if subfolder else "model_id"
    times = (
        "input_times = torch.linspace(-1, 1, num_inputs)[None]  # model time in [-1, 1]\n"
        "target_times = torch.zeros(1, 1)"
        if config.use_time
        else "input_times = target_times = None  # this checkpoint has no time channel"
    )
    snippet = textwrap.dedent(
        """
        import math

        import torch
        from transformers import AutoModel

        import fsm_hf  # noqa: F401  (registers the FSM architectures with AutoModel)

        model_id = "{repo_id}"  # a Hub repo id or a local folder
        model = AutoModel.from_pretrained({load_args}).eval()
        size = model.config.image_size  # any multiple of model.config.patch_size works


        def orbit(angles, radius=2.0):
            \"\"\"OpenCV camera-to-world matrices [1, N, 4, 4] on a circle around the origin, looking at it.\"\"\"
            c2w = torch.eye(4).repeat(1, len(angles), 1, 1)
            for i, angle in enumerate(angles):
                eye = torch.tensor([radius * math.sin(angle), 0.0, -radius * math.cos(angle)])
                forward = -eye / eye.norm()  # z: towards the origin
                down = torch.tensor([0.0, -1.0, 0.0])  # y: down (the world's +y is up)
                right = torch.linalg.cross(down, forward)  # x: right
                c2w[0, i, :3, :3] = torch.stack([right, down, forward], dim=1)
                c2w[0, i, :3, 3] = eye
            return c2w


        num_inputs = 4
        input_images = torch.rand(1, num_inputs, 3, size, size)  # your frames, RGB in [0, 1]
        input_c2w = orbit([2 * math.pi * i / num_inputs for i in range(num_inputs)])
        target_c2w = orbit([math.pi / num_inputs])  # a view between the first two inputs
        intrinsics = torch.tensor([size * 1.2, size * 1.2, size / 2, size / 2])  # fx, fy, cx, cy in pixels
        {times}

        with torch.no_grad():
            out = model(
                input_images=input_images,
                input_fxfycxcy=intrinsics.expand(1, num_inputs, 4),
                input_c2w=input_c2w,
                input_times=input_times,
                target_fxfycxcy=intrinsics.expand(1, 1, 4),
                target_c2w=target_c2w,
                target_times=target_times,
            )
        print(out.images.shape)  # [1, 1, 3, size, size], RGB in [0, 1]
        """
    ).strip()
    snippet = snippet.replace("{repo_id}", repo_id).replace("{load_args}", load_args).replace("{times}", times)
    text = (
        "## Usage\n\nWith fsm-hf (this library) installed, e.g. `pip install -e <fsm-hf source tree>`:\n\n"
        f"```python\n{snippet}\n```"
    )
    if subfolder:
        text += (
            "\n\nThis repository is an `FSMPipeline` folder (`model_index.json` + `model/`): "
            "`fsm_hf.FSMPipeline.from_pretrained(model_id)` loads it with the user-facing conventions, pose/time "
            "normalisation and video/ply export; the command line is `fsm render` / `fsm reconstruct`."
        )
    if include_code:
        text += (
            "\n\nThe repository also bundles the model code, so it loads without installing fsm-hf "
            "(read the code first: it runs on your machine):\n\n"
            f"```python\nfrom transformers import AutoModel\n\n"
            f"model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True)\n```"
        )
    return text


def _evaluation(rows: List[Dict[str, Any]]) -> str:
    lines = ["## Evaluation", "", "| dataset | split | setting | metric | value |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row.get('split', '')} | {row.get('setting', '')} | {row['metric']} | "
            f"{float(row['value']):.4g} |"
        )
    lines += ["", "`fsm eval` computes such scores with the official inference time convention "
              "(`t = frame_idx % max_frames`)."]  # fmt: skip
    return "\n".join(lines)


def _yaml_block(data: Mapping[str, Any]) -> str:
    dumped = yaml.safe_dump(json.loads(json.dumps(dict(data), default=str)), sort_keys=False, allow_unicode=True)
    return f"```yaml\n{dumped.strip()}\n```"


def _provenance(
    provenance: Dict[str, Any],
    training_config: Optional[Mapping[str, Any]],
    base_models: List[str],
    dataset_ids: List[str],
) -> str:
    lines = ["## Provenance", ""]
    labels = [
        ("source", "Source"),
        ("source_url", "Source URL"),
        ("source_file", "Source file"),
        ("source_sha256", "Source sha256"),
        ("conversion_command", "Conversion command"),
    ]
    for key, label in labels:
        if provenance.get(key):
            value = provenance[key]
            lines.append(f"- {label}: `{value}`" if key != "source" else f"- {label}: {value}")
    if base_models:
        lines.append(f"- Finetuned from: {', '.join(f'`{m}`' for m in base_models)}")
    if dataset_ids:
        lines.append(f"- Datasets: {', '.join(f'`{d}`' for d in dataset_ids)}")
    known = {k for k, _ in labels} | {"source_config", "license", "license_note"}
    for key, value in provenance.items():
        if key not in known and value is not None and not isinstance(value, (dict, list)):
            lines.append(f"- {key}: `{value}`")
    if len(lines) == 2 and not (provenance.get("source_config") or training_config):
        lines.append("Not recorded.")
    if provenance.get("source_config"):
        lines += ["", "<details><summary>Source (official) configuration</summary>", "",
                  _yaml_block(provenance["source_config"]), "", "</details>"]  # fmt: skip
    if training_config:
        lines += ["", "<details><summary>Training configuration</summary>", "", _yaml_block(training_config), "",
                  "</details>"]  # fmt: skip
    return "\n".join(lines)


def _licence(license: str, provenance: Mapping[str, Any], converted: bool) -> str:
    lines = ["## Licence", ""]
    if not converted:
        lines.append(f"These weights are released under `{license}`. The fsm-hf code is Apache-2.0.")
        return "\n".join(lines)
    source_licence = provenance.get("license")
    where = _source_url(provenance) or provenance.get("source") or "the source repository"
    lines.append(
        "These weights are a format conversion of someone else's release: they keep the licence of the source "
        "weights, whatever the licence of the fsm-hf code (Apache-2.0). **Check the source repository's licence** "
        f"({where}) before using them, in particular for commercial use."
    )
    if source_licence:
        lines.append("")
        lines.append(f"Licence recorded for the source weights at conversion time: `{source_licence}`.")
    haystack = f"{provenance.get('source', '')} {provenance.get('source_url', '')}".lower()
    for needles, text in _KNOWN_SOURCE_LICENCES:
        if any(needle in haystack for needle in needles):
            lines += ["", text]
            break
    if provenance.get("license_note"):
        lines += ["", str(provenance["license_note"])]
    return "\n".join(lines)


def _citation() -> str:
    return textwrap.dedent(
        """
        ## Citation

        ```bibtex
        @article{ma2026fsm,
          title   = {Fast Spatial Memory with Elastic Test-Time Training},
          author  = {Ma and Yu and Zhen and Yang and Chai and Gan},
          journal = {arXiv preprint arXiv:2604.07350},
          year    = {2026}
        }
        ```
        """
    ).strip()
