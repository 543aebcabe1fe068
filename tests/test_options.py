"""The run's options are declared once (harness.options): every place that spells them out
(the command line, the Python API, RunConfig and its YAML keys, the runner's hash rules, the
docs) is checked against that declaration, so a drift fails here."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

import pytest
import typer
import typer.main

import harness
from harness.cli import app
from harness.config import RunConfig, merge_config
from harness.errors import HarnessError
from harness.options import (
    API_OPTIONS,
    CONFIG_OPTIONS,
    OPTIONS,
    RUN_OPTIONS,
    RunOption,
    UnknownOption,
    check_keywords,
    cli_signature,
    config_flags,
)

REPO = Path(__file__).resolve().parents[1]


def _run_command():
    group = typer.main.get_command(app)
    return group.commands["run"]  # type: ignore[attr-defined]


def test_run_config_holds_exactly_the_declared_run_settings_with_their_defaults_and_types():
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    assert set(fields) == {option.name for option in CONFIG_OPTIONS}
    hints = typing.get_type_hints(RunConfig)
    for option in CONFIG_OPTIONS:
        assert fields[option.name].default == option.default, option.name
        held = set(typing.get_args(hints[option.name])) or {hints[option.name]}
        declared = {str if kind is Path else kind for kind in option.types}  # paths held as str
        assert held - {types.NoneType} == declared, option.name


def test_the_hash_ignores_exactly_the_options_declared_outside_the_identity():
    from harness.prepare import identity_hash
    from harness.rerankers.registry import resolve_preset

    preset = resolve_preset("identity")
    resolved = {"perms": 20, "seed": 0}
    digest = identity_hash(resolved, preset, "f")
    outside = {o.name for o in CONFIG_OPTIONS if not o.identity}
    assert {"out", "templates", "max_invalid_share", "metrics_module"} <= outside
    for name in outside:
        assert identity_hash({**resolved, name: "x"}, preset, "f") == digest, name
    for name in ("perms", "seed"):
        assert identity_hash({**resolved, name: 5}, preset, "f") != digest, name


def test_the_run_command_has_exactly_the_declared_flags():
    params = {param.name: param for param in _run_command().params}
    assert list(params) == [option.name for option in RUN_OPTIONS]
    for option in RUN_OPTIONS:
        param = params[option.name]
        assert param.opts == [option.cli_flag], option.name
        assert param.default == option.cli_default, option.name
        assert param.help == option.help, option.name
        if option.metavar:
            assert param.metavar == option.metavar


def test_evaluate_and_dry_run_take_every_declared_keyword_and_nothing_else():
    names = [option.name for option in API_OPTIONS]
    evaluate = inspect.signature(harness.evaluate).parameters
    # metrics= (MetricSpec entries) and progress= are Python-only, as objects no flag can be
    assert list(evaluate) == ["reranker", "metrics", "progress", *names]
    assert list(inspect.signature(harness.dry_run).parameters) == ["reranker", "metrics", *names]
    for option in API_OPTIONS:
        assert evaluate[option.name].default == option.cli_default, option.name
    # every flag of `harness run` is a keyword, but --dry-run, which is harness.dry_run()
    flags = {option.name for option in RUN_OPTIONS} - {"reranker", "dry_run"}
    assert flags == set(names)


def test_a_suites_design_names_run_settings():
    from harness.suites.spec import _DESIGN_FIELDS, _TASK_FIELDS

    settings = {option.name for option in CONFIG_OPTIONS}
    assert set(_DESIGN_FIELDS) <= settings
    assert {"dataset", "queries", "depth", "seed"} <= set(_TASK_FIELDS) & settings


def test_the_python_api_docs_name_every_keyword():
    text = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_]+)`", text))
    assert {option.name for option in API_OPTIONS} <= documented


def test_an_unknown_keyword_is_named_with_the_nearest_known_one():
    with pytest.raises(UnknownOption, match=r"evaluate\(\) got an unknown option 'perm'; did "):
        check_keywords("evaluate", {"perm": 3})
    with pytest.raises(TypeError, match=r"'dry_run'; --dry-run is harness.dry_run\(\)"):
        check_keywords("evaluate", {"dry_run": True})
    with pytest.raises(HarnessError, match="'frobnicate'; it takes dataset, perms, "):
        check_keywords("dry_run", {"frobnicate": 1})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"perms": "5"}, "evaluate(): 'perms' must be an integer, got '5'"),
        ({"perms": True}, "'perms' must be an integer, got True"),
        ({"max_invalid_share": "0.1"}, "'max_invalid_share' must be a number"),
        ({"queries": 2.5}, "'queries' must be a string or an integer"),
        ({"out": 3}, "'out' must be a path, got 3"),
        ({"log_prompts": "yes"}, "'log_prompts' must be true or false"),
    ],
)
def test_a_keyword_of_the_wrong_type_is_a_clear_error(given, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        check_keywords("evaluate", given)


def test_keywords_are_resolved_as_the_command_line_resolves_its_flags():
    values = check_keywords(
        "evaluate", {"queries": ["q1", "q2"], "out": Path("runs/x"), "max_invalid_share": 0}
    )
    assert values["queries"] == "q1,q2" and values["out"] == "runs/x"
    assert values["max_invalid_share"] == 0 and values["perms"] is None
    assert values["executor"] == "local" and values["log_prompts"] is False


def test_a_null_in_the_yaml_file_is_the_default(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("reranker: identity\nperms: null\nbatch-size: ~\n", encoding="utf-8")
    resolved = merge_config(config, {})
    assert (resolved.perms, resolved.batch_size) == (OPTIONS["perms"].default, None)


def test_every_flag_of_the_run_command_is_documented():
    text = "\n".join(
        path.read_text(encoding="utf-8") for path in [REPO / "README.md", *REPO.glob("docs/*.md")]
    )
    missing = [o.cli_flag for o in RUN_OPTIONS if not re.search(rf"`{o.cli_flag}\b", text)]
    assert not missing


def test_a_repeatable_flag_is_one_comma_separated_setting():
    """What an option like --metrics-module needs: given twice on the command line, or as a
    YAML or Python list, it is one comma-separated setting (as a list of query ids is)."""
    from typer.testing import CliRunner

    option = RunOption("modules", (str,), "Repeatable.", repeatable=True, takes_list=True)
    seen = []

    def command(**flags):
        seen.append(config_flags(flags, (option,)))

    command.__signature__ = cli_signature((option,))  # type: ignore[attr-defined]
    one = typer.Typer()
    one.command()(command)
    assert CliRunner().invoke(one, ["--modules", "a.b", "--modules", "c"]).exit_code == 0
    assert CliRunner().invoke(one, []).exit_code == 0
    assert seen == [{"modules": "a.b,c"}, {"modules": None}]
    assert option.joined(["a.b", "c"]) == "a.b,c" and option.joined("a.b") == "a.b"


def test_a_list_of_query_ids_in_the_yaml_file_is_a_selection(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("reranker: identity\nqueries: [q1, q2]\n", encoding="utf-8")
    assert merge_config(config, {}).queries == "q1,q2"
