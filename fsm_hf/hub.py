"""Pushing FSM checkpoints to the Hugging Face Hub, with real model cards and (optionally) the model code.

Loading needs nothing from this module: after ``import fsm_hf``, ``AutoModel.from_pretrained(repo_id,
revision=..., cache_dir=..., local_files_only=..., token=...)`` is transformers' own loader.

- :func:`push_model_to_hub`: save a model (safetensors, sharded above ``max_shard_size``) with a generated
  README.md model card and upload it in one commit.
- :func:`push_folder`: upload a folder written by conversion or finetuning (an ``FSMPipeline`` folder
  ``model_index.json`` + ``model/``, or a model folder), generating README.md when it has none. This is
  what ``fsm push DIR REPO_ID`` calls.
- :func:`save_model_folder`: what :func:`push_model_to_hub` uploads, written to a local folder.
- :func:`write_remote_code` / :func:`bundle_remote_code`: copies of the model's modules as flat files
  with relative imports, and ``auto_map`` in config.json, so that
  ``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` works where fsm-hf is not installed.
  The copies are generated from the installed source at push time; the repository never keeps a second
  copy of the code.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]

#: Top-level packages of this project: imports of these are bundled; everything else is a dependency.
PROJECT_PACKAGES = ("modeling", "fsm_hf")

#: Weight formats that unpickle (run code) on load: never pushed.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

DEFAULT_MAX_SHARD_SIZE = "5GB"


class RemoteCodeBundleError(ValueError):
    """A module cannot be rewritten into the flat layout transformers' remote-code loader imports."""


# -- pushing -------------------------------------------------------------------------------------------
def save_model_folder(
    model,
    folder: PathLike,
    *,
    include_code: bool = False,
    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
    repo_id: Optional[str] = None,
    **card_kwargs: Any,
) -> Path:
    """Write ``model`` as a Hub model folder: config.json, safetensors weights, README.md model card.

    Args:
        model: an FSM model (``FSMForNovelViewSynthesis``, ``FSMForGaussianReconstruction``, ...).
        folder: destination (created if missing).
        include_code: also write the bundled model code and ``auto_map`` (see :func:`write_remote_code`).
        max_shard_size: weights above this size are split into ``model-0000i-of-0000n.safetensors`` shards
            plus ``model.safetensors.index.json``.
        repo_id: the repository the card's usage snippet loads.
        **card_kwargs: passed to :func:`fsm_hf.model_card.generate_model_card` (``provenance``,
            ``eval_results``, ``base_model``, ``datasets``, ``license``, ``training_config``).
    """
    from .model_card import generate_model_card

    folder = Path(folder)
    model.save_pretrained(folder, max_shard_size=max_shard_size)  # transformers 5 writes safetensors only
    card = generate_model_card(model.config, repo_id=repo_id, include_code=include_code, **card_kwargs)
    (folder / "README.md").write_text(card, encoding="utf-8")
    if include_code:
        write_remote_code(folder, model_class=type(model))
    return folder


def push_model_to_hub(
    model,
    repo_id: str,
    *,
    include_code: bool = False,
    provenance: Optional[Mapping[str, Any]] = None,
    eval_results=None,
    base_model: Optional[Union[str, Sequence[str]]] = None,
    datasets: Optional[Union[str, Sequence[str]]] = None,
    license: Optional[str] = None,
    training_config: Optional[Mapping[str, Any]] = None,
    commit_message: Optional[str] = None,
    token: Optional[Union[str, bool]] = None,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
) -> str:
    """Push ``model`` to the Hub repository ``repo_id`` with a generated model card as its README.md.

    The repository is created when missing (``private`` applies then), and the branch ``revision`` too.
    Weights are safetensors, sharded above ``max_shard_size``. With ``include_code=True`` the model code
    is bundled so that ``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` works without
    fsm-hf. The card arguments are those of :func:`fsm_hf.model_card.generate_model_card`.

    Returns:
        The URL of the commit (of the pull request when ``create_pr=True``).
    """
    with tempfile.TemporaryDirectory(prefix="fsm-push-") as tmp:
        save_model_folder(
            model, tmp, include_code=include_code, max_shard_size=max_shard_size, repo_id=repo_id,
            provenance=provenance, eval_results=eval_results, base_model=base_model, datasets=datasets,
            license=license, training_config=training_config,
        )  # fmt: skip
        return push_folder(
            tmp, repo_id, token=token, private=private, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload {type(model).__name__}",
        )  # fmt: skip


@dataclass
class FolderLayout:
    """What :func:`inspect_folder` found: ``kind`` is ``"model"`` or ``"pipeline"``; ``model_dir`` holds
    config.json and the weights; ``config`` is that config.json."""

    kind: str
    model_dir: Path
    config: Dict[str, Any]

    @property
    def subfolder(self) -> Optional[str]:
        return "model" if self.kind == "pipeline" else None


def inspect_folder(folder: PathLike) -> FolderLayout:
    """Check that ``folder`` is an FSM model folder or ``FSMPipeline`` folder ready to push.

    Raises ``FileNotFoundError`` / ``ValueError`` saying what was expected and what was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot push {str(folder)!r}: it is not a folder.")
    if (folder / "model_index.json").is_file():
        kind, model_dir = "pipeline", folder / "model"
        if not (model_dir / "config.json").is_file():
            raise ValueError(
                f"{str(folder)!r} has a model_index.json, so it should be an FSMPipeline folder, but it has no "
                f"model/config.json (found: {sorted(p.name for p in folder.iterdir())})."
            )
    elif (folder / "config.json").is_file():
        kind, model_dir = "model", folder
    else:
        raise ValueError(
            f"Cannot push {str(folder)!r}: expected a model folder (config.json + *.safetensors) or an FSMPipeline "
            f"folder (model_index.json + model/), found {sorted(p.name for p in folder.iterdir())}."
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    _fsm_config_class(config.get("model_type"), model_dir / "config.json")
    has_weights = (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file()
    if not has_weights:
        raise ValueError(
            f"{str(model_dir)!r} has no model.safetensors (or model.safetensors.index.json + shards); "
            f"found {sorted(p.name for p in model_dir.iterdir())}."
        )
    pickled = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise ValueError(
            f"Refusing to push pickled files {pickled} from {str(folder)!r}: Hub checkpoints of fsm-hf are "
            "safetensors only (pickles run code when loaded). Remove them or convert them first."
        )
    return FolderLayout(kind, model_dir, config)


def push_folder(
    folder: PathLike,
    repo_id: str,
    *,
    token: Optional[Union[str, bool]] = None,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    create_pr: bool = False,
    include_code: bool = False,
    **card_kwargs: Any,
) -> str:
    """Upload a folder written by conversion or finetuning to the Hub repository ``repo_id``, in one commit.

    ``folder`` is an ``FSMPipeline`` folder (``model_index.json`` + ``model/``) or a model folder
    (``config.json`` + safetensors). The repository is created when missing (``private`` applies then)
    and the branch ``revision`` too; a ``repo_id`` without a namespace goes to the token's. When the
    folder has no README.md, one is generated from its config (for a pipeline folder, ``model/README.md``
    is used when present); a card written with the placeholder repository id (as the converters and
    ``finetune.py`` write them) is addressed to ``repo_id``. Nothing is written into ``folder``.
    ``card_kwargs`` (``provenance``, ``eval_results``, ...) go to the generated card; giving them for a
    folder that has a card is an error (they would be ignored).
    ``include_code=True`` (model folders only) also uploads the bundled model code and a config.json with
    ``auto_map`` (see :func:`write_remote_code`).

    Returns:
        The URL of the commit (of the pull request when ``create_pr=True``).

    Raises:
        PermissionError: the Hub refused the token (invalid, or without write access to ``repo_id``).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    layout = inspect_folder(folder)
    generated: Dict[str, bytes] = {}
    if include_code:
        if layout.kind != "model":
            raise ValueError(
                "include_code=True applies to model folders: an FSMPipeline folder is loaded through fsm_hf "
                f"(model_index.json names its classes), but {str(folder)!r} is a pipeline folder."
            )
        files, config = remote_code_files(layout.config)
        generated.update({name: text.encode("utf-8") for name, text in files.items()})
        generated["config.json"] = _config_json(config).encode("utf-8")
    existing_card = folder / "README.md"
    if not existing_card.is_file() and layout.kind == "pipeline" and (layout.model_dir / "README.md").is_file():
        existing_card = layout.model_dir / "README.md"
    if existing_card.is_file():
        if card_kwargs:
            raise ValueError(
                f"{str(folder)!r} already has a model card ({existing_card.relative_to(folder)}), so the card arguments "
                f"{sorted(card_kwargs)} would be ignored: remove that README.md to generate a new card, or push without them."
            )

    def card_for(full_repo_id: str) -> str:
        if existing_card.is_file():
            return _card_for_repo(existing_card.read_text(encoding="utf-8"), full_repo_id)
        return _card_for_config(layout, full_repo_id, include_code, card_kwargs)

    if not existing_card.is_file():
        card_for(repo_id)  # a bad card argument fails before the Hub is contacted

    api = HfApi(token=token)
    try:
        # "name" alone is created under the token's namespace: the card and the commit use the full id
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        generated["README.md"] = card_for(repo_id).encode("utf-8")
        operations = [
            CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(path))
            for path_in_repo, path in _files_to_upload(folder)
            if path_in_repo not in generated
        ]
        operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in generated.items()]
        if revision is not None and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload FSM {layout.kind} folder {folder.name}",
            revision=revision,
            create_pr=create_pr,
        )
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise PermissionError(
                f"The Hub refused to let this token push to {repo_id!r} (HTTP {status}: "
                f"{err.server_message or 'unauthorized'}). Pass a token with write access to that namespace "
                "(token=... / `fsm push --token`), or log in with `hf auth login`."
            ) from err
        raise
    return info.pr_url or info.commit_url


def _files_to_upload(folder: Path) -> List[Tuple[str, Path]]:
    """``(path_in_repo, path)`` of every file under ``folder``, hidden files and caches excluded."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        files.append((relative.as_posix(), path))
    return files


def _card_for_repo(card: str, repo_id: str) -> str:
    """A card written before its repository was known (converter and finetuning outputs use the
    placeholder id in their usage snippet and ``model-index``), addressed to ``repo_id``."""
    from .model_card import PLACEHOLDER_REPO_ID

    card = card.replace(PLACEHOLDER_REPO_ID, repo_id)
    return card.replace(f"- name: {PLACEHOLDER_REPO_ID.split('/')[-1]}\n", f"- name: {repo_id.split('/')[-1]}\n")


def _card_for_config(layout: FolderLayout, repo_id: str, include_code: bool, card_kwargs: Dict[str, Any]) -> str:
    from .model_card import generate_model_card

    return generate_model_card(
        layout.config, repo_id=repo_id, subfolder=layout.subfolder, include_code=include_code, **card_kwargs
    )


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"  # as PretrainedConfig.to_json_string


def _fsm_config_class(model_type: Optional[str], where: PathLike):
    """The registered FSM config class of ``model_type`` (``fsm``, ``fsm_gaussian``, ...)."""
    from transformers import CONFIG_MAPPING

    from .configuration_fsm import FSMConfig

    try:
        config_class = CONFIG_MAPPING[model_type]
    except KeyError:
        config_class = None
    if config_class is None or not issubclass(config_class, FSMConfig):
        raise ValueError(f"{str(where)!r} is not an FSM config: model_type={model_type!r}.")
    return config_class


# -- remote code ------------------------------------------------------------------------------------------
def write_remote_code(folder: PathLike, model_class=None) -> List[str]:
    """Write the bundled model code into the model folder ``folder`` and ``auto_map`` into its config.json.

    ``model_class`` defaults to the class ``AutoModel`` maps the folder's ``model_type`` to.
    Returns the names of the files written.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    files, config = remote_code_files(json.loads(config_path.read_text(encoding="utf-8")), model_class)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    config_path.write_text(_config_json(config), encoding="utf-8")
    return sorted(files)


def remote_code_files(config: Mapping[str, Any], model_class=None) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """The flat module files for ``trust_remote_code`` loading and the config dict with ``auto_map``.

    ``config`` is a config.json dict of an FSM model. ``auto_map`` maps ``AutoConfig`` to the config class
    and ``AutoModel`` to ``model_class`` (default: the class ``AutoModel`` maps the config to).
    """
    from transformers import AutoModel

    config_class = _fsm_config_class(config.get("model_type"), "config.json")
    if model_class is None:
        model_class = AutoModel._model_mapping[config_class]
    files, flat_names = bundle_remote_code([config_class.__module__, model_class.__module__])
    updated = dict(config)
    updated["auto_map"] = {
        "AutoConfig": f"{flat_names[config_class.__module__]}.{config_class.__name__}",
        "AutoModel": f"{flat_names[model_class.__module__]}.{model_class.__name__}",
    }
    return files, updated


@dataclass
class _ProjectImport:
    """One ``from X import ...`` statement of a project module, resolved to the defining modules."""

    node: ast.ImportFrom
    names_by_module: Dict[str, List[ast.alias]]


def bundle_remote_code(entry_modules: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Flat copies of ``entry_modules`` and every project module they import, for transformers' loader.

    transformers' remote-code loader (``dynamic_module_utils``) copies the files of a repository into one
    flat package and follows only relative imports written ``from .name import ...``; it also imports
    every absolute import of each file (outside ``try`` blocks) to check it is installed. So every import
    of a project module (``from modeling.lacet import X``, ``from .memory import Y``, ``from modeling
    import Z`` re-exported by a package ``__init__``) is rewritten to ``from .<flat name> import ...``;
    imports of other packages (torch, transformers, ...) are kept.

    Returns:
        ``({file name: source}, {module name: flat name})``. Entry modules keep their own name; other
        modules get their last name component unless two modules share it.
    """
    parsed: Dict[str, Tuple[Path, bytes, List[_ProjectImport]]] = {}
    queue = list(entry_modules)
    while queue:
        module = queue.pop(0)
        if module in parsed:
            continue
        path = _module_path(module, requested_by=None)
        source = path.read_bytes()
        imports = _project_imports(module, path, source)
        parsed[module] = (path, source, imports)
        queue.extend(m for imp in imports for m in imp.names_by_module)

    flat_names = _flat_names(list(parsed), entry_modules)
    from . import __version__

    files = {}
    for module, (path, source, imports) in parsed.items():
        package_dir = path.parent.parent
        header = (
            f"# Generated by fsm_hf.hub (fsm-hf {__version__}) from {path.relative_to(package_dir).as_posix()}, "
            "with imports of fsm-hf modules rewritten\n# to the flat relative imports of transformers' "
            "trust_remote_code loader. Edit fsm-hf's source, not this copy.\n"
        )
        files[f"{flat_names[module]}.py"] = header + _rewrite_imports(source, imports, flat_names, path)
    return files, flat_names


def _module_path(module: str, requested_by: Optional[str]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        where = f" (imported by {requested_by})" if requested_by else ""
        raise RemoteCodeBundleError(f"Cannot bundle module {module!r}{where}: no Python source file found for it.")
    return Path(spec.origin)


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _package_exports(package: str) -> Dict[str, str]:
    """``name -> defining module`` for the names a package's ``__init__`` imports from its submodules."""
    path = _module_path(package, requested_by=None)
    exports = {}
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            target = _absolute_module(package, True, node)
            if target and target.split(".")[0] in PROJECT_PACKAGES:
                for alias in node.names:
                    exports[alias.asname or alias.name] = target
    return exports


def _absolute_module(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _project_imports(module: str, path: Path, source: bytes) -> List[_ProjectImport]:
    """Every import of a project module in ``module``'s source (top level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_PACKAGES:
                    raise RemoteCodeBundleError(
                        f"{where}: `import {alias.name}` cannot be bundled for trust_remote_code; write "
                        f"`from {alias.name.rsplit('.', 1)[0]} import ...` instead."
                    )
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _absolute_module(module, False, node)
        if not target or target.split(".")[0] not in PROJECT_PACKAGES:
            continue
        names_by_module: Dict[str, List[ast.alias]] = {}
        if _is_package(target):
            exports = _package_exports(target)
            for alias in node.names:
                if alias.name == "*" or importlib.util.find_spec(f"{target}.{alias.name}") is not None:
                    raise RemoteCodeBundleError(
                        f"{where}: `from {target} import {alias.name}` imports a module (or *); import names "
                        f"from the module instead (`from {target}.<module> import <name>`)."
                    )
                if alias.name not in exports:
                    raise RemoteCodeBundleError(
                        f"{where}: {alias.name!r} is not re-exported from a submodule by {target}/__init__.py."
                    )
                names_by_module.setdefault(exports[alias.name], []).append(alias)
        else:
            _module_path(target, requested_by=where)
            names_by_module[target] = list(node.names)
        found.append(_ProjectImport(node, names_by_module))
    return found


def _flat_names(modules: List[str], entry_modules: Sequence[str]) -> Dict[str, str]:
    short = {m: m.rsplit(".", 1)[-1] for m in modules}
    counts: Dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    flat = {m: (short[m] if counts[short[m]] == 1 or m in entry_modules else m.replace(".", "_")) for m in modules}
    if len(set(flat.values())) != len(flat):
        raise RemoteCodeBundleError(f"Bundled module names collide: {flat}.")
    return flat


def _rewrite_imports(source: bytes, imports: List[_ProjectImport], flat_names: Dict[str, str], path: Path) -> str:
    """Replace each project import statement by ``from .<flat> import ...`` lines (same indentation)."""
    lines = source.splitlines(keepends=True)
    # ast offsets are utf-8 byte offsets: edit bytes, last statement first so earlier offsets stay valid.
    for imp in sorted(imports, key=lambda i: (i.node.lineno, i.node.col_offset), reverse=True):
        node = imp.node
        first, last = node.lineno - 1, node.end_lineno - 1
        indent = lines[first][: node.col_offset]
        if indent.strip():
            raise RemoteCodeBundleError(
                f"{path.name}:{node.lineno}: put this import on its own line to bundle it for trust_remote_code."
            )
        statements = [
            f"from .{flat_names[module]} import "
            + ", ".join(a.name if not a.asname else f"{a.name} as {a.asname}" for a in aliases)
            for module, aliases in imp.names_by_module.items()
        ]
        replacement = ("\n" + indent.decode()).join(statements).encode()
        lines[first : last + 1] = [indent + replacement + lines[last][node.end_col_offset :]]
    return b"".join(lines).decode("utf-8")
