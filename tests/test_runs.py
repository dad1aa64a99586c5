"""The run record RUN/run.json (medvol.runs.RunRecord): the one reader and writer of that file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from medvol.errors import MedvolInputError
from medvol.runs import RUN_RECORD_FILE, RunRecord

# written by medvol 0.1.0 (`medvol train --bundle cgan`, then resumed once): geometry, intensity, history and export
FIXTURE = Path(__file__).parent / "fixtures" / "run_0.1.0.json"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE, tmp_path / RUN_RECORD_FILE)
    return tmp_path


def test_a_record_written_by_0_1_0_loads_typed_and_saves_byte_for_byte(run_dir, tmp_path):
    record = RunRecord.load(run_dir)
    assert (record.family, record.spatial_dims, record.image_size, record.num_classes) == ("cgan", 2, [16, 16], 2)
    assert record.classes == ["lesion", "normal"] and record.training_samples == 5
    assert record.dataset_options["output_range"] == [-1.0, 1.0] and record.intensity["kind"] == "minmax"
    assert record.history == [{"iterations": 1, "seed": 0}] and record.model["network"] == "generator"
    assert record.extra == {} and record.folder == run_dir
    written = record.save(tmp_path / "copy")
    assert written.read_bytes() == FIXTURE.read_bytes()


def test_unknown_keys_are_kept_and_absent_sections_are_not_written(run_dir, tmp_path):
    document = json.loads(FIXTURE.read_text())
    del document["history"], document["model"]
    document["added_later"] = {"x": 1}
    record = RunRecord.from_dict(document)
    assert record.extra == {"added_later": {"x": 1}} and record.history == [] and record.model is None
    assert record.to_dict() == document and list(record.to_dict()) == list(document)


def test_update_is_a_copy_and_save_replaces_the_file(run_dir):
    record = RunRecord.load(run_dir)
    exported = record.update(model={"file": "models/model.pt", "iteration": 9})
    assert record.model["iteration"] == 2 and exported.model == {"file": "models/model.pt", "iteration": 9}
    exported.save()
    assert json.loads((run_dir / RUN_RECORD_FILE).read_text())["model"] == exported.model
    assert [p.name for p in run_dir.iterdir()] == [RUN_RECORD_FILE]  # no temporary file left
    with pytest.raises(TypeError):
        record.update(no_such_field=1)


@pytest.mark.parametrize("content, problem", [
    (None, "not a medvol run folder (no run.json; train one with `medvol train`)"),
    ("{not json", "unreadable run record"),
    ("[1, 2]", "unreadable run record (a run record is a JSON object, not list)"),
    (json.dumps({"family": "cae"}), "no spatial_dims, image_size: written by an older medvol or damaged"),
    (json.dumps({"family": "cae", "spatial_dims": 4, "image_size": [8]}), "spatial_dims is 4, not 2 or 3"),
])
def test_a_missing_damaged_or_old_record_is_one_error_naming_the_file(content, problem, tmp_path):
    if content is not None:
        (tmp_path / RUN_RECORD_FILE).write_text(content)
    with pytest.raises(MedvolInputError) as error:
        RunRecord.load(tmp_path)
    assert error.value.path == str(tmp_path if content is None else tmp_path / RUN_RECORD_FILE)
    assert problem in error.value.problem and "\n" not in str(error.value)


def test_for_training_records_the_data_and_the_history_of_a_resumed_run(run_dir, tmp_path):
    datalist = tmp_path / "data" / "datalist.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"training": [], "classes": ["a", "b"], "intensity": {"kind": "ct"}}))
    dataset = [{"image": torch.zeros(1, 4, 4)}] * 3
    facts = {"family": "cae", "spatial_dims": 2, "image_size": (4, 4), "seed": 5, "iterations": 7}
    fresh = RunRecord.for_training(tmp_path / "new", dataset=dataset, datalist=str(datalist), **facts)
    assert fresh.history == [] and fresh.image_size == [4, 4] and fresh.datalist == str(datalist)
    assert (fresh.classes, fresh.training_samples, fresh.modality) == (["a", "b"], 3, "CT")
    resumed = RunRecord.for_training(run_dir, dataset=dataset, datalist=str(datalist), **facts)
    assert resumed.history == [{"iterations": 1, "seed": 0}, {"iterations": 2, "seed": 0}]
    assert resumed.model is None and resumed.iterations == 7


def test_a_run_folder_inside_a_source_is_a_medvol_output_and_a_damaged_record_is_not(run_dir, tmp_path):
    from medvol.io.discovery import medvol_output_folders

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / RUN_RECORD_FILE).write_text("{}")
    files = [run_dir / RUN_RECORD_FILE, damaged / RUN_RECORD_FILE]
    assert medvol_output_folders(tmp_path.parent, files) == [run_dir]


def test_only_the_run_record_names_the_file():
    """run.json is read and written by medvol.runs alone: no other module of the package spells its name."""
    package = Path(__file__).resolve().parents[1] / "medvol"
    spelled = re.compile(r"""["']run\.json["']""")
    others = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
              if p.name != "runs.py" and spelled.search(p.read_text(encoding="utf-8"))]
    assert others == []
