"""The options of a run, declared once.

``harness run``'s flags, the keywords of ``harness.evaluate``/``harness.dry_run`` and the
keys of a ``--config`` YAML file are all built from :data:`RUN_OPTIONS` (and
:class:`~harness.config.RunConfig`, which holds the resolved run settings, is checked
against it by ``tests/test_options.py``), so an option added here is an option everywhere:
docs/python-api.md#adding-a-run-option says how.

Cheap to import (no numpy): the CLI builds its ``run`` command from it before ``--help``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, TypeVar

from harness.errors import HarnessError
from harness.validity import DEFAULT_MAX_INVALID_SHARE

DEFAULT_DATASET = "movielens-100k"

Scope = Literal["run", "execution", "command"]
"""``run``: a setting of the run (a :class:`~harness.config.RunConfig` field, a YAML key, a
flag, an API keyword); ``execution``: how the run is executed, never what it computes (a flag
and an API keyword, not in the YAML file or the resolved configuration); ``command``: how
the command is invoked (``--config``, ``--dry-run``)."""

F = TypeVar("F", bound=Callable[..., Any])
RECORDED = object()
"""The ``omitted_at`` of a setting that the resolved configuration records whatever its value."""


@dataclass(frozen=True)
class RunOption:
    """One option of ``harness run``: its name (the API keyword, YAML key and, with dashes,
    the flag), the types its value may have, its default and help, and where it applies."""

    name: str
    types: tuple[type, ...]
    """What a value may be (YAML, API); the first is the flag's type. ``Path`` options also
    take a string (YAML, API)."""
    help: str
    scope: Scope = "run"
    default: Any = None
    """The value when nobody gives one. A ``run`` flag and keyword default to ``None`` (not
    given: the YAML file's value, else this one); the others to this value."""
    metavar: str | None = None
    identity: bool = True
    """Whether the resolved value enters the configuration hash (``run`` options only:
    :data:`NOT_IDENTITY`)."""
    omitted_at: Any = RECORDED
    """A setting added after format 2 is left out of the resolved configuration (and so of
    the hash) while it has this value, so that earlier runs keep their hash and resume."""
    api: bool = True  # an evaluate()/dry_run() keyword (``--dry-run`` is harness.dry_run())
    takes_list: bool = False  # a YAML file and the API also take a list, joined with commas
    repeatable: bool = False  # the flag may be given more than once, the values joined so too

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def in_config(self) -> bool:
        """A :class:`~harness.config.RunConfig` field and a key of a ``--config`` file."""
        return self.scope == "run"

    @property
    def cli_default(self) -> Any:
        return None if self.scope == "run" else self.default

    def plain(self, value: Any) -> Any:
        """A path as the string the resolved configuration records; other values as given."""
        return os.fspath(value) if Path in self.types and value is not None else value

    def joined(self, value: Any) -> Any:
        """A list given for an option that takes one, as the comma-separated text it means
        (an empty one: not given); other values as given."""
        if not (self.takes_list or self.repeatable) or not isinstance(value, list | tuple):
            return value
        return ",".join(str(item) for item in value) or None

    def describe_types(self) -> str:
        """``an integer``, ``a number``, ...: what a wrong value is told it must be."""
        words = {int: "an integer", str: "a string", bool: "true or false", Path: "a path"}
        if float in self.types:
            return "a number"
        return " or ".join(dict.fromkeys(words[t] for t in self.types))

    def check(self, value: Any, where: str) -> None:
        """A :class:`HarnessError` unless ``value`` (not None) has one of the option's types.

        A bool is not an integer here (``perms: yes`` is a mistake), an int is a float."""
        accepted: tuple[type, ...] = self.types
        if Path in accepted:
            accepted = (*accepted, str, os.PathLike)
        if float in accepted:
            accepted = (*accepted, int)
        if isinstance(value, accepted) and (bool in self.types or not isinstance(value, bool)):
            return
        raise HarnessError(f"{where}'{self.name}' must be {self.describe_types()}, got {value!r}")


RUN_OPTIONS: tuple[RunOption, ...] = (
    # the order of `harness run --help`
    RunOption("reranker", (str,), "Reranker preset name or path to a preset YAML."),
    RunOption(
        "dataset",
        (str,),
        "Dataset card name or data folder [default: movielens-100k].",
        default=DEFAULT_DATASET,
    ),
    RunOption(
        "perms", (int,), "Random orders per query (strategy random) [default: 20].", default=20
    ),
    RunOption(
        "strategy",
        (str,),
        "random | identity | reversed | cyclic | sweep | exhaustive | fixed | templates "
        "[default: random].",
        default="random",
    ),
    RunOption(
        "count",
        (int,),
        "Seeded completions: per pin (fixed) [20], per position (sweep) [1 = the others in "
        "first-stage order], per partial template (templates) [1].",
        omitted_at=None,
    ),
    RunOption(
        "pin",
        (str,),
        "fixed: ITEM@POSITION to pin, ITEM a first-stage index or 'relevant' (the first "
        "judged-relevant candidate), POSITION 0-based, -1 = last [relevant@0].",
        omitted_at=None,
    ),
    RunOption(
        "templates",
        (Path,),
        "templates: a file with one JSON array per line of first-stage indices or null "
        "(null = filled by a seeded shuffle).",
        identity=False,  # where the file is; its content is hashed (templates_sha256)
        omitted_at=None,
    ),
    RunOption(
        "repeats",
        (int,),
        "Rerun the identity order R more times (in other batches): the noise floor each "
        "stability metric is shown beside and tested against [0].",
        default=0,
        omitted_at=0,
    ),
    RunOption(
        "target",
        (str,),
        "Adaptive sampling (random): METRIC=HALF_WIDTH, e.g. kendall_tau=0.02; each query gets "
        "--min-perms..--perms orders until the run-level 95% interval is that narrow "
        "(docs/adaptive.md).",
        omitted_at=None,
    ),
    RunOption(
        "min_perms",
        (int,),
        "Adaptive sampling: orders every query gets, 2 or more [3].",
        default=3,
        omitted_at=3,
    ),
    RunOption(
        "queries",
        (str, int),
        "N (the first N queries), id1,id2,... , @FILE (one id per line) or random:K (K drawn "
        "with --seed) [default: the dataset's].",
        metavar="N|IDS|@FILE|random:K",
        takes_list=True,
    ),
    RunOption(
        "model",
        (str,),
        "Replace the preset's model: ORG/NAME[@REVISION], a .gguf file or a model folder "
        "[default: the preset's].",
        metavar="MODEL",
        omitted_at=None,
    ),
    RunOption("depth", (int,), "Keep the top K first-stage candidates [default: all]."),
    RunOption(
        "relevance_level",
        (int,),
        "Grade from which binary metrics (MRR@10) count a candidate as relevant "
        "(trec_eval -l) [default: the dataset card's: 2 for TREC DL, else 1].",
        metavar="N",
        omitted_at=1,  # resolved (the flag, else the card's): 1 is what every earlier run meant
    ),
    RunOption("seed", (int,), "Permutation and bootstrap seed [0].", default=0),
    RunOption(
        "max_invalid_share",
        (float,),
        "The share of orders that may get invalid answers (a server's without log-probs or "
        "text after every retry, NaN log-probs); past it the run stops, keeping what it "
        "finished [0.05].",
        default=DEFAULT_MAX_INVALID_SHARE,
        metavar="SHARE",
        identity=False,  # it bounds the run and computes nothing
        omitted_at=DEFAULT_MAX_INVALID_SHARE,
    ),
    RunOption(
        "metrics_module",
        (str,),
        "Repeatable: an importable module whose METRICS (MetricSpecs with kernels) the run "
        "computes beside the built-ins (docs/metrics.md).",
        metavar="MODULE",
        identity=False,  # computed from the samples, which it does not change
        omitted_at=None,
        takes_list=True,
        repeatable=True,
    ),
    RunOption(
        "out",
        (Path,),
        "Run folder; rerun with the same folder to resume [runs/<name>].",
        identity=False,  # where the run is written, not what it is
    ),
    RunOption("device", (str,), "cpu or cuda[:N] [default: cpu].", default="cpu"),
    RunOption(
        "batch_size",
        (int,),
        "Orders per reranker call [default: chosen per reranker: 4; rankgpt up to 16 orders of "
        "a query in equal calls, as memory allows].",
    ),
    RunOption(
        "config",
        (Path,),
        "run.yaml with any of the run's settings (not the execution flags from --dry-run on); "
        "flags override it.",
        scope="command",
    ),
    RunOption(
        "dry_run",
        (bool,),
        "Print the pending orders and their cost, run nothing, write nothing: an HTTP "
        "backend's requests and prompt tokens; a local model's forward passes, prompt and "
        "generated tokens and a time estimate from a short measured probe.",
        scope="command",
        default=False,
        api=False,  # harness.dry_run()
    ),
    RunOption(
        "log_prompts",
        (bool,),
        "Write every model call's exact prompt and raw output to prompts.jsonl in the run "
        "folder (opt-in; changes no number).",
        scope="execution",
        default=False,
    ),
    RunOption(
        "executor",
        (str,),
        "local (this process) or ray (a pool of Ray actors, one reranker each; needs "
        "harness-rerank[ray]); the results are the same.",
        scope="execution",
        default="local",
    ),
    RunOption(
        "workers",
        (int,),
        "ray: actors [default: as many as the cluster's GPUs or CPUs fit].",
        scope="execution",
    ),
    RunOption(
        "ray_address",
        (str,),
        "ray: cluster to join (e.g. auto) [default: start a local one].",
        scope="execution",
    ),
    RunOption(
        "worker_gpus",
        (float,),
        "ray: GPUs per actor [default: the preset's resources, else 1 with --device cuda].",
        scope="execution",
    ),
    RunOption(
        "worker_cpus",
        (float,),
        "ray: CPUs per actor [default: the preset's resources, else 1].",
        scope="execution",
    ),
)

OPTIONS: Mapping[str, RunOption] = {option.name: option for option in RUN_OPTIONS}
CONFIG_OPTIONS = tuple(option for option in RUN_OPTIONS if option.in_config)
"""The run settings: :class:`~harness.config.RunConfig`'s fields and a YAML file's keys."""
API_OPTIONS = tuple(option for option in RUN_OPTIONS if option.api and option.name != "reranker")
"""The keywords of ``evaluate``/``dry_run`` (the reranker is their first argument)."""
OMITTED_AT = {o.name: o.omitted_at for o in CONFIG_OPTIONS if o.omitted_at is not RECORDED}
"""Settings added after format 2 was fixed: left out of the resolved configuration (and so of
the config hash) while at these values, so earlier runs keep their hash and still resume."""
NOT_IDENTITY = frozenset(o.name for o in CONFIG_OPTIONS if not o.identity)
"""Resolved settings that are not part of the configuration's hash (``identity=False``)."""


class UnknownOption(HarnessError, TypeError):
    """A keyword ``evaluate``/``dry_run`` does not take: a TypeError, as Python's own is,
    that the CLI and notebooks show as one line."""


def check_keywords(function: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every API keyword, as given or at its default; an :class:`UnknownOption` naming the
    first that is not one (with the nearest that is), or a :class:`HarnessError` for a
    value of the wrong type."""
    names = [option.name for option in API_OPTIONS]
    for name in given:
        if name not in names:
            near = get_close_matches(name, names, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"it takes {', '.join(names)}"
            if name == "dry_run":
                hint = "--dry-run is harness.dry_run()"
            raise UnknownOption(f"{function}() got an unknown option {name!r}; {hint}")
    values = {}
    for option in API_OPTIONS:
        value = option.joined(given.get(option.name, option.cli_default))
        if value is not None:
            option.check(value, f"{function}(): ")
        values[option.name] = option.plain(value)
    return values


def config_flags(
    flags: Mapping[str, Any], options: tuple[RunOption, ...] = CONFIG_OPTIONS
) -> dict[str, Any]:
    """The run settings among ``harness run``'s parsed flags, as ``merge_config`` takes them."""
    return {o.name: o.plain(o.joined(flags[o.name])) for o in options if o.in_config}


def takes_options(function: F) -> F:
    """Show the options a ``**options`` API function takes in its signature, in place of
    ``**options`` (what ``help()``, notebooks and ``inspect.signature`` show)."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    at = next(i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD)
    parameters[at : at + 1] = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=option.cli_default,
            annotation=_annotation(option, api=True),
        )
        for option in API_OPTIONS
    ]
    function.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return function


def cli_signature(options: tuple[RunOption, ...] = RUN_OPTIONS) -> inspect.Signature:
    """The parameters typer reads for ``harness run``: one ``typer.Option`` per option."""
    from typing import Annotated

    import typer

    parameters = []
    for option in options:
        switch = (option.cli_flag,) if bool in option.types else ()  # an on-switch: no --no-...
        info = typer.Option(*switch, help=option.help, metavar=option.metavar)
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=option.cli_default,
                annotation=Annotated[_annotation(option, api=False), info],
            )
        )
    return inspect.Signature(parameters, return_annotation=None)


def _annotation(option: RunOption, *, api: bool) -> Any:
    """The flag's type (its first; a list of it for a repeatable flag), or every type the
    API takes, ``| None`` unless the option defaults to a value."""
    kinds: tuple[type, ...] = option.types if api else option.types[:1]
    if api and Path in kinds:
        kinds = (str, Path)
    if option.repeatable and not api:
        return list[kinds[0]] | None  # type: ignore[valid-type]
    annotation: Any = kinds[0]
    for kind in (*kinds[1:], *([list[str]] if api and option.takes_list else [])):
        annotation = annotation | kind
    return annotation if option.cli_default is not None else annotation | None
