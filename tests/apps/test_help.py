"""Each app's `--help`: its own and the shared flags, grouped as model, data, recipe and output, with defaults."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from apps import help_groups
from tests.run_app import backend_independent, run_app

APPS = ("pretrain.py", "linear_probe.py", "finetune.py", "evaluate.py", "visualize.py", "make_screening_folder.py")


def _groups(text):
    """{group: [flag names]} of a grouped help text, in the order printed."""
    groups, current = {}, None
    for line in text.splitlines():
        header = re.fullmatch(r"(\w+) flags:", line)
        if header:
            current = groups.setdefault(header.group(1), [])
        elif current is not None and line.startswith("  --"):
            current.append(line[4:].split(":")[0])
    return groups


@pytest.fixture(scope="module")
def help_texts():
    """{app: its `--help` output}, the apps started together (each spends seconds on its imports)."""
    with ThreadPoolExecutor(len(APPS)) as pool:
        results = pool.map(lambda script: run_app(script, "--help", timeout=300), APPS)
        return {script: result.stdout for script, result in zip(APPS, results)}


@backend_independent
@pytest.mark.parametrize("script", APPS)
def test_help_lists_every_app_flag_by_group(script, help_texts):
    text = help_texts[script]
    groups = _groups(text)
    assert list(groups) == [g for g in help_groups.GROUPS if g in groups], text
    assert "other" not in groups, f"flags missing from help_groups.GROUPS: {groups.get('other')}"
    listed = [name for names in groups.values() for name in names]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert help_groups.GROUP_OF[name] in groups and name in groups[help_groups.GROUP_OF[name]]
    assert "workdir" in listed or script in ("make_screening_folder.py", "visualize.py")
    # absl's own flags stay under --helpfull.
    assert not {"logtostderr", "verbosity", "flagfile", "helpfull", "only_check_args"} & set(listed)
    assert "--helpfull" in text


@backend_independent
def test_help_shows_shared_model_flags_defaults_and_required_workdir(help_texts):
    text = help_texts["pretrain.py"]
    groups = _groups(text)
    assert {"preset", "mask_ratio", "norm_pix_loss", "hidden_dim"} <= set(groups["model"])
    assert {"dataset", "eval_dataset", "val_fraction"} <= set(groups["data"])
    assert {"epochs", "batch_size", "base_lr", "distribution"} <= set(groups["recipe"])
    assert "workdir" in groups["output"]
    workdir = text[text.index("  --workdir:"):].split("\n  --")[0].split("\n\n")[0]
    assert workdir.endswith("(required)")
    preset = text[text.index("  --preset:"):].split("\n  --")[0].split("\n\n")[0]
    assert "(default: 'mae_vit_tiny_patch4_28')" in preset
