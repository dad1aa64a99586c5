"""Every bundle as the MONAI model zoo's CI tests its bundles: metadata fields, then the train config run through
`ConfigWorkflow` for 2 iterations on tiny generated inputs in 2D (PNG) and 3D (NIfTI) from outside the repository,
then the inference config and its exported network, with the outputs checked; a bundle folder copied alone to a
temporary folder trained, sampled, exported and verified by `python -m monai.bundle` commands run there; and the
multi-GPU config trained by 2 gloo processes under torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

from medvol.bundles import BUNDLES_DIR, load_workflow, resolve_bundle, torchrun_command
from medvol.bundles.inference import export_network, exported_network_name, latent_input_size
from medvol.errors import MedvolInputError
from medvol.families import family_names
from medvol.networks.factory import build, sized_options
from medvol.runs import RunRecord
from medvol.sampling import load_networks

REPO_ROOT = BUNDLES_DIR.parent
SIZE = 16
FAMILIES = family_names()  # the families registered by medvol, each with a folder under bundles/
CONDITIONAL = ("cgan", "acwgan_gp")
# narrow networks so that one iteration takes about a second on a CPU
TINY_NETWORKS = {
    "cae": {"channels": [8, 16], "latent_size": 8},
    "vae": {"channels": [8, 16], "latent_size": 8},
    "gan": {"latent_size": 8, "generator": {"hidden_sizes": [32, 64]}, "critic": {"hidden_sizes": [32]}},
    "dcgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
    "wgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
    "cgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
    "wgan_gp": {"latent_size": 8, "base_channels": 4, "max_channels": 8},
    "acwgan_gp": {"latent_size": 8, "base_channels": 4, "max_channels": 8},
}
METADATA_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "license",
    "network_data_format",
)
BUNDLE_FILES = (
    "configs/metadata.json",
    "configs/train.yaml",
    "configs/inference.yaml",
    "configs/evaluate.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/logging.conf",
    "docs/README.md",
)


def prepare_phantoms(out_dir: Path, spatial_dims: int) -> Path:
    """Tiny labelled phantoms (PNG in 2D, NIfTI in 3D) written and prepared by `medvol prepare`'s code."""
    from medvol.commands import prepare

    prepare.run(source="phantoms", out=str(out_dir), mode="volume" if spatial_dims == 3 else "slice",
                size=[SIZE] * spatial_dims, split=[0.6, 0.2, 0.2], seed=0)
    return out_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("prepared")
    return {dims: prepare_phantoms(root / f"data{dims}d", dims) for dims in (2, 3)}


def tiny_overrides(family: str, spatial_dims: int, data_dir: Path, run_dir: Path) -> dict:
    return {
        "dataset_dir": str(data_dir),
        "output_dir": str(run_dir),
        "spatial_dims": spatial_dims,
        "image_size": SIZE,
        "iterations": 2,
        "batch_size": 4,
        "checkpoint_every": 0,
        "sample_every": 2,
        "network": TINY_NETWORKS[family],
        "objective": {} if family in ("cae", "vae") else {"critic_steps": 1},
        "device": "cpu",
        "precision": "fp32",
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_layout_and_metadata(family):
    folder = resolve_bundle(family)
    for name in BUNDLE_FILES:
        assert (folder / name).is_file(), f"{family}: {name} is missing"
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    missing = [key for key in METADATA_FIELDS if not metadata.get(key)]
    assert not missing, f"{family}: metadata lacks {missing}"
    assert metadata["version"] in metadata["changelog"]
    assert metadata["monai_version"] == __import__("monai").__version__
    assert metadata["pytorch_version"] == torch.__version__.split("+")[0]
    assert metadata["numpy_version"] == np.__version__
    data_format = metadata["network_data_format"]
    assert data_format["outputs"]["pred"]["num_channels"] == 1
    assert data_format["outputs"]["pred"]["value_range"] == ([0, 1] if family in ("cae", "vae") else [-1, 1])
    # the exported network's input at the default widths: the latent vector, plus the class index when conditional
    options = sized_options(family, 2, 64, {}, width=None, dataset_size=500)
    networks = build(family, 2, 64, num_classes=2 if family in CONDITIONAL else 0, **options)
    latent_size = (networks.get("generator") or networks["autoencoder"]).latent_size
    # under the key MONAI's verify_net_in_out / ckpt_export read (inputs#image), typed as noise
    assert list(data_format["inputs"]) == ["image"] and data_format["inputs"]["image"]["type"] == "noise"
    assert data_format["inputs"]["image"]["num_channels"] == latent_size + (family in CONDITIONAL)
    assert data_format["inputs"]["image"]["spatial_shape"] == [] and data_format["inputs"]["image"]["dtype"] == "float32"


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_bundle_network_def_verifies_and_exports(family, tmp_path, monkeypatch):
    """What the model zoo's CI runs on a bundle without a run: `verify_net_in_out network_def` and `ckpt_export` with
    no argument beyond the files, in process (the functions `python -m monai.bundle` calls), from a copied bundle
    folder: network_def is then the bundle's default network, which compiles with torch.jit.script."""
    bundle = tmp_path / family
    shutil.copytree(resolve_bundle(family), bundle)
    monkeypatch.chdir(bundle)
    files = {"meta_file": "configs/metadata.json", "config_file": "configs/inference.yaml"}
    verify_net_in_out("network_def", device="cpu", **files)

    network = export_network(bundle / "runs" / family, bundle)  # no run there: the default network
    assert network.source == str(bundle / "configs" / "train.yaml")
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    with torchscript_allowed():
        ckpt_export("network_def", filepath="G.ts", ckpt_file="models/model.pt", **files)
    exported = load_torchscript(bundle / "G.ts")
    latent = torch.randn(2, latent_input_size(network), generator=torch.Generator().manual_seed(0))
    if family in CONDITIONAL:
        latent[:, -1] = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        assert torch.equal(exported(latent), network(latent))

    # weights of another architecture: one error naming where the network came from and what to pass
    other = sized_options(family, 2, SIZE, TINY_NETWORKS[family], width=4)
    tiny = build(family, 2, SIZE, num_classes=2 if family in CONDITIONAL else 0, **other)
    with pytest.raises(MedvolInputError, match="train.yaml: the weights do not fit .* pass --run_dir RUN"):
        network.load_state_dict(tiny[exported_network_name(family)].state_dict())


@contextlib.contextmanager
def torchscript_allowed():
    """torch deprecates TorchScript (script, save, load), the format of MONAI's ckpt_export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with torchscript_allowed():
        return torch.jit.load(str(path))


WIRING_MARKER = "# ---- wiring:"


@pytest.mark.parametrize("config", ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml", "logging.conf"))
def test_every_bundle_carries_the_same_wiring(config):
    """Each bundle holds all its configs (the model-zoo layout, no path into another folder); what is not a parameter
    is the same in every bundle, so a fix reaches all families."""
    texts = {family: (resolve_bundle(family) / "configs" / config).read_text() for family in FAMILIES}
    for family, text in texts.items():
        assert "%" not in text.replace("%(", ""), f"{family}/{config} pulls in another file with a macro"
        assert "medvol_bundle." not in text and "bundles/" not in text.split(WIRING_MARKER)[-1]
    if config == "logging.conf":
        wiring = dict(texts)
    elif config == "multi_gpu_train.yaml":
        wiring = {family: text[text.index("distributed: true") :] for family, text in texts.items()}
    else:
        assert all(WIRING_MARKER in text for text in texts.values()), config
        wiring = {family: text[text.index(WIRING_MARKER) :] for family, text in texts.items()}
    reference = wiring["wgan_gp"]
    assert [family for family, text in wiring.items() if text != reference] == []


def run_config(config_file: Path, overrides: dict) -> ConfigWorkflow:
    """What `python -m monai.bundle run --config_file CONFIG --KEY VALUE...` does, without the CLI's trust warning."""
    workflow = ConfigWorkflow(config_file=str(config_file), workflow_type=None, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.mark.parametrize("spatial_dims", (2, 3))
@pytest.mark.parametrize("family", FAMILIES)
def test_train_then_sample_config(family, spatial_dims, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing in a bundle depends on the working directory
    run_dir, out_dir = tmp_path / "run", tmp_path / "synthetic"
    configs = resolve_bundle(family) / "configs"
    run_config(configs / "train.yaml", tiny_overrides(family, spatial_dims, prepared[spatial_dims], run_dir))

    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["iteration"] == 2
    state = torch.load(run_dir / "checkpoints" / latest["file"], weights_only=True)
    assert set(state["networks"]) == ({"autoencoder"} if family in ("cae", "vae") else {"generator", "critic"})
    record = json.loads((run_dir / "run.json").read_text())
    assert record["family"] == family and record["spatial_dims"] == spatial_dims
    assert record["image_size"] == [SIZE] * spatial_dims
    assert record["num_classes"] == (2 if family in CONDITIONAL else 0)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["effective_batch"] == 4
    assert list((run_dir / "tensorboard").iterdir()), "no TensorBoard event file"
    assert list((run_dir / "samples").glob("*.png")), "no sample picture"

    assert_export_generates_as_sampling(run_dir, family)

    run_config(configs / "inference.yaml", {"run_dir": str(run_dir), "n": 2, "output_dir": str(out_dir), "device": "cpu"})
    datalist = json.loads((out_dir / "datalist.json").read_text())
    expected = 2 * (2 if family in CONDITIONAL else 1)
    assert datalist["numTraining"] == len(datalist["training"]) == expected
    assert datalist["provenance"]["checkpoint"].endswith(latest["file"])
    assert datalist["spatial_dims"] == spatial_dims and datalist["classes"] == ["normal", "lesion"]
    if family in CONDITIONAL:
        assert sorted(e["label_name"] for e in datalist["training"]) == ["lesion", "lesion", "normal", "normal"]
    window = record["intensity"]["window"]
    for entry in datalist["training"]:
        image = nib.load(entry["image"])
        assert image.shape == (SIZE,) * spatial_dims
        assert np.allclose(image.header.get_zooms()[:spatial_dims], 1.0)  # the phantoms' 1 mm voxels
        values = np.asarray(image.dataobj)
        assert np.isfinite(values).all()
        assert window[0] - 1e-3 <= values.min() and values.max() <= window[1] + 1e-3  # back in source units
        assert b"SYNTHETIC" in image.header["descrip"].tobytes()


def assert_export_generates_as_sampling(run_dir: Path, family: str) -> None:
    """RUN/models/model.pt, exported by `ckpt_export` (in process) through the inference config's `network_def` with
    `run_dir` pointing at the run, gives as TorchScript the images of the network sampling uses."""
    model, exported = run_dir / "models" / "model.pt", run_dir.parent / "G.ts"
    with torchscript_allowed():
        ckpt_export("network_def", filepath=str(exported), ckpt_file=str(model), run_dir=str(run_dir),
                    config_file=str(resolve_bundle(family) / "configs" / "inference.yaml"),
                    meta_file=str(resolve_bundle(family) / "configs" / "metadata.json"))
    scripted = load_torchscript(exported)
    reference = next(iter(load_networks(RunRecord.load(run_dir), model).values()))
    z = torch.randn(3, reference.latent_size, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 0, 1])
    latent = torch.cat([z, labels[:, None].float()], dim=1) if family in CONDITIONAL else z
    assert latent.shape[1] == latent_input_size(export_network(run_dir))
    with torch.no_grad():
        expected = reference.decode(z) if family in ("cae", "vae") else reference(z, labels if family in CONDITIONAL else None)
        assert torch.equal(scripted(latent), expected)


def test_nested_overrides_apply(prepared):
    workflow = load_workflow("dcgan", "train", {"dataset_dir": str(prepared[2]), "train#dataloader#num_workers": 1})
    assert workflow.parser["train#dataloader#num_workers"] == 1
    assert workflow.parser["family"] == "dcgan"


def test_unknown_bundle_lists_the_choices():
    with pytest.raises(MedvolInputError, match="available bundles: cae, vae"):
        resolve_bundle("stylegan")


@pytest.mark.slow
def test_two_gloo_processes_train_two_iterations_and_write_one_checkpoint(prepared, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides("wgan_gp", 2, prepared[2], run_dir)
    overrides.pop("device")  # the multi-GPU config picks the device: cuda:<local rank>, or the CPU with gloo
    overrides["batch_size"] = 2
    command = torchrun_command(2, "wgan_gp", overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint_*.pt"))
    assert [p.name for p in checkpoints] == ["checkpoint_00000002.pt"]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == 2
    assert len(list((run_dir / "tensorboard").iterdir())) == 1  # rank 0 only
    state = torch.load(checkpoints[0], weights_only=True)
    assert all(key.startswith("module.") for key in state["networks"]["generator"])  # trained wrapped in DDP
    assert sys.executable in command


@pytest.mark.slow
def test_monai_bundle_command_line_trains_from_the_repository_root(prepared, tmp_path):
    """The literal `python -m monai.bundle run --config_file bundles/NAME/configs/train.yaml --KEY VALUE ...`."""
    run_dir = tmp_path / "run"
    overrides = tiny_overrides("dcgan", 3, prepared[3], run_dir)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/dcgan/configs/train.yaml"]
    for key, value in overrides.items():
        command += [f"--{key}", repr(value)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == 2
    assert json.loads((run_dir / "run.json").read_text())["spatial_dims"] == 3


# the commands of docs/bundles.md and the bundles' docs/README.md, word for word but for the number of samples (RUN:
# the bundle's default run folder)
SAMPLE_COMMAND = "python -m monai.bundle run --config_file configs/inference.yaml --run_dir RUN --n 2 --output_dir OUT"
EXPORT_COMMAND = (
    "python -m monai.bundle ckpt_export network_def --filepath G.ts --ckpt_file RUN/models/model.pt"
    " --config_file configs/inference.yaml --meta_file configs/metadata.json"
)
VERIFY_COMMAND = (
    "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json"
    " --config_file configs/inference.yaml"
)


@pytest.mark.slow
@pytest.mark.parametrize("family", ("cgan", "vae"))
def test_bundle_copied_alone_trains_samples_exports_and_verifies(family, prepared, tmp_path):
    """The model-zoo way: a bundle folder copied elsewhere, `python -m monai.bundle` run from that folder: train into
    the default run folder (narrow networks at the default latent size, which metadata.json states), then the
    documented sample, export and verify commands as written; the TorchScript generator gives the checkpointed
    generator's images. (Every family's export and verification run in process in the tests above.)"""
    bundle = tmp_path / "copied" / family
    shutil.copytree(resolve_bundle(family), bundle)
    run_dir, out_dir = bundle / "runs" / family, tmp_path / "synthetic"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def run(command: list[str]) -> str:
        result = subprocess.run(command, cwd=bundle, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    def documented(command: str) -> str:
        words = command.replace("RUN", f"runs/{family}").replace("OUT", str(out_dir)).split()
        return run([sys.executable, *words[1:]])

    network = {key: value for key, value in TINY_NETWORKS[family].items() if key != "latent_size"}
    overrides = {**tiny_overrides(family, 2, prepared[2], run_dir), "network": network, "evaluate_every": 0}
    overrides.pop("output_dir")  # the default, runs/<family>
    command = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(bundle), "--config_file",
               str(bundle / "configs" / "train.yaml")]
    run(command + [word for key, value in overrides.items() for word in (f"--{key}", repr(value))])
    assert (run_dir / "models" / "model.pt").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["bundle"] == str(bundle) and record["model"]["iteration"] == 2

    documented(SAMPLE_COMMAND)
    assert len(json.loads((out_dir / "datalist.json").read_text())["training"]) == 2 * (2 if family in CONDITIONAL else 1)
    assert "exported to file: G.ts" in documented(EXPORT_COMMAND)
    assert "data shape of network is verified with no error" in documented(VERIFY_COMMAND)

    scripted = load_torchscript(bundle / "G.ts")
    reference = next(iter(load_networks(RunRecord.load(run_dir), run_dir / "models" / "model.pt").values()))
    z = torch.randn(2, reference.latent_size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        if family in CONDITIONAL:
            images, expected = scripted(torch.cat([z, labels[:, None].float()], dim=1)), reference(z, labels)
        else:
            images, expected = scripted(z), reference.decode(z)
    assert images.shape == (2, 1, SIZE, SIZE)
    assert torch.equal(images, expected)


def test_torchrun_command_passes_nested_ids_and_the_bundle_root():
    command = torchrun_command(2, "wgan_gp", {"train#dataloader#num_workers": 2})
    assert command[command.index("--train#dataloader#num_workers") + 1] == "2"
    assert command[command.index("--bundle_root") + 1] == repr(str(resolve_bundle("wgan_gp")))
