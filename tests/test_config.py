"""Config files, `_base_` inheritance, dotted overrides and their error messages."""

import re
from pathlib import Path

import pytest
import yaml

from evad.config import Config, config_from_dict, load_config
from evad.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_paper_recipe():
    cfg = load_config(None)
    assert cfg.model.preset == "vit-b"
    assert cfg.train.epochs == 12 and cfg.train.base_lr == 2.5e-5 and cfg.train.head_lr_mult == 8
    assert cfg.train.warmup_fraction == 2 / 12 and cfg.train.lr_steps == [5 / 12, 8 / 12]
    assert cfg.train.weight_decay == 1e-4 and cfg.train.betas == (0.9, 0.999)
    assert cfg.model.model_config(num_classes=80).keep_rate == 0.7


def test_file_values_and_types(tmp_path):
    path = write(
        tmp_path / "a.yaml",
        "model: {preset: tiny, keep_rate: 0.6, prune_layers: [1, 2, 3], roi_extend: [0.2, 0.1]}\n"
        "data: {format: ava, timestamp_start: 0, classes: [1, 2], mean: [0.5, 0.5, 0.5]}\n"
        "train: {epochs: 3, base_lr: 1e-4, clip_grad_norm: 1, amp: bf16}\n"
        "output_dir: out/a\n",
    )
    cfg = load_config(path)
    mc = cfg.model.model_config(num_classes=2)
    assert (mc.embed_dim, mc.keep_rate, mc.prune_layers, mc.roi_extend) == (64, 0.6, (1, 2, 3), (0.2, 0.1))
    assert mc.num_classes == 2
    assert cfg.data.timestamp_start == 0 and cfg.data.classes == [1, 2] and cfg.data.mean == (0.5,) * 3
    # YAML 1.1 reads "1e-4" as a string; float fields accept it; ints become floats.
    assert cfg.train.base_lr == 1e-4 and cfg.train.clip_grad_norm == 1.0
    assert isinstance(cfg.train.clip_grad_norm, float)
    assert cfg.output_dir == "out/a"


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "base.yaml",
        "model: {preset: tiny, loss_weights: {action: 6}}\ntrain: {epochs: 5, seed: 3}\n",
    )
    child = write(
        tmp_path / "sub" / "child.yaml",
        "_base_: ../base.yaml\nmodel: {keep_rate: 0.5}\ntrain: {epochs: 7}\n",
    )
    cfg = load_config(
        child, ["train.epochs=2", "model.keep_rate=0.9", "data.classes=[1,2]", "eval.keep_rate=0.6"]
    )
    assert cfg.train.epochs == 2 and cfg.train.seed == 3  # command line > child > base
    mc = cfg.model.model_config(80)
    assert mc.embed_dim == 64 and mc.keep_rate == 0.9
    assert mc.loss_weights == {"ce": 2.0, "bbox": 5.0, "giou": 2.0, "action": 6.0}  # merged key by key
    assert cfg.data.classes == [1, 2] and cfg.eval.keep_rate == 0.6
    cfg = load_config(child, ["model.loss_weights.ce=3", "data.classes=null"])
    assert cfg.model.model_config(80).loss_weights["ce"] == 3.0
    assert cfg.model.model_config(80).loss_weights["action"] == 6.0
    assert cfg.data.classes is None


def test_loss_weights_merge_onto_the_preset():
    cfg = load_config(None, ["model.preset=vit-l", "model.loss_weights.ce=1"])
    assert cfg.model.model_config(80).loss_weights == {"ce": 1.0, "bbox": 5.0, "giou": 2.0, "action": 6.0}


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(None, ["model.preset=tiny", "model.roi_extend=[0.1,0.1]", "train.betas=[0.8,0.9]"])
    assert config_from_dict(cfg.to_dict(), "ckpt") == cfg
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["roi_extend"] == [0.1, 0.1]
    assert isinstance(Config().to_dict()["train"]["betas"], list)


@pytest.mark.parametrize(
    ("text", "override", "expected"),
    [
        ("train: {epoch: 3}\n", None, ["{file}", "'train.epoch'", "'train.epochs'"]),
        ("trian: {epochs: 3}\n", None, ["{file}", "'trian'", "'train'"]),
        ("model: {keep_rat: 0.5}\n", None, ["{file}", "'model.keep_rat'", "'model.keep_rate'"]),
        ("model: {num_classes: 5}\n", None, ["{file}", "model.num_classes", "dataset"]),
        ("", "train.epcohs=3", ["command line", "'train.epcohs'", "'train.epochs'"]),
        ("", "model.loss_weights.acton=2", ["command line", "model.loss_weights.acton", "action"]),
        ("", "daat.root=x", ["command line", "'daat'", "'data'"]),
        ("", "train.warmup=0.1", ["did you mean 'train.warmup_fraction' or 'train.warmup_start_factor'"]),
        # YAML reads these keys as a number and a boolean: a TypeError in the suggestion lookup
        ("1: 2\n", None, ["{file}", "unknown key '1'"]),
        ("train: {yes: 2}\n", None, ["{file}", "unknown key 'train.True'"]),
    ],
)
def test_unknown_keys_name_source_key_and_suggestion(tmp_path, text, override, expected):
    path = write(tmp_path / "cfg.yaml", text)
    with pytest.raises(UserError) as err:
        load_config(path, [override] if override else [])
    message = str(err.value)
    for part in expected:
        assert part.format(file=path) in message, message


@pytest.mark.parametrize(
    ("text", "override", "expected"),
    [
        ("train: {epochs: three}\n", None, ["{file}", "train.epochs", "an integer", "'three'"]),
        ("train: {epochs: 2.5}\n", None, ["{file}", "train.epochs", "an integer"]),
        ("train: {tensorboard: 1}\n", None, ["{file}", "train.tensorboard", "true or false"]),
        ("train: {amp: fp32}\n", None, ["{file}", "train.amp", "none, bf16, fp16"]),
        ("train: {lr_steps: [0.8, 0.5]}\n", None, ["{file}", "train.lr_steps", "increasing"]),
        ("model: {preset: vit-q}\n", None, ["{file}", "model.preset", "vit-b"]),
        ("data: {format: coco}\n", None, ["{file}", "data.format", "ava"]),
        ("train: 3\n", None, ["{file}", "train must be a mapping"]),
        ("", "train.betas=[0.9]", ["command line", "train.betas", "a list of 2"]),
        ("", "model.keep_rate=0", ["command line", "model.keep_rate", "(0, 1]"]),
        ("", "model.patch_size=12", ["command line", "model.patch_size", "divisor of 32"]),
        ("", "data.num_frames=8", ["data.num_frames=8", "model.num_frames=16 frames"]),
        ("", "data.size_divisor=10", ["data.size_divisor=10", "patch size 16"]),
        ("", "train.seed=-1", ["command line", "train.seed", "[0, 2**63)"]),
        ("", "train.seed=99999999999999999999", ["command line", "train.seed", "[0, 2**63)"]),
        ("", "data.mean=[123.7,116.3,103.5]", ["command line", "data.mean", "not 0-255"]),
        ("", "data.std=[58.4,57.1,57.4]", ["command line", "data.std", "not 0-255"]),
        ("", "data.std=[0.2,0,0.2]", ["command line", "data.std", "(0, 1]"]),
        ("", "model.num_queries=0", ["command line", "model.num_queries", ">= 1"]),
        ("", "model.drop_path_rate=1.5", ["command line", "model.drop_path_rate", "[0, 1)"]),
        ("", "model.roi_extend=[-1,0]", ["command line", "model.roi_extend", ">= 0"]),
        ("", "model.loss_weights.ce=-1", ["command line", "model.loss_weights", ">= 0"]),
        ("", "model.person_threshold=2", ["command line", "model.person_threshold", "[0, 1]"]),
        ("", "model.tap_layers=[3,2,1,0]", ["command line", "model.tap_layers", "4 block indices in order"]),
        ("", "model.prune_layers=[1,1]", ["command line", "model.prune_layers", "distinct"]),
        ("", "model.decoder_heads=5", ["model.decoder_heads=5 must divide model.decoder_dim=384"]),
        ("", "model.tubelet_size=3", ["model.tubelet_size=3 must divide model.num_frames=16"]),
        ("", "model.prune_layers=[12]", ["model.prune_layers=[12] must be blocks of model.depth=12"]),
        ("", "data.classes=[a]", ["command line", "data.classes", "integers or null"]),
        ("", "train.epochs", ["command line", "section.key=value"]),
        ("", "output_dir.x=1", ["command line", "output_dir"]),
        ("", "model=null", ["command line", "model=null would drop every model setting"]),
        ("", "train=", ["command line", "train= would drop every train setting"]),
        ("", "data.fps=0", ["command line", "data.fps", "> 0"]),
        ("", "data.flip_prob=2", ["command line", "data.flip_prob", "[0, 1]"]),
        ("", "data.train_short_side=[0]", ["command line", "data.train_short_side", "sizes >= 1"]),
        ("", "data.test_short_side=-5", ["command line", "data.test_short_side", ">= 1"]),
        ("", "data.num_workers=-1", ["command line", "data.num_workers", ">= 0"]),
        ("", "data.classes=[]", ["command line", "data.classes", "non-empty"]),
        ("", "data.classes=[3,3]", ["command line", "data.classes", "distinct"]),
        ("", "data.split=0", ["command line", "data.split", ">= 1"]),
        ("data: {num_frames: 0}\n", None, ["{file}", "data.num_frames", ">= 1"]),
        # YAML's .nan / .inf are floats, which comparisons and min() let through
        ("", "train.base_lr=.inf", ["command line", "train.base_lr", "a number", "inf"]),
        ("", "model.loss_weights.action=.nan", ["command line", "model.loss_weights", "nan"]),
        ("", "model.roi_extend=[0.2,.nan]", ["command line", "model.roi_extend", "nan"]),
        ("train: {weight_decay: .inf}\n", None, ["{file}", "train.weight_decay", "inf"]),
        ("", "train.base_lr=nan", ["command line", "train.base_lr", "'nan'"]),
    ],
)
def test_bad_values_name_source_and_key(tmp_path, text, override, expected):
    path = write(tmp_path / "cfg.yaml", text)
    with pytest.raises(UserError) as err:
        load_config(path, [override] if override else [])
    message = str(err.value)
    for part in expected:
        assert part.format(file=path) in message, message


def test_a_string_setting_takes_its_text_as_written():
    cfg = load_config(
        None,
        [
            "output_dir=2024-01-05",  # YAML would read a date
            "data.root=yes",  # ... a boolean
            "data.frame_template={video}/img_{frame:05d}.jpg",  # ... a mapping, and fail
            "data.labelmap='my labels.pbtxt'",  # quotes are still removed
            "data.videos=null",  # and null still unsets an optional path
            "data.fps=25",  # numbers are still numbers
        ],
    )
    assert cfg.output_dir == "2024-01-05" and cfg.data.root == "yes"
    assert cfg.data.frame_template == "{video}/img_{frame:05d}.jpg"
    assert cfg.data.labelmap == "my labels.pbtxt" and cfg.data.videos is None and cfg.data.fps == 25.0


def test_error_names_the_base_file_that_holds_the_key(tmp_path):
    base = write(tmp_path / "base.yaml", "train: {epochz: 1}\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(UserError, match=str(base)):
        load_config(child)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "train: {epochs: [\n"))
    with pytest.raises(UserError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n"))
    a = write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(UserError, match="loops"):
        load_config(a)


def test_shipped_configs_load():
    files = sorted(CONFIGS.glob("*.yaml"))
    names = {f.name for f in files}
    for expected in (
        "ava_vit-b_16x4_kr1.0.yaml",
        "ava_vit-b_16x4_kr0.7.yaml",
        "ava_vit-b_16x4_kr0.6_wkf4.yaml",
        "ava_vit-l_16x4_kr0.7.yaml",
        "ucf24_vit-b_16x4.yaml",
        "jhmdb_vit-b_16x4.yaml",
    ):
        assert expected in names
    for path in files:
        load_config(path)
    kr06 = load_config(CONFIGS / "ava_vit-b_16x4_kr0.6_wkf4.yaml").model.model_config(80)
    assert (kr06.keep_rate, kr06.keyframe_weight) == (0.6, 4.0)
    large = load_config(CONFIGS / "ava_vit-l_16x4_kr0.7.yaml")
    assert large.train.base_lr == 1e-5 and large.train.warmup_start_factor == 0.25
    assert large.model.model_config(80).loss_weights["action"] == 6.0


def test_a_packaged_config_is_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    by_name = load_config("synthetic_tiny", ["data.root=synth"])
    assert by_name.model.preset == "tiny" and by_name.data.timestamp_start == 0
    assert load_config("synthetic_tiny.yaml", ["data.root=synth"]) == by_name
    with pytest.raises(UserError, match="no_such_config"):
        load_config("no_such_config")


def test_a_config_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, capsys):
    from evad.cli import main

    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  epochs: 1\noutput_dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:3: not UTF-8 text"):
        load_config(path)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"evad: error: {path}:3: not UTF-8 text")


def test_yaml_errors_name_the_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train:\n  epochs: [1\n  batch_size: 2\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}:3: not valid YAML: .*\(from line 2\)$"):
        load_config(bad)
    with pytest.raises(
        UserError, match=rf"^{re.escape(str(tmp_path / 'ctl.yaml'))}:2: not valid YAML: character #x0001"
    ):
        load_config(write(tmp_path / "ctl.yaml", "train: {epochs: 1}\noutput_dir: 'a\x01b'\n"))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(UserError, match=rf"^{re.escape(str(folder))}: cannot read config: "):
        load_config(folder)
    child = write(tmp_path / "child.yaml", "_base_: gone.yaml\n")
    gone = re.escape(str(tmp_path / "gone.yaml"))
    with pytest.raises(
        UserError, match=rf"^{gone}: cannot read config \(the _base_ of {re.escape(str(child))}\)"
    ):
        load_config(child)


@pytest.mark.parametrize("text", ["", "\n", "# all settings commented out\n# train: {epochs: 1}\n"])
def test_an_empty_config_file_is_named_in_a_warning(tmp_path, text, caplog, capsys):
    from evad.cli import main

    path = write(tmp_path / "empty.yaml", text)
    assert load_config(path, ["train.epochs=1"]).train.epochs == 1  # the command line may set all
    assert f"{path}: the config file is empty" in caplog.text
    caplog.clear()
    child = write(tmp_path / "child.yaml", "_base_: empty.yaml\ntrain: {epochs: 1}\n")
    load_config(child)
    assert f"{path}: the config file is empty" in caplog.text
    # `evad train` on it fails on a setting the file would have given: the line before says why.
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the config file is empty" in caplog.text + err and "evad: error: " in err


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("model:\n  preset: tiny\n  keep_rate: 0.7\n  keep_rate: 0.5\n", 4, "keep_rate"),
        ("train: {epochs: 1, epochs: 2}\n", 1, "epochs"),
        ("train: {epochs: 1}\noutput_dir: a\noutput_dir: b\n", 3, "output_dir"),
        ("model:\n  loss_weights:\n    ce: 1\n    ce: 2\n", 4, "ce"),
    ],
)
def test_a_key_given_twice_in_one_mapping_is_refused(tmp_path, text, line, key):
    path = write(tmp_path / "dup.yaml", text)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:{line}: duplicate key '{key}'"):
        load_config(path)
    child = write(tmp_path / "child.yaml", "_base_: dup.yaml\n")  # bases are read the same way
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:{line}: duplicate key '{key}'"):
        load_config(child)


def test_the_same_key_in_different_mappings_and_yaml_merge_keys_still_load(tmp_path):
    text = (
        "model: {preset: tiny, keep_rate: 0.6}\n"
        "eval: {keep_rate: 0.5}\n"
        "train:\n  <<: {epochs: 3, batch_size: 4}\n  epochs: 2\n"
    )
    cfg = load_config(write(tmp_path / "ok.yaml", text))
    assert cfg.model.overrides["keep_rate"] == 0.6 and cfg.eval.keep_rate == 0.5
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 4)
    with pytest.raises(
        UserError, match=r"command line: the value of 'model.loss_weights' has the key 'ce' twice"
    ):
        load_config(None, ["model.loss_weights={ce: 1, ce: 2}"])


def test_evads_own_ava_evaluation_needs_both_settings():
    with pytest.raises(
        UserError, match=r"eval.ava_input_order=true .* needs eval.ava_max_per_keyframe=0, not 50"
    ):
        load_config(None, ["eval.ava_input_order=true"])
    config = load_config(None, ["eval.ava_input_order=true", "eval.ava_max_per_keyframe=0"])
    assert config.eval.ava_input_order and config.eval.ava_max_per_keyframe == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("train.epochs=1", r"overrides must be a list of section\.key=value strings, e\.g\. \['train"),
        ([("train.epochs", 1)], r"override \('train\.epochs', 1\) must be a section\.key=value string"),
    ],
)
def test_overrides_that_are_not_a_list_of_strings_are_named(overrides, message):
    """A lone string was read character by character ("override 't' must look like ...") and a
    tuple ended in an AttributeError on partition."""
    with pytest.raises(UserError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.batch_size=99999999999999999999999",
            "train.batch_size must hold integers of magnitude below 2",
        ),
        (
            "train.max_steps=99999999999999999999999",
            "train.max_steps must hold integers of magnitude below 2",
        ),
        ("data.classes=[1,99999999999999999999999]", "data.classes must hold integers of magnitude below 2"),
        ("data.sampling_rate=-99999999999999999999999", "data.sampling_rate must be an integer >= 0"),
        ("data.sampling_rate=99999999999999999999999", "data.sampling_rate must hold integers of"),
    ],
)
def test_integers_too_large_for_numpy_and_torch_are_named(override, message):
    """data.sampling_rate=1e23 as an integer ended in OverflowError inside the data loader."""
    with pytest.raises(UserError, match=message):
        load_config("synthetic_tiny", [override])
