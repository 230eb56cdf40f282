"""``--config FILE.yaml`` for ``lnlab train`` and ``lnlab run``: file values reach the same
fields as the flags, flags win, and bad files are one-line user errors naming key and file."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import lnlab.experiments
import lnlab.train
from lnlab.cli import main


class Captured(BaseException):  # not an Exception: the CLI must not turn it into exit 1
    """Raised by the stand-ins below so that a test sees what the command built."""


@pytest.fixture
def captured_train(monkeypatch):
    def fake_train(cfg, out=None, progress=None):
        raise Captured(cfg, out)

    monkeypatch.setattr(lnlab.train, "train", fake_train)


class AnyExperiment:
    """Accepts every option, so these tests do not depend on the experiments' catalogue."""

    def configs(self, *args, **kw):
        return []


@pytest.fixture
def captured_run(monkeypatch):
    def fake_run(name, out, **kw):
        raise Captured(name, out, kw)

    monkeypatch.setattr(lnlab.experiments, "get_experiment", lambda name: AnyExperiment())
    monkeypatch.setattr(lnlab.experiments, "run_experiment", fake_run)


def write(tmp_path, doc, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def train_config(args):
    with pytest.raises(Captured) as info:
        main(["train", *args])
    return info.value.args


def test_train_reads_every_spelling_of_an_option(tmp_path, captured_train):
    path = write(tmp_path, {"model": "mlp:depth=1,width=8", "batch-size": 50,
                            "data_seed": 3, "wd": 0.01, "wd-exclude": "norm,bias",
                            "random-labels": True, "epochs": 4, "lr": "1e-2",
                            "out": str(tmp_path / "run"), "norm": None})
    cfg, out = train_config(["--config", str(path)])
    assert (cfg.model, cfg.batch_size, cfg.data_seed, cfg.weight_decay) == (
        "mlp:depth=1,width=8", 50, 3, 0.01)
    assert cfg.wd_exclude == ["norm", "bias"] and cfg.random_labels is True
    assert cfg.epochs == 4 and cfg.lr == 0.01 and cfg.norm is None  # null = the default
    assert str(out) == str(tmp_path / "run")


@settings(max_examples=15, deadline=None)
@given(file_epochs=st.one_of(st.none(), st.integers(1, 99)),
       cli_epochs=st.one_of(st.none(), st.integers(1, 99)),
       file_lr=st.one_of(st.none(), st.floats(1e-6, 1.0)),
       cli_lr=st.one_of(st.none(), st.floats(1e-6, 1.0)))
def test_flags_override_file_values(tmp_path_factory, file_epochs, cli_epochs, file_lr,
                                    cli_lr):
    tmp = tmp_path_factory.mktemp("cfg")
    doc = {k: v for k, v in (("epochs", file_epochs), ("lr", file_lr)) if v is not None}
    args = ["--config", str(write(tmp, doc))]
    args += ["--epochs", str(cli_epochs)] if cli_epochs is not None else []
    args += ["--lr", repr(cli_lr)] if cli_lr is not None else []
    mp = pytest.MonkeyPatch()
    mp.setattr(lnlab.train, "train", lambda cfg, out=None, progress=None: (_ for _ in ()).throw(
        Captured(cfg)))
    try:
        (cfg,) = train_config(args)
    finally:
        mp.undo()
    first = lambda *vs: next(v for v in vs if v is not None)  # noqa: E731
    assert cfg.epochs == first(cli_epochs, file_epochs, 10)  # 10 = the option's default
    assert cfg.lr == first(cli_lr, file_lr, 1e-3)


def test_run_reads_options_and_experiment_settings(tmp_path, captured_run):
    path = write(tmp_path, {"scale": "quick", "seeds": 2, "out": str(tmp_path / "res"),
                            "workers": 1, "no-progress": True, "option": {"epochs": 2}})
    with pytest.raises(Captured) as info:
        main(["run", "baselines", "--config", str(path), "--seeds", "1"])
    name, out, kw = info.value.args
    assert name == "baselines" and out == tmp_path / "res"
    assert kw["seeds"] == 1 and kw["progress"] is False  # the flag beats the file's 2
    assert kw["options"] == {"epochs": "2"}


def test_run_takes_a_list_of_options_and_the_experiment_too(tmp_path, captured_run):
    path = write(tmp_path, "experiment: capacity\noption: [epochs=2]\nworkers: 1\n")
    with pytest.raises(Captured) as info:
        main(["run", "--config", str(path)])
    assert info.value.args[0] == "capacity"
    assert info.value.args[2]["options"] == {"epochs": "2"}
    with pytest.raises(Captured) as info:  # the argument on the command line wins
        main(["run", "baselines", "--config", str(path)])
    assert info.value.args[0] == "baselines"


@pytest.mark.parametrize(("doc", "message"), [
    ("epochz: 3\n", "unknown key 'epochz' in config file"),
    ("- epochs\n", "must be a mapping"),
    ("epochs: [1\n", "cannot read config file"),
    ("epochs: many\n", "bad value for 'epochs' in config file"),
    ("batch-size: 5\nbatch_size: 6\n", "sets 'batch_size' twice"),
])
def test_bad_files_are_one_line_user_errors(tmp_path, capsys, captured_train, doc, message):
    path = write(tmp_path, doc)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1


def test_unknown_key_lists_the_commands_options(tmp_path, capsys, captured_run):
    path = write(tmp_path, {"lr": 0.1})  # a train option is no run option
    assert main(["run", "baselines", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lr'" in err and "`lnlab run` takes" in err and "seeds" in err


def test_missing_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
