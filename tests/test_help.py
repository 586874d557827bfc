"""Issue 26: --help is the reference. Each script's --help lists every key of its table with a description, its
choices (read from the code's own tables) and its default as typed, in lines of at most 100 characters, and ends
with that script's exit status; a mistyped key gets the key it was meant to be; a data root that is not there
fails before any network is built."""
import json

import pytest

import augment
import bench
import cli
import evaluate_mrr
import finetune
import model as M
import train

SCRIPTS = {"train.py": (train.main, train.CONFIG, train.HELP, cli.EXIT_TRAINING),
           "finetune.py": (finetune.main, finetune.CONFIG, finetune.HELP, cli.EXIT_TRAINING),
           "evaluate_mrr.py": (evaluate_mrr.main, evaluate_mrr.DEFAULTS, evaluate_mrr.HELP, cli.EXIT_DONE),
           "bench.py": (bench.main, bench.CONFIG, bench.HELP, cli.EXIT_DONE)}
CHOICES = {"cond": M.CONDS, "method": ("iwm", "ijepa", "cjepa"), "augment": augment.PRESETS,
           "protocol": finetune.PROTOCOLS, "action": augment.ENCODINGS, "loss": ("l2", "smooth_l1")}


def help_of(main, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_every_key_with_description_choices_and_default(script, capsys):
    main, config, helps, exits = SCRIPTS[script]
    out = help_of(main, capsys)
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    keys = [line.split()[0] for line in lines if line.startswith("  --")]
    assert keys == [f"--{k}" for k in config]  # every key, in the table's order
    for key, default in config.items():
        assert helps[key][0].strip(), key  # a description
        line = next(line for line in lines if line.startswith(f"  --{key} "))
        assert line.split()[1] == cli.typed(default)
    flat = " ".join(out.split())
    for key, table in CHOICES.items():
        if key in config:
            assert f"--{key} " in out and f"one of: {', '.join(table)}" in flat, key
    assert flat.endswith(" ".join(exits.split()))  # the script's own exit status, last
    if exits == cli.EXIT_DONE:
        assert "NaN" not in out and "130" not in out
    if script == "evaluate_mrr.py":
        assert "--resume" not in out


def test_defaults_are_written_as_typed():
    assert [cli.typed(v) for v in (True, False, (0.3, 1.0), "", 16, 1e-3)] == \
        ["true", "false", "0.3,1.0", '""', "16", "0.001"]
    out = cli.help_text("x.py", "", {"crop_scale": (0.3, 1.0), "one_pass": False}, {}, cli.EXIT_DONE)
    assert "--crop_scale 0.3,1.0" in out and "--one_pass false" in out


def test_choices_come_from_the_tables(monkeypatch, capsys):
    """An entry added to augment.PRESETS or finetune.PROTOCOLS is listed and accepted with no other edit."""
    monkeypatch.setitem(augment.PRESETS, "extra_preset", augment.IWM)
    monkeypatch.setitem(finetune.PROTOCOLS, "extra_protocol", finetune.PROTOCOLS["linear"])
    assert "extra_preset" in help_of(train.main, capsys) and "extra_preset" in help_of(evaluate_mrr.main, capsys)
    assert "extra_protocol" in help_of(finetune.main, capsys)
    cfg = cli.parse_config(train.CONFIG, ["--augment", "extra_preset"], "train.py", "", train.HELP)
    cli.check_values(cfg, "train.py", train.MINIMUM, train.HELP)  # accepted: no SystemExit


def test_a_value_outside_the_choices_is_one_line(capsys):
    cfg = cli.parse_config(train.CONFIG, ["--cond", "film"], "train.py", "", train.HELP)
    with pytest.raises(SystemExit) as e:
        cli.check_values(cfg, "train.py", train.MINIMUM, train.HELP)
    assert e.value.code == 2
    assert capsys.readouterr().err == "train.py: error: --cond must be one of none, sequence, feature, got 'film'\n"


def test_finetune_docstring_has_no_joined_lines():
    assert all(len(line) <= 120 for line in finetune.__doc__.splitlines())  # was one line of 229
    assert "imagefolder \\\n        --data_root" not in finetune.__doc__ and "tar \\\n" in finetune.__doc__


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "3"], "unknown option --max-steps; did you mean --max_steps?"),
    (["--max_step=3"], "unknown option --max_step; did you mean --max_steps?"),
    (["--confg", "a.json"], "unknown option --confg; did you mean --config?"),
    (["--zzzz", "1"], "unknown option --zzzz (see --help)"),
])
def test_unknown_flag_suggests_the_close_key(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_config(train.CONFIG, argv, "train.py", "", train.HELP)
    assert e.value.code == 2 and capsys.readouterr().err == f"train.py: error: {message}\n"


def test_unknown_key_in_a_config_file_suggests_the_close_key(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.1, "warmup-epochs": 2}))
    with pytest.raises(SystemExit) as e:
        cli.parse_config(train.CONFIG, ["--config", str(path)], "train.py", "", train.HELP)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"train.py: error: unknown key 'warmup-epochs' in {path}; did you mean " \
                                        "'warmup_epochs'?\n"


@pytest.mark.parametrize("script, argv, message", [
    ("train", ["--cond", "feature"], "dataset 'imagefolder' needs --data_root"),  # imagefolder: the default data
    ("train", ["--data", "cifar10", "--data_root", "/nonexistent/c10"], "cifar10 not found: put the extracted"),
    ("train", ["--data", "imagefolder", "--data_root", "{empty}"], "got no folder {empty}/train"),
    ("finetune", ["--random_init", "true", "--data", "imagefolder"], "dataset 'imagefolder' needs --data_root"),
    ("finetune", ["--random_init", "true", "--data", "stl10", "--data_root", "{empty}"], "stl10 not found"),
])
def test_a_data_root_that_is_not_there_fails_before_any_network_is_built(script, argv, message, tmp_path,
                                                                          monkeypatch, capsys):
    def no_networks(*a, **k):
        raise AssertionError("a network was built before the data root was checked")
    monkeypatch.setattr(M, "build_models", no_networks)
    (tmp_path / "empty").mkdir()
    main = {"train": train.main, "finetune": finetune.main}[script]
    with pytest.raises(SystemExit) as e:
        main([a.format(empty=tmp_path / "empty") for a in argv] + ["--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(f"{script}.py: error: "), err
    assert message.format(empty=tmp_path / "empty") in err, err
