"""One source of truth for settings: conf/*.yaml, docs/config.md, CLI help and notebook
widgets all come from the config classes' field descriptions and defaults."""

from __future__ import annotations

import pytest

from imgfeat import config, settings_doc
from imgfeat.settings_doc import CONF_FILES, settings


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda c: c.name)
def test_every_key_has_a_one_sentence_description(conf):
    for s in settings(conf.cls):
        assert s.description, f"{conf.cls.__name__}.{s.key} has no description (Field(description=...))"
        assert "\n" not in s.description and s.description[0] not in " .", s.key


def test_generated_files_are_up_to_date():
    """Edit a description in imgfeat/config.py, then: python -m imgfeat.settings_doc --write."""
    stale = [str(p.relative_to(settings_doc.REPO)) for p in settings_doc.stale()]
    assert not stale, f"out of date (run `python -m imgfeat.settings_doc --write`): {stale}"


def test_rendered_yaml_round_trips_to_the_defaults():
    for conf in CONF_FILES:
        text = settings_doc.render_yaml(conf.cls, conf.header, conf.only)
        assert text.startswith("# imgfeat "), conf.name
        loaded = config.load_config(conf.cls, conf.path)
        if not conf.only:  # a partial file leaves keys to their defaults or to shared sections
            assert loaded == conf.cls(), conf.name


def test_yaml_comment_is_the_field_description():
    text = (settings_doc.REPO / "conf" / "serve.yaml").read_text()
    described = settings_doc.setting(config.ServeConfig, "limits.max_rows").description
    assert f"  # {described}\n  max_rows: 256\n" in text


def test_cli_help_comes_from_the_field(capsys):
    from imgfeat.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for key in ("port", "workers", "paths.root"):
        assert settings_doc.setting(config.ServeConfig, key).description in shown, key
    assert "(default 5000)" in shown


def test_cli_flags_set_their_config_keys():
    from imgfeat.cli import build_parser, config_flags

    args = build_parser().parse_args(
        ["serve", "--port", "6000", "--paths-root", "/srv/images", "--set", "limits.max_rows=10"]
    )
    cfg = config.load_config(config.ServeConfig, args.config, args.set, **config_flags(args))
    assert (cfg.port, cfg.paths.root, cfg.limits.max_rows, cfg.host) == (6000, "/srv/images", 10, "127.0.0.1")
    args = build_parser().parse_args(["train", "--featurizers", "a,b", "--version", "3"])
    assert config_flags(args) == {"featurizers": ["a", "b"], "version": 3}


def test_notebook_widgets_come_from_the_fields():
    from imgfeat.notebook import config_from_widgets, widgets
    from tests.notebook_shim import DBUtils, Widgets

    dbutils = DBUtils(Widgets({"batch_size": "8", "device": "cpu", "table": ""}))
    keys = {"input": "input", "table": "table", "batch_size": "featurizer.batch_size", "device": "featurizer.device"}
    widgets(dbutils, config.FeaturizeConfig, keys, defaults={"input": "/Volumes/x"})
    w = dbutils.widgets
    assert w.labels["batch_size"] == settings_doc.setting(config.FeaturizeConfig, "featurizer.batch_size").description
    assert w.choices["device"] == ["auto", "cpu", "cuda"] and w.get("input") == "/Volumes/x"
    cfg = config_from_widgets(dbutils, config.FeaturizeConfig, keys)
    assert (cfg.input, cfg.featurizer.batch_size, cfg.featurizer.device) == ("/Volumes/x", 8, "cpu")
    assert cfg.table == "warehouse/embeddings"  # empty: the file's or the default, not null (table takes no null)

    scores = DBUtils(Widgets({"table": ""}))
    widgets(scores, config.ScoreConfig, ["table", "tracking.uri"])
    cfg = config_from_widgets(scores, config.ScoreConfig, ["table", "tracking.uri"])
    assert cfg.table is None and cfg.tracking.uri is None  # empty on a field that takes null: null
