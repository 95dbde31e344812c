"""Run configuration: the shipped presets load and carry the paper's values; bad configs fail by name.

Presets are layers over a documented base (experiments/configs/base/); tests that edit a complete
file edit base/epic.toml, which writes every key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    check_data_root,
    from_dict,
    load_config,
    migrate_legacy,
    resolve_config,
    validate,
)

PAIRS = ["D2-D1", "D3-D1", "D1-D2", "D3-D2", "D1-D3", "D2-D3"]
PAPER_DIR = CONFIG_DIR / "paper"
# the EPIC presets; methods/ holds overlays (tests/test_methods.py), watch/ the sensor benchmark (tests/test_watch.py)
ALL_TOMLS = sorted(
    p
    for p in CONFIG_DIR.rglob("*.toml")
    if p.parent.name not in ("methods", "watch") and p.parent.parent.name != "watch"
)
REF = CONFIG_DIR / "reference.toml"
EPIC_BASE = CONFIG_DIR / "base" / "epic.toml"
# every preset resolved by the version whose presets repeated every key (before bases and overlays),
# stored as JSON in that version's keys: the layered presets must resolve to the same values
BEFORE = Path(__file__).parent / "data" / "presets-before"
PRESETS_BEFORE = sorted(BEFORE.rglob("*.json"))


def test_the_expected_presets_exist():
    names = {str(p.relative_to(CONFIG_DIR)) for p in ALL_TOMLS}
    expected = {f"paper/{p}.toml" for p in PAIRS} | {
        "reference.toml",
        "source-only.toml",
        "adversarial-only.toml",
        "supervised-target.toml",
    }
    assert expected <= names


@pytest.mark.parametrize("path", ALL_TOMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_preset_loads_and_validates(path: Path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert validate(config) is config
    assert config.data.root == ""  # the user sets it; a run checks it with check_data_root
    with pytest.raises(ConfigError, match="data.root is empty"):
        check_data_root(config)


def test_the_epic_base_documents_every_key():
    # the one complete file: every run key written out with its reason (the generator's keys live in
    # base/feature-benchmark.toml and FeatureBenchmarkConfig)
    raw = tomllib.loads(EPIC_BASE.read_text())
    fields = {f.name: f for f in dataclasses.fields(RunConfig)} | {"base": None}
    assert set(raw) == set(fields) - {"name", "base", "feature_benchmark"}
    config = RunConfig()
    for name in raw:
        section = getattr(config, name)
        if dataclasses.is_dataclass(section):
            assert set(raw[name]) == {g.name for g in dataclasses.fields(section)}, f"[{name}] misses a key"


# keys added since whose value the benchmarks' bases (base/feature-benchmark.toml, base/watch.toml) set on purpose
BENCHMARK_VALUES = {
    "feature-benchmark": {
        "refinement.diagnostics_every": 1,
        "refinement.signal_aucs": [
            "discriminator",
            "entropy",
            "energy",
            "transferability",
            "modality-agreement",
            "density",
            "pseudo-label-loss",
        ],
    },
    "watch": {"refinement.diagnostics_every": 1},
}


@pytest.mark.parametrize("before", PRESETS_BEFORE, ids=lambda p: str(p.relative_to(BEFORE)))
def test_layered_preset_resolves_to_the_complete_preset_it_replaces(before: Path):
    path = CONFIG_DIR / before.relative_to(BEFORE).with_suffix(".toml")
    expected = migrate_legacy(json.loads(before.read_text()))
    resolved = resolve_config(path)[0].to_dict()
    # a key added since that JSON was stored must resolve to its documented default (base/epic.toml, the dataclass)
    default, documented = RunConfig().to_dict(), tomllib.loads(EPIC_BASE.read_text())
    for section, values in list(resolved.items()):
        if section not in expected:
            assert values == default[section] == documented[section], f"{section} (added since)"
            del resolved[section]
        elif isinstance(values, dict):
            for key in set(values) - set(expected[section]):
                benchmark_value = BENCHMARK_VALUES.get(before.relative_to(BEFORE).parts[0], {}).get(f"{section}.{key}")
                if benchmark_value is not None:
                    assert values[key] == benchmark_value, f"{section}.{key} (added since, set by the benchmark's base)"
                else:
                    assert values[key] == default[section][key] == documented[section][key], (
                        f"{section}.{key} (added since)"
                    )
                del values[key]
    for section, values in expected.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert resolved[section][key] == value, f"{section}.{key}"
        else:
            assert resolved[section] == values, section
    assert resolved == expected


def test_every_preset_is_shown_with_where_each_value_came_from(capsys):
    assert len(PRESETS_BEFORE) == 32
    for before in PRESETS_BEFORE:
        name = str(before.relative_to(BEFORE).with_suffix(""))
        assert main(["config", "show", name]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if " = " in line]
        config, origin = resolve_config(CONFIG_DIR / f"{name}.toml")
        assert len(lines) == len(origin) == sum(len(v) if isinstance(v, dict) else 1 for v in config.to_dict().values())
        shown = dict(line.split("  # ", 1) for line in lines)
        assert shown[f'name = "{config.name}"'] == origin["name"] == f"{name}.toml"
        assert main(["config", "show", name, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == config.to_dict()


def test_config_show_names_each_layer(capsys):
    assert main(["config", "show", "feature-benchmark/mmir-robust", "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert 'name = "feature-benchmark-mmir-robust"  # feature-benchmark/mmir-robust.toml' in out
    assert 'method = "mmir-robust"  # methods/mmir-robust.toml' in out
    assert 'kind = "feature-benchmark"  # base/feature-benchmark.toml' in out
    assert "dropout = 0.5  # base/epic.toml" in out
    assert "seed = 3  # --set" in out
    assert 'reward = "rank"  # methods/mmir-robust.toml' in out


def test_config_show_of_a_missing_preset_is_a_one_line_error(capsys):
    assert main(["config", "show", "paper/D9-D1"]) == 2
    err = capsys.readouterr().err
    assert "no such config file" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("adversarial = true", "stage2.objectives = {adversarial = 1.0}"),
        ("mmd_weight = 1.0", "stage2.objectives = {mmd = WEIGHT}"),
        ("correspondence_weight = 1.0", "stage2.objectives = {correspondence = WEIGHT}"),
        ("mcd = true", 'stage2.strategy = "mcd"'),
    ],
)
def test_a_removed_method_switch_says_what_to_write_instead(tmp_path, line, hint):
    path = write(tmp_path, f'base = "base/epic"\n[stage2]\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "was removed" in message and hint in message and "\n" not in message


def test_a_removed_evaluation_switch_says_what_to_write_instead(tmp_path):
    with pytest.raises(ConfigError, match=r'evaluation.adabn was removed: write evaluation.hooks = \["adabn"\]'):
        load_config(PAPER_DIR / "D2-D1.toml", {"evaluation.adabn": True})


def test_a_stored_config_of_an_earlier_version_migrates_to_the_same_meaning():
    old = RunConfig().to_dict()
    for stage in ("stage1", "stage2"):
        old[stage] |= {"adversarial": stage == "stage2", "correspondence_weight": 0.0, "mmd_weight": 0.0, "mcd": False}
        del old[stage]["objectives"]
    old["stage2"]["correspondence_weight"] = 1.0
    old["evaluation"]["adabn"] = True
    new = migrate_legacy(old)
    assert new["stage2"]["objectives"] == {"adversarial": 1.0, "correspondence": 1.0}
    assert new["stage1"]["objectives"] == {} and new["evaluation"]["hooks"] == ["adabn"]
    assert from_dict(RunConfig, new).stage2.strategy == "standard"
    assert migrate_legacy(RunConfig().to_dict()) == RunConfig().to_dict()


def test_base_files_that_form_a_cycle_are_an_error(tmp_path):
    write(tmp_path, 'base = "b.toml"\n', "a.toml")
    write(tmp_path, 'base = "a.toml"\n', "b.toml")
    with pytest.raises(ConfigError, match="base files form a cycle"):
        load_config(tmp_path / "a.toml")


def test_an_error_in_a_base_names_the_base(tmp_path):
    write(tmp_path, "[stage2]\nlr = -1.0\n", "mybase.toml")
    path = write(tmp_path, 'base = "mybase.toml"\nname = "x"\n', "run.toml")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "mybase.toml" in str(err.value) and "stage2.lr" in str(err.value)


PAPER_VALUES = {
    "data.root": "",
    "data.frames": 16,
    "model.modalities": ["rgb", "flow"],
    "model.num_classes": 8,
    "model.dropout": 0.5,
    "model.fusion": "sum",
    "stage1.steps": 4000,
    "stage1.batch_size": 96,
    "stage1.lr": 0.01,
    "stage1.optimizer": "adam",
    "stage1.weight_decay": 1e-7,
    "stage1.objectives": {},
    "stage1.refinement": False,
    "stage2.steps": 8000,
    "stage2.batch_size": 80,
    "stage2.lr": 0.001,
    "stage2.optimizer": "adam",
    "stage2.weight_decay": 1e-7,
    "stage2.objectives": {"adversarial": 1.0},
    "stage2.refinement": True,
    "discriminator.hidden_dim": 128,
    "discriminator.negative_slope": 0.01,
    "agents.s_agents": ["rgb", "flow"],
    "agents.t_agents": ["rgb", "flow"],
    "agents.epsilon": 0.5,
    "agents.gamma": 0.9,
    "env.n_c": 5,
    "env.E": 1,
    "env.tau_s": 0.5,
    "env.tau_t": 0.5,
    "evaluation.last": 9,
}


def flat(config: RunConfig) -> dict:
    out = {}
    for key, value in config.to_dict().items():
        if dataclasses.is_dataclass(getattr(config, key)):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def get(config: RunConfig, dotted: str):
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("pair", PAIRS)
def test_paper_presets_carry_the_papers_values(pair: str):
    config = load_config(PAPER_DIR / f"{pair}.toml")
    source, target = pair.split("-")
    assert (config.data.source, config.data.target, config.name) == (source, target, f"mmir-{pair}")
    for key, value in PAPER_VALUES.items():
        got = get(config, key)
        assert got == value and type(got) is type(value), f"{pair}: {key} = {got!r}, paper 4.1 says {value!r}"
    assert config.discriminator.negative_slope > 0  # LeakyReLU, not ReLU
    assert config.stage2.batch_size // 2 == 40  # 40 source + 40 target


def test_paper_presets_differ_only_in_the_pair():
    def method(path: Path) -> dict:
        d = load_config(path).to_dict()
        del d["name"], d["data"]["source"], d["data"]["target"]
        return d

    first = method(PAPER_DIR / f"{PAIRS[0]}.toml")
    for pair in PAIRS[1:]:
        assert method(PAPER_DIR / f"{pair}.toml") == first, pair


def test_reference_preset_mirrors_the_released_code():
    ref = load_config(REF)
    paper = load_config(PAPER_DIR / "D2-D1.toml")
    for stage, corr in ((ref.stage1, 5.0), (ref.stage2, 1.0)):
        assert (stage.optimizer, stage.momentum, stage.weight_decay, stage.objectives.get("correspondence")) == (
            "sgd",
            0.9,
            1e-7,
            corr,
        )
    assert (ref.agents.epsilon, ref.agents.buffer_size, ref.agents.batch_size) == ("released", 200, 64)
    assert (ref.agents.learning_starts, ref.agents.target_update_interval, ref.agents.q_net) == (64, 48, "flat")
    assert (ref.discriminator.grl_schedule, ref.discriminator.grl_scale, ref.discriminator.negative_slope) == (
        "dann",
        0.2,
        0.0,
    )
    assert ref.model.fusion == "sum"
    assert (ref.data.source, ref.data.target) == ("D2", "D1")
    # where the released code is the same as the paper (docs/architecture.md), the reference keeps the paper's value
    for key in (
        "stage1.steps",
        "stage1.batch_size",
        "stage1.lr",
        "stage2.steps",
        "stage2.batch_size",
        "stage2.lr",
        "model.dropout",
        "discriminator.hidden_dim",
        "agents.gamma",
        "env.n_c",
        "env.E",
        "env.tau_s",
        "env.tau_t",
        "data.frames",
    ):
        assert get(ref, key) == get(paper, key), key


def test_baseline_presets_switch_off_only_what_they_name():
    paper = flat(load_config(PAPER_DIR / "D2-D1.toml"))
    cases = {
        "source-only.toml": (False, False, "D2"),
        "adversarial-only.toml": (True, False, "D2"),
        "supervised-target.toml": (False, False, "D1"),
    }
    for name, (adversarial, refinement, source) in cases.items():
        config = load_config(CONFIG_DIR / name)
        assert ("adversarial" in config.stage2.objectives, config.stage2.refinement) == (adversarial, refinement), name
        assert config.agents.s_agents == config.agents.t_agents == [], name
        assert (config.data.source, config.data.target) == (source, "D1"), name
        mine = flat(config)
        differing = {k for k in paper if paper[k] != mine[k]}
        allowed = {
            "name",
            "method",
            "data.source",
            "stage2.objectives",
            "stage2.refinement",
            "agents.s_agents",
            "agents.t_agents",
        }
        assert differing <= allowed, f"{name} differs from paper/D2-D1.toml in {sorted(differing - allowed)}"


# ---- errors name the key (and the file) ---------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def paper_with(tmp_path: Path, section: str, line: str) -> Path:
    """base/epic.toml (complete) with ``line`` added at the top of ``[section]`` (or at the top level)."""
    text = EPIC_BASE.read_text()
    if section:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    else:
        text = f"{line}\n{text}"
    return write(tmp_path, text)


def replace_key(tmp_path: Path, section: str, key: str, value: str) -> Path:
    """base/epic.toml (complete) with ``section.key`` set to the TOML literal ``value``."""
    lines = EPIC_BASE.read_text().splitlines()
    current, done = "", False
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            done = True
    assert done, (section, key)
    return write(tmp_path, "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("section", "line", "named"),
    [
        ("stage2", "lrr = 0.1", "stage2.lrr"),
        ("", "seeed = 1", "seeed"),
        ("agents", "epsilon_decay = 1", "agents.epsilon_decay"),
    ],
)
def test_unknown_key_is_rejected_naming_key_and_file(tmp_path, section, line, named):
    path = paper_with(tmp_path, section, line)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert named in message and str(path) in message
    assert "unknown key" in message


def test_unknown_section_is_rejected(tmp_path):
    path = write(tmp_path, EPIC_BASE.read_text() + "\n[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) optimizer") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("section", "key", "value", "named", "expected"),
    [
        ("stage1", "steps", '"4000"', "stage1.steps", "integer"),
        ("stage1", "steps", "4000.0", "stage1.steps", "integer"),
        ("stage2", "lr", "true", "stage2.lr", "number"),
        ("stage2", "refinement", '"yes"', "stage2.refinement", "true/false"),
        ("stage2", "objectives", '{adversarial = "1"}', "stage2.objectives.adversarial", "number"),
        ("model", "fusion", '"max"', "model.fusion", "one of sum, mean"),
        ("data", "root", "3", "data.root", "string"),
        ("agents", "s_agents", '"rgb"', "agents.s_agents", "list"),
        ("agents", "t_agents", '["rgb", 1]', "agents.t_agents[1]", "string"),
        ("agents", "epsilon", "true", "agents.epsilon", "a number or one of 'paper', 'released'"),
    ],
)
def test_wrong_type_is_rejected_naming_the_key(tmp_path, section, key, value, named, expected):
    path = replace_key(tmp_path, section, key, value)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{named} must be" in message and expected in message and str(path) in message


def test_section_that_is_not_a_table(tmp_path):
    with pytest.raises(ConfigError, match="data must be a table"):
        load_config(write(tmp_path, 'data = "D2"\n'))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "name = \n"))


# ---- data root ------------------------------------------------------------------------------------


def with_root(root) -> RunConfig:
    config = load_config(PAPER_DIR / "D2-D1.toml")
    config.data.root = str(root)
    return config


def test_check_data_root_empty():
    with pytest.raises(ConfigError, match=r"data\.root is empty: set it to the folder that holds rgb/ and flow/"):
        check_data_root(load_config(PAPER_DIR / "D2-D1.toml"))


def test_check_data_root_nonexistent(tmp_path):
    missing = tmp_path / "EPIC"
    with pytest.raises(ConfigError, match="does not exist") as err:
        check_data_root(with_root(missing))
    assert str(missing) in str(err.value)


def test_check_data_root_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match="does not exist"):
        check_data_root(with_root(f))


@pytest.mark.parametrize(
    ("present", "missing"), [((), ("rgb/", "flow/")), (("rgb",), ("flow/",)), (("flow",), ("rgb/",))]
)
def test_check_data_root_without_modality_folders(tmp_path, present, missing):
    for m in present:
        (tmp_path / m).mkdir()
    with pytest.raises(ConfigError) as err:
        check_data_root(with_root(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and "EPIC layout" in message
    for m in missing:
        assert f"{m}" in message
    for m in present:
        assert f"{m}/" not in message


def test_check_data_root_ok(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "flow").mkdir()
    assert check_data_root(with_root(tmp_path)) == tmp_path
    # a single-modality model only needs its own folder
    (tmp_path / "flow").rmdir()
    config = with_root(tmp_path)
    config.model.modalities = config.agents.s_agents = config.agents.t_agents = ["rgb"]
    assert check_data_root(validate(config)) == tmp_path


# ---- overrides ------------------------------------------------------------------------------------


def test_overrides_set_values_without_touching_the_rest(tmp_path):
    base = load_config(PAPER_DIR / "D2-D1.toml")
    config = load_config(
        PAPER_DIR / "D2-D1.toml",
        {"data.root": str(tmp_path), "stage2.lr": 0.005, "seed": 3, "agents.s_agents": ["flow"]},
    )
    assert (config.data.root, config.stage2.lr, config.seed, config.agents.s_agents) == (
        str(tmp_path),
        0.005,
        3,
        ["flow"],
    )
    before, after = flat(base), flat(config)
    assert {k for k in before if before[k] != after[k]} == {"data.root", "stage2.lr", "seed", "agents.s_agents"}


def test_override_into_a_file_without_that_section(tmp_path):
    config = load_config(write(tmp_path, 'name = "x"\n'), {"env.n_c": 4, "stage2.batch_size": 48})
    assert (config.env.n_c, config.stage2.batch_size) == (4, 48)


def test_overrides_are_checked_like_the_file():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) stage2\.lrr"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage2.lrr": 0.1})
    with pytest.raises(ConfigError, match="stage2.steps must be an integer"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage2.steps": "8000"})
    with pytest.raises(ConfigError, match="env.E must satisfy"):
        load_config(PAPER_DIR / "D2-D1.toml", {"env.E": 5})


# ---- values: choices and consistency -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stage1.optimizer", "rmsprop"),
        ("stage2.optimizer", "rmsprop"),
        ("model.fusion", "max"),
        ("model.batchnorm", "none"),
        ("agents.q_net", "lstm"),
        ("discriminator.grl_schedule", "linear"),
        ("env.reward", "dense"),
        ("precision", "fp16"),
        ("distributed.backend", "mpi"),
    ],
)
def test_invalid_choice_is_rejected_naming_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        load_config(PAPER_DIR / "D2-D1.toml", {key: value})
    message = str(err.value)
    assert f"{key} must be one of" in message and repr(value) in message and "D2-D1.toml" in message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"stage2.batch_size": 81}, "stage2.batch_size must be even"),
        ({"stage2.batch_size": 84}, "stage2.batch_size / 2 = 42 must be a multiple of env.n_c = 5"),
        ({"env.n_c": 3}, "stage2.batch_size / 2 = 40 must be a multiple of env.n_c = 3"),
        ({"env.E": 5}, "env.E must satisfy 1 <= E < n_c = 5, got 5"),
        ({"env.E": 7}, "env.E must satisfy"),
        ({"env.E": 0}, "env.E must satisfy"),
        ({"agents.s_agents": ["rgb", "depth"]}, "agents.s_agents names ['depth']"),
        ({"agents.t_agents": ["audio"]}, "agents.t_agents names ['audio']"),
        ({"model.modalities": ["rgb"]}, "agents.s_agents names ['flow']"),
        ({"model.checkpoints": {"depth": "x.pt"}}, "model.checkpoints names ['depth']"),
        ({"model.modalities": []}, "model.modalities must be non-empty"),
        ({"model.modalities": ["rgb", "rgb"]}, "model.modalities must be non-empty and distinct"),
        ({"env.tau_s": 1.0}, "env.tau_s must lie strictly inside (0, 1)"),
        ({"env.tau_t": 0.0}, "env.tau_t must lie strictly inside"),
        ({"stage1.steps": -1}, "stage1.steps must be >= 0"),
        ({"stage1.batch_size": 0}, "stage1.batch_size must be >= 1"),
        ({"evaluation.last": 0}, "evaluation.last must be >= 1"),
        ({"model.width": 0.0}, "model.width must be > 0"),
        ({"agents.epsilon": "decay"}, "agents.epsilon must be"),
    ],
)
def test_inconsistent_values_are_rejected_naming_the_key(overrides, named):
    with pytest.raises(ConfigError) as err:
        load_config(PAPER_DIR / "D2-D1.toml", overrides)
    assert named in str(err.value)


def test_candidate_set_rule_applies_only_with_refinement():
    # adversarial-only / source-only have no candidate sets: 42 per domain is fine there
    config = load_config(CONFIG_DIR / "adversarial-only.toml", {"stage2.batch_size": 84})
    assert config.stage2.batch_size == 84
    with pytest.raises(ConfigError, match="stage2.batch_size must be even"):
        load_config(CONFIG_DIR / "adversarial-only.toml", {"stage2.batch_size": 71})


def test_ablations_of_table_2_are_configurations():
    path = PAPER_DIR / "D2-D1.toml"
    no_rgb = load_config(path, {"agents.s_agents": ["flow"], "agents.t_agents": ["flow"]})
    no_flow = load_config(path, {"agents.s_agents": ["rgb"], "agents.t_agents": ["rgb"]})
    no_s_rgb = load_config(path, {"agents.s_agents": ["flow"]})
    no_t_rgb = load_config(path, {"agents.t_agents": ["flow"]})
    assert (no_rgb.agents.s_agents, no_rgb.agents.t_agents) == (["flow"], ["flow"])
    assert (no_flow.agents.s_agents, no_flow.agents.t_agents) == (["rgb"], ["rgb"])
    assert (no_s_rgb.agents.s_agents, no_s_rgb.agents.t_agents) == (["flow"], ["rgb", "flow"])
    assert (no_t_rgb.agents.s_agents, no_t_rgb.agents.t_agents) == (["rgb", "flow"], ["flow"])


def test_from_dict_alone_and_defaults_are_the_papers():
    config = validate(from_dict(RunConfig, {}))
    for key, value in PAPER_VALUES.items():
        assert get(config, key) == value, key


# ---- gaps found in review, now fixed ---------------------------------------------------------------


def test_numeric_epsilon_outside_unit_interval_is_rejected():
    with pytest.raises(ConfigError, match="agents.epsilon"):
        load_config(PAPER_DIR / "D2-D1.toml", {"agents.epsilon": 1.5})


def test_refinement_without_adversarial_is_rejected():
    with pytest.raises(ConfigError, match="stage2.refinement = true needs the adversarial objective"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage2.objectives": {}})


def test_objectives_name_registered_losses_of_their_stage():
    with pytest.raises(ConfigError, match="not a registered objective"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage2.objectives": {"adversarial": 1.0, "no-such-loss": 1.0}})
    with pytest.raises(ConfigError, match="trains in stage 2 only"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage1.objectives": {"adversarial": 1.0}})
    with pytest.raises(ConfigError, match="classification .* is always on"):
        load_config(PAPER_DIR / "D2-D1.toml", {"stage2.objectives": {"classification": 1.0, "adversarial": 1.0}})
    with pytest.raises(ConfigError, match="trains its own losses"):
        load_config(CONFIG_DIR / "source-only.toml", {"stage2.strategy": "mcd", "stage2.objectives": {"mmd": 1.0}})


def test_override_through_a_scalar_is_a_config_error():
    with pytest.raises(ConfigError, match="name"):
        load_config(PAPER_DIR / "D2-D1.toml", {"name.first": "x"})
