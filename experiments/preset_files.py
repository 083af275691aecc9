"""Presets as plain TOML data files: one file per environment, one table per algorithm.

Hyperparameters are data, not code: a preset can be read, diffed and edited without Python,
and ``eggroll-rl train`` and ``eggroll-rl compare`` read the same files, so there is one source
of truth (``eggroll_rl.agents.presets`` is a view of them). A file names the env, the env-step
budget every algorithm shares (the comparison is only fair at equal budgets), the optional
pip extra, a success threshold where one exists, a note on where the values come from, and
``[eggroll]``, ``[openes]``, ``[ppo]`` tables of config fields (absent fields keep the
config's defaults). Loading checks every field's name and type against the config dataclass,
then the config's own ``validate``, and an error names the file, the field and what was
expected.

Bundled presets live in ``eggroll_rl/experiments/task-presets/<suite>/<name>.toml`` and are named
by their env id (``gymnax/CartPole-v1``); any other ``.toml`` path loads the same way.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
import types
import typing
from typing import Any, Optional, Union

from eggroll_rl.agents.es import ESConfig
from eggroll_rl.agents.ppo import PPOConfig

PRESET_DIR = pathlib.Path(__file__).parent / "task-presets"  # not an identifier: data only
ALGOS: dict[str, type] = {"eggroll": ESConfig, "openes": ESConfig, "ppo": PPOConfig}
# Fields set by the preset's top level or by the algorithm's name, never inside a table.
_RESERVED = {"total_steps", "algo"}
_TOP_LEVEL: dict[str, tuple[type, bool]] = {  # field -> (type, required)
    "env": (str, True),
    "total_steps": (int, True),
    "cpu_steps": (int, False),
    "threshold": (float, False),
    "extra": (str, False),
    "note": (str, True),
    "tune_steps": (int, False),
    "tune_trials": (int, False),
    "tune_population": (tuple[int, ...], False),
    "seeds_in_sequence": (bool, False),
    "xla_cpu_options": (bool, False),
}


class PresetError(ValueError):
    """A preset file that cannot be used: the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One env's preset: the shared budget and each algorithm's config overrides."""

    path: pathlib.Path
    env: str
    total_steps: int
    note: str
    algos: dict[str, dict[str, Any]]
    cpu_steps: Optional[int] = None  # the budget of the `paper-cpu` suite (fits a 2-core CPU)
    threshold: Optional[float] = None  # eval return that counts as solved (time to threshold)
    extra: Optional[str] = None  # pip extra that installs the env's suite
    # The per-task random search of the `paper-cpu` suite (experiments/tune.py): env steps per
    # trial (one seed), trials per ES algorithm, and the population sizes it draws from.
    tune_steps: Optional[int] = None
    tune_trials: Optional[int] = None
    tune_population: Optional[tuple[int, ...]] = None
    # Run the seeds of a comparison one after the other (LoopConfig.seeds_in_sequence): for
    # tasks whose seeds' episode lengths drift apart.
    seeds_in_sequence: bool = False
    # Compile a comparison's and a search's programs with the opt-in XLA:CPU options
    # (eggroll_rl.xla.cpu_options; LoopConfig.xla_cpu_options): for tasks whose env physics
    # runs several times faster with them on a CPU. The same for every algorithm of the task.
    xla_cpu_options: bool = False

    @property
    def name(self) -> str:
        """The preset's name: its env id."""
        return self.env

    def overrides(self, algo: str, total_steps: Optional[int] = None) -> dict[str, Any]:
        """Keyword arguments of ``algo``'s config: the table plus the budget (and ``algo``)."""
        if algo not in self.algos:
            raise PresetError(
                f"{self.path}: no [{algo}] table; this preset has {sorted(self.algos)}."
            )
        fields = dict(self.algos[algo])
        fields["total_steps"] = self.total_steps if total_steps is None else total_steps
        if ALGOS[algo] is ESConfig:
            fields["algo"] = algo
        return fields

    def config(self, algo: str, total_steps: Optional[int] = None, **extra_overrides):
        """The validated ``ESConfig``/``PPOConfig`` for ``algo``."""
        fields = {**self.overrides(algo, total_steps), **extra_overrides}
        return _build(ALGOS[algo], fields, f"{self.path}: [{algo}]")


def names() -> list[str]:
    """Every bundled preset's name (its env id), sorted."""
    return sorted(_name_of(path) for path in PRESET_DIR.rglob("*.toml"))


def _name_of(path: pathlib.Path) -> str:
    return path.relative_to(PRESET_DIR).with_suffix("").as_posix()


def path_of(name: str) -> pathlib.Path:
    """The file of a bundled preset name, or ``name`` itself if it is a ``.toml`` path."""
    if name.endswith(".toml"):
        path = pathlib.Path(name)
        if not path.is_file():
            raise PresetError(f"preset file {path} does not exist.")
        return path
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(name, names(), n=5, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise PresetError(
            f"no preset named {name!r}.{hint} Presets are named by env id "
            f"({len(names())} bundled in {PRESET_DIR}), or pass a path ending in .toml."
        )
    return path


def load(name: Union[str, pathlib.Path]) -> Preset:
    """Read and validate a preset by name (env id) or path; raises ``PresetError``."""
    path = name if isinstance(name, pathlib.Path) else path_of(name)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise PresetError(f"{path}: not valid TOML: {error}") from None
    top: dict[str, Any] = {}
    algos: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in ALGOS:
            if not isinstance(value, dict):
                raise PresetError(f"{path}: {key} must be a table ([{key}]), got {value!r}.")
            algos[key] = check_table(str(path), key, value)
        elif key in _TOP_LEVEL:
            top[key] = _coerce(value, _TOP_LEVEL[key][0], f"{path}: {key}")
        else:
            known = sorted(_TOP_LEVEL) + [f"[{algo}]" for algo in ALGOS]
            raise PresetError(
                f"{path}: unknown field {key!r}; a preset's top level takes {', '.join(known)}."
            )
    missing = [key for key, (_, required) in _TOP_LEVEL.items() if required and key not in top]
    if missing:
        raise PresetError(f"{path}: missing required field(s) {', '.join(missing)}.")
    for key in ("total_steps", "cpu_steps", "tune_steps", "tune_trials"):
        if key in top and top[key] < 1:
            raise PresetError(f"{path}: {key} must be >= 1, got {top[key]}.")
    if any(size < 2 or size % 2 for size in top.get("tune_population", ())):
        raise PresetError(f"{path}: tune_population sizes must be even and >= 2 (antithetic "
                          f"pairs), got {list(top['tune_population'])}.")
    preset = Preset(path=path, algos=algos, **top)
    for algo in algos:
        preset.config(algo)  # every table must build a valid config
    return preset


def load_all() -> list[Preset]:
    """Every bundled preset, validated."""
    return [load(name) for name in names()]


def for_env(env_id: str) -> Optional[Preset]:
    """The bundled preset of ``env_id``, or None."""
    path = PRESET_DIR / f"{env_id}.toml"
    return load(path) if path.is_file() else None


def check_table(where: str, algo: str, table: dict) -> dict:
    """``table`` with every field checked against ``algo``'s config (names and types)."""
    hints = typing.get_type_hints(ALGOS[algo])
    fields = {f.name for f in dataclasses.fields(ALGOS[algo])} - _RESERVED
    checked = {}
    for key, value in table.items():
        if key not in fields:
            raise PresetError(
                f"{where}: [{algo}] {key} "
                + ("belongs at the top level (shared by every algorithm)." if key in _RESERVED else
                   f"is not a field of {ALGOS[algo].__name__}; known fields: "
                   f"{', '.join(sorted(fields))}.")
            )
        checked[key] = _coerce(value, hints[key], f"{where}: [{algo}] {key}")
    return checked


def _coerce(value: Any, expected: Any, where: str) -> Any:
    """``value`` as type ``expected`` (int, float, bool, str, a Literal of choices or tuple[int, ...]) or an error."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):  # Optional[X]: TOML has no null, so X
        (expected, *_) = [arg for arg in typing.get_args(expected) if arg is not type(None)]
        return _coerce(value, expected, where)
    if origin is typing.Literal:
        choices = typing.get_args(expected)
        return value if value in choices else _wrong(value, f"one of {list(choices)}", where)
    if origin is tuple:
        (item, *_) = typing.get_args(expected)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        return _wrong(value, f"an array of {item.__name__} (e.g. [256, 256])", where)
    if expected is bool:
        return value if isinstance(value, bool) else _wrong(value, "a bool (true/false)", where)
    if isinstance(value, bool):
        return _wrong(value, f"{expected.__name__}", where)
    if expected is float and isinstance(value, (int, float)):
        return float(value)
    if expected is int and isinstance(value, int):
        return value
    if expected is str and isinstance(value, str):
        return value
    return _wrong(value, expected.__name__, where)


def _wrong(value: Any, expected: str, where: str):
    raise PresetError(
        f"{where} = {value!r} has type {type(value).__name__}, expected {expected}."
    )


def _build(cls: type, fields: dict, where: str):
    try:
        config = cls(**fields)
        config.validate()
    except (TypeError, ValueError) as error:
        raise PresetError(f"{where}: {error}") from None
    return config


def toml_value(value: Any) -> str:
    """A scalar or list as TOML text (``True`` -> ``true``, ``"adam"`` -> ``"adam"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"no TOML text for {value!r}")


def replace_fields(text: str, algo: str, fields: dict[str, Any], comment: str) -> str:
    """A preset's text with ``fields`` set in its ``[algo]`` table and ``comment`` as the
    comment line above the table (replacing such a line written before).

    Edits the text rather than re-serialising the parsed file, so every other line (notes,
    comments, other tables) stays as written; ``tomllib`` only reads TOML.
    """
    lines = text.split("\n")
    header = f"[{algo}]"
    if header not in lines:
        raise PresetError(f"no {header} table to write {sorted(fields)} into.")
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1  # the next table's comments and blank lines stay with it
    table = lines[start + 1:end]
    for name, value in fields.items():
        line = f"{name} = {toml_value(value)}"
        at = [i for i, old in enumerate(table) if old.split("=")[0].strip() == name]
        if at:
            table[at[0]] = line
        else:
            table.append(line)
    above = start
    if above > 0 and lines[above - 1].startswith("# Best of"):
        above -= 1
    return "\n".join(lines[:above] + [f"# {comment}", header] + table + lines[end:])
