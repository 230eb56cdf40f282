"""One name per option across ``lnlab``'s commands, real boolean flags, ``--version``,
``--label`` for file datasets, full column lists, install hints that install what they name,
and docs that only name options that exist.

The command tree is walked by introspection (typer builds a click command from
``lnlab.cli.app``), so a new command or option is checked without touching this file.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import typer.main

from lnlab.cli import app, main
from lnlab.errors import LnlabError

ROOT = Path(__file__).resolve().parents[1]

# canonical option name -> spellings of the same concept that no visible option may use
# (a hidden, deprecated alias may, when its command also has the canonical option).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "--num-classes": ("--classes", "--n-classes", "--nclasses", "--num-class"),
    "--batch-size": ("--batch", "--bs", "--batchsize"),
    "--input-shape": ("--shape", "--input-size", "--in-shape"),
    "--vocab-size": ("--vocab", "--n-vocab"),
    "--layers": ("--num-layers", "--n-layers", "--blocks"),
    "--threads": ("--num-threads", "--n-threads", "--nthreads"),
    "--workers": ("--jobs", "--num-workers", "--n-workers"),
    "--seed": ("--random-seed", "--rng-seed"),
    "--seeds": ("--n-seeds", "--num-seeds"),
    "--experiment": ("--exp", "--experiments"),
    "--device": ("--devices", "--gpu", "--cuda"),
    "--config": ("--config-file", "--cfg"),
    "--label": ("--label-column", "--label-col", "--target"),
    "--out": ("--output", "--out-dir", "--output-dir", "--outdir"),
    "--json-out": ("--json-file", "--json-path", "--json-output"),
    "--csv-out": ("--csv", "--csv-file", "--csv-path"),
    "--epochs-csv-out": ("--epochs-csv",),
    "--plot-out": ("--plot", "--figure"),
}
CANONICAL_OF = {s: c for c, syns in SYNONYMS.items() for s in syns}
# Option names that are an output format: they print that format to stdout (a flag); a file
# in that format is written by --FORMAT-out FILE.
FORMAT_NAMES = {"--json", "--csv", "--yaml", "--html", "--markdown", "--parquet"}


def commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(command path, leaf command) for every command, e.g. (("bench", "norms"), cmd)."""
    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, cmd

    return walk(typer.main.get_command(app), ())


ALL = list(commands())
IDS = [" ".join(p) for p, _ in ALL]


def options(cmd: Any, *, hidden: bool = False) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option"
            and bool(getattr(p, "hidden", False)) == hidden]


def long_names(p: Any) -> list[str]:
    return [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


def is_bool(p: Any) -> bool:
    """A boolean option, whichever click flavour typer uses (its own or click's)."""
    desc = getattr(p, "type_descriptor", None)
    if desc is not None:
        return desc.annotation is bool or bool(p.is_flag)
    return getattr(p.type, "name", "") == "boolean" or bool(p.is_flag)


def test_walk_finds_every_command():
    assert {"train", "inspect", "audit", "bench norms", "bench train", "runs",
            "lnnet construct", "plan", "norms", "export"} <= set(IDS)


def test_one_name_per_concept():
    bad = []
    for path, cmd in ALL:
        visible = {n for p in options(cmd) for n in long_names(p)}
        for n in visible & CANONICAL_OF.keys():
            bad.append(f"lnlab {' '.join(path)} {n}: call it {CANONICAL_OF[n]}")
        for p in options(cmd, hidden=True):
            for n in long_names(p):
                if CANONICAL_OF.get(n) not in visible:
                    bad.append(f"lnlab {' '.join(path)}: hidden {n} is no alias of a visible "
                               f"option")
    assert not bad, bad


def value_type(p: Any) -> str:
    """``flag``, or the type of one value (``int``, ``Path``; a repeatable option's item)."""
    if p.is_flag:
        return "flag"
    desc = getattr(p, "type_descriptor", None)
    if desc is None:  # click's own parameters
        return str(getattr(p.type, "name", p.type))
    ann = desc.annotation
    if get_origin(ann) is list:
        (ann,) = get_args(ann)
    return getattr(ann, "__name__", str(ann))


def test_same_name_same_type_and_short_flags_mean_one_thing():
    kinds: dict[str, set[str]] = defaultdict(set)
    shorts: dict[str, set[str]] = defaultdict(set)
    for _, cmd in ALL:
        for p in options(cmd):
            names = long_names(p)
            for n in names:
                kinds[n].add(value_type(p))
            for s in (o for o in p.opts if not o.startswith("--")):
                shorts[s].add(names[0])
    assert {n: k for n, k in kinds.items() if len(k) > 1} == {}
    assert {s: n for s, n in shorts.items() if len(n) > 1} == {}


def test_no_option_takes_a_boolean_value():
    bad = [f"lnlab {' '.join(path)} {p.opts[0]}" for path, cmd in ALL
           for p in cmd.params if p.param_type_name == "option" and is_bool(p)
           and not (p.is_flag and not getattr(p, "count", False))]
    assert not bad, bad
    # every --NAME/--no-NAME pair is the same flag, negated
    for _, cmd in ALL:
        for p in options(cmd):
            for pos, neg in zip(p.opts, p.secondary_opts, strict=False):
                assert neg == "--no-" + pos[2:], (pos, neg)


def test_format_named_options_print_and_files_are_dash_out():
    seen_json = 0
    for path, cmd in ALL:
        for p in options(cmd):
            for n in long_names(p):
                where = f"lnlab {' '.join(path)} {n}"
                if n in FORMAT_NAMES:
                    assert p.is_flag, f"{where} must print to stdout (a flag), not take a file"
                if n.endswith("-out") or n == "--out":
                    assert value_type(p) in ("Path", "path"), f"{where} must take a path"
                if n == "--json":
                    seen_json += 1
                    assert "JSON" in (p.help or "") and "stdout" in (p.help or ""), where
    assert seen_json >= 5


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=IDS)
def test_help_shows_no_value_for_flags(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    # typer's rich help writes a flag's type as <bool>, as if it took one; lnlab's own flags
    # hide it (the built-in --help line is typer's and left alone).
    bad = [line for line in out.splitlines() if "<bool>" in line and "--help" not in line]
    assert not bad, bad


def test_flags_reject_a_value(capsys):
    assert main(["norms", "--json", "true"]) == 2
    assert "true" in capsys.readouterr().err
    assert main(["norms", "--no-json"]) == 0
    assert "norm zoo" in capsys.readouterr().out


def test_json_prints_json_to_stdout(capsys):
    assert main(["norms", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "layernorm" for r in rows)


def test_version(capsys):
    from importlib.metadata import PackageNotFoundError, version

    import lnlab

    try:
        expected = version("lnlab")
    except PackageNotFoundError:
        expected = lnlab.__version__
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"lnlab {expected}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", expected)


def _sample(p: Any) -> str:
    desc = getattr(p, "type_descriptor", None)
    ann = desc.annotation if desc is not None else None
    return {int: "3", float: "0.5"}.get(ann, "some-file.txt")


@pytest.mark.parametrize("path,cmd", [(p, c) for p, c in ALL if options(c, hidden=True)],
                         ids=[i for i, (_, c) in zip(IDS, ALL, strict=True)
                              if options(c, hidden=True)])
def test_deprecated_aliases_set_the_new_option(path, cmd, capsys):
    required = ["x" for p in cmd.params if p.param_type_name == "argument" and p.required]
    by_name = {n: p for p in options(cmd) for n in long_names(p)}
    for alias in options(cmd, hidden=True):
        (old,) = long_names(alias)
        new = by_name[CANONICAL_OF[old]]
        value = _sample(new)
        via_new = cmd.make_context(path[-1], [*required, new.opts[0], value]).params
        via_old = cmd.make_context(path[-1], [*required, old, value]).params
        assert via_old == via_new and via_old[new.name] != new.default, old
        assert f"{old} is deprecated; use {new.opts[0]}" in capsys.readouterr().err


def test_deprecated_alias_end_to_end(capsys):
    args = ["inspect", "mlp:depth=1,width=8", "--json"]
    assert main([*args, "--num-classes", "3"]) == 0
    new = capsys.readouterr().out
    assert main([*args, "--classes", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.out == new and "deprecated" in cap.err
    assert main([*args]) == 0
    assert capsys.readouterr().out != new  # the class count did reach the model


def test_hf_layers_help_states_the_model_default():
    from lnlab.models import HF_DEFAULTS

    for path, cmd in ALL:
        if path[0] in ("inspect", "audit"):
            (layers,) = [p for p in options(cmd) if "--layers" in p.opts]
            assert f"default {HF_DEFAULTS['layers']}," in layers.help


# --- file datasets: --label and the column list ---------------------------------------------

def _table(path: Path, n_cols: int, rows: int = 60) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(n_cols)]
    lines = [",".join([*cols, "target"])]
    for r in range(rows):
        lines.append(",".join([*(f"{v:.4f}" for v in rng.standard_normal(n_cols)),
                               str(r % 3)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_label_option_is_the_spec_label(tmp_path, capsys):
    pytest.importorskip("pandas")
    csv = _table(tmp_path / "t.csv", 4)
    common = ["train", "--model", "mlp:depth=1,width=8", "--epochs", "1", "--batch-size",
              "16", "--threads", "1", "--json"]
    assert main([*common, "--data", str(csv), "--label", "target"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main([*common, "--data", f"{csv}:label=target"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["config"]["data"] == b["config"]["data"] == f"{csv}:label=target"
    assert a["epochs"][0]["train_loss"] == b["epochs"][0]["train_loss"]
    # --label joins options already in the spec
    assert main([*common, "--data", f"{csv}:test_frac=0.5", "--label", "target"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["config"]["data"] == f"{csv}:test_frac=0.5,label=target"


@pytest.mark.parametrize("data,label,msg", [
    ("{csv}:label=target", "target", "both name the label column"),
    ("{csv}", "a,b", "--label 'a,b'"),
    ("{csv}", "nope", "f0, f1, f2, f3, target"),
])
def test_label_errors_are_one_line(tmp_path, capsys, data, label, msg):
    pytest.importorskip("pandas")
    csv = _table(tmp_path / "t.csv", 4)
    assert main(["train", "--data", data.format(csv=csv), "--label", label,
                 "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lnlab: error:") and err.count("\n") == 1 and msg in err


def test_missing_column_lists_every_column(tmp_path):
    pytest.importorskip("pandas")
    from lnlab.data import load_dataset

    csv = _table(tmp_path / "wide.csv", 40, rows=10)
    with pytest.raises(LnlabError) as e:
        load_dataset(f"{csv}:label=nope")
    msg = str(e.value)
    assert all(f"f{i}," in msg for i in range(40)) and "target" in msg and "--label" in msg
    huge = _table(tmp_path / "huge.csv", 149, rows=10)
    with pytest.raises(LnlabError) as e:
        load_dataset(f"{huge}:label=nope")
    msg = str(e.value)
    assert "f99," in msg and "f100," not in msg and "50 more (150 in all)" in msg


# --- install hints ------------------------------------------------------------------------

def _extras() -> tuple[dict[str, set[str]], set[str]]:
    """Each extra's requirement names (nested lnlab[...] extras expanded) and the core ones."""
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")

    raw = proj["optional-dependencies"]
    out: dict[str, set[str]] = {}

    def expand(extra: str) -> set[str]:
        if extra not in out:
            names: set[str] = set()
            for req in raw[extra]:
                m = re.fullmatch(r"lnlab\[([\w,-]+)\]", req.replace(" ", ""))
                names |= (set().union(*(expand(e) for e in m.group(1).split(","))) if m
                          else {name(req)})
            out[extra] = names
        return out[extra]

    for extra in raw:
        expand(extra)
    return out, {name(r) for r in proj["dependencies"]}


def _strings(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def test_install_hints_name_extras_that_install_what_they_name():
    extras, core = _extras()
    hints = []
    for f in sorted((ROOT / "src" / "lnlab").rglob("*.py")):
        for text in _strings(ast.parse(f.read_text())):
            for m in re.finditer(r"lnlab\[([\w-]+)\]", text):
                extra = m.group(1)
                hints.append(extra)
                assert extra in extras, f"{f.name}: no extra {extra!r} for {text!r}"
                need = re.search(r"needs? (?:the )?(?:optional )?'?([A-Za-z][\w.-]*)",
                                 text[: m.start()])
                if need:
                    pkg = need.group(1).lower()
                    have = extras[extra] | core
                    assert any(r == pkg or r.startswith(pkg + "-") for r in have), (
                        f"{f.name}: {text!r} names {pkg}, but lnlab[{extra}] installs "
                        f"{sorted(extras[extra])}")
    assert {"files", "hf", "data"} <= set(hints)
    assert "pandas" in extras["files"]


# --- docs ---------------------------------------------------------------------------------

def _doc_commands() -> Iterator[tuple[str, str]]:
    """(page, command line) for every `lnlab ...` in code spans and code blocks."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        snippets = [s.replace("\n", " ") for s in re.findall(r"(?<!`)`([^`]+)`(?!`)", text)]
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
            snippets += block.replace("\\\n", " ").splitlines()
        for s in snippets:
            for m in re.finditer(r"(?:^|[\s/(])lnlab\s+(.*)", s):
                yield page.name, re.split(r"[;|#]|&&", m.group(1))[0]


def test_docs_name_only_existing_options():
    by_path = {p: {n for o in options(c) for n in (*o.opts, *o.secondary_opts)} | {"--help"}
               for p, c in ALL}
    groups = {p[0] for p in by_path if len(p) > 1}
    bad, checked = [], 0
    for page, line in _doc_commands():
        words = [w.strip("[]`,.)") for w in line.split()]
        if not words or ((words[0],) not in by_path and words[0] not in groups):
            continue
        path = (words[0],) if (words[0],) in by_path else tuple(words[:2])
        if path not in by_path:
            continue
        checked += 1
        for w in words[len(path):]:
            flag = w.split("=")[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and flag not in by_path[path]:
                bad.append(f"{page}: lnlab {' '.join(path)} {flag}")
    assert not bad, bad
    assert checked > 20


def test_config_file_reads_flags_by_their_positive_name(tmp_path):
    import yaml

    from lnlab.commands.config_file import read_config

    cmd = dict(ALL)[("train",)]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"json": False, "random-labels": True}))
    assert read_config(path, cmd) == {"as_json": False, "random_labels": True}
    path.write_text(yaml.safe_dump({"no-json": True}))
    with pytest.raises(LnlabError, match="unknown key 'no-json'"):
        read_config(path, cmd)
