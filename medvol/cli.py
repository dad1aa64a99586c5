"""The `medvol` command: argument parsing and dispatch.

Each sub-command's work lives in `medvol.commands.<name>.run(**options) -> int`, a function with one keyword
parameter per option (`_add_<name>` declares them); this module only parses, dispatches and turns user errors
(`MedvolInputError`) into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from medvol import __version__, defaults, families
from medvol.errors import MedvolInputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _batch_size(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch size must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full command-line contract of DESIGN.md: one `_add_<command>` per sub-command. Each option's destination
    is the name of a keyword parameter of ``medvol.commands.<command>.run``, which `main` calls with them."""
    parser = argparse.ArgumentParser(
        prog="medvol",
        description="Synthetic volumetric (3D) and slice-wise (2D) medical images on top of MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"medvol {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_inspect, _add_convert, _add_prepare, _add_train, _add_sample, _add_evaluate, _add_bench, _add_demo):
        add(sub)
    return parser


def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="list every image series under PATH with its geometry and problems",
        description="PATH is a DICOM file or folder tree, a NIfTI file, or a folder of 2D images. For every series "
        "prints uid, description, modality, files, shape [x, y, z], spacing [x, y, z] mm, origin and direction "
        "(3x3 row-major, LPS patient frame, as SimpleITK reports them) and a list of problems.",
    )
    p.add_argument("path", help="DICOM file or folder, NIfTI file, or image folder")
    p.add_argument("--json", dest="as_json", action="store_true", help="print machine-readable JSON instead of a table")


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert one DICOM series or 2D image to NIfTI with geometry preserved",
        description="Reads one series (DICOM folder or file, NIfTI, PNG/JPEG) and writes it as .nii or .nii.gz with "
        "spacing, origin and direction preserved. A folder with several series needs --series.",
    )
    p.add_argument("input_path", metavar="input", help="DICOM folder/file, NIfTI or 2D image")
    p.add_argument("output", help="output path ending in .nii or .nii.gz")
    p.add_argument("--series", help="SeriesInstanceUID or SeriesDescription to pick when INPUT holds several series "
                   "(a volume id such as UID#echo2, as `medvol inspect` lists it, for one echo or time point)")


def _add_prepare(sub) -> None:
    from medvol.data.splits import DEFAULT_FRACTIONS
    from medvol.io.duplicates import NEAR_DUPLICATE_CORRELATION

    p = sub.add_parser(
        "prepare",
        help="build a datalist (subjects, labels, patient-level splits) and a report of every input file",
        description="Discovers images under SOURCE (DICOM series, NIfTI files, one folder per class of 2D images, "
        "or a Decathlon dataset.json), validates them, and writes DIR/datalist.json, DIR/report.json "
        "(every input file with its status and, when skipped, the reason) and DIR/preview.png (a few training "
        "samples per class exactly as the model will see them: look at it before training).",
    )
    p.add_argument(
        "source",
        help="folder of images, DICOM tree, a Decathlon dataset.json, a MedMNIST-style .npz (train/val/test _images "
        "and _labels arrays; written out as NIfTI, official split kept), or built-in phantoms: 'builtin:phantoms3d', "
        "'builtin:phantoms2d', or 'phantoms' (3D with --mode volume, 2D with --mode slice)",
    )
    p.add_argument("--out", required=True, help="output folder for datalist.json, report.json and preview.png")
    p.add_argument(
        "--mode",
        choices=["slice", "volume"],
        default=None,
        help="slice-wise 2D or volumetric 3D samples (default: volume for 3D sources, slice for 2D images; 2D "
        "images cannot be prepared in volume mode)",
    )
    p.add_argument(
        "--labels",
        help="CSV of class labels: a header naming the id and label columns (id,label; patient,diagnosis; ...) or "
        "two columns without header; ids are subject ids, file names or stems. A labels.csv in SOURCE is used "
        "unless --labels none",
    )
    p.add_argument("--id-column", help="CSV column holding the ids (when the header does not make it clear)")
    p.add_argument("--label-column", help="CSV column holding the labels (when the header does not make it clear)")
    p.add_argument(
        "--unlabelled",
        choices=["skip", "keep"],
        help="images the CSV does not label: skip them (listed in report.json) or keep them without a label; "
        "without this option they are an error",
    )
    p.add_argument(
        "--size",
        type=_ints,
        help="shape the samples are brought to, comma separated (e.g. 64,64,64 or 64,64); how: see --fit. "
        "With --mode slice and 3 values (e.g. 32,48,32), volumes are brought to that grid as --mode volume would "
        "and cut into its axial slices (32x48), so 2D and 3D models see the same voxels. "
        "Default: keep the shapes here; training brings them to its image size the same way",
    )
    p.add_argument(
        "--fit",
        choices=["fit", "crop_pad", "resize"],
        help="how images reach --size: 'fit' scales the whole field of view into it keeping the aspect ratio and "
        "pads with background (default without --spacing); 'crop_pad' centre-crops/pads without scaling "
        "(default with --spacing); 'resize' stretches every axis",
    )
    p.add_argument(
        "--crop-foreground",
        action="store_true",
        help="crop each image to the body (foreground bounding box) before fitting it to --size",
    )
    p.add_argument(
        "--duplicates",
        choices=["keep", "drop", "error"],
        default="keep",
        help="identical images (same pixels) of different subjects or classes, which would leak test images into "
        "training: 'keep' every copy and put each group's subjects in one split (default: nothing is lost, nothing "
        "leaks), 'drop' the copies of other subjects than the first, or stop with an 'error'. Counts of exact and "
        f"near duplicates (thumbnail correlation above {NEAR_DUPLICATE_CORRELATION:g}, reported only) go to "
        "report.json",
    )
    p.add_argument("--spacing", type=_floats, help="target spacing in mm, comma separated (e.g. 1,1,1)")
    p.add_argument(
        "--split",
        type=_floats,
        help=f"train,validation,test fractions (default {','.join(f'{f:g}' for f in DEFAULT_FRACTIONS)}; a MedMNIST "
        ".npz keeps its official split unless this is given)",
    )
    p.add_argument(
        "--class-names",
        type=lambda text: [name.strip() for name in text.split(",")],
        help="names of the integer class labels 0,1,... in order, comma separated (e.g. normal,hyperplasia for "
        "AdrenalMNIST3D: MedMNIST .npz files carry numbers only)",
    )
    p.add_argument("--seed", type=int, default=defaults.SEED,
                   help="seed of the patient-level split (default %(default)s)")
    p.add_argument(
        "--train-fraction", type=float, default=None,
        help="keep only this share of the training subjects (stratified by class; e.g. 0.1 for a low-data "
             "experiment); validation and test splits stay those of the full dataset, left-out subjects are listed "
             "in report.json")
    p.add_argument(
        "--accept-irregular-dicom",
        metavar="KINDS",
        help="use DICOM volumes with these geometry problems anyway, comma separated: gap (missing slices), spacing "
        "(non-uniform), tilt (gantry tilt / sheared stack), duplicate (slices at one position), orientation (slices "
        "not parallel), or all. Default: such volumes are skipped and listed in report.json with the reason",
    )


def _add_train(sub) -> None:
    low, high = defaults.WIDTH_DOUBLING_DATASET_SIZES
    p = sub.add_parser(
        "train",
        help="train a generative bundle; the same command on an existing RUN resumes",
        description="Resolves the bundle, prepares the data, plans memory and trains. Checkpoints live in "
        "RUN/checkpoints/; running the same command again resumes from the latest one.",
    )
    p.add_argument("--bundle", required=True, help=families.bundle_help())
    p.add_argument("--data", required=True, help="folder written by `medvol prepare`, or raw data to prepare on the fly")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--spatial-dims", type=int, choices=[2, 3], help="2 (slice-wise) or 3 (volumetric)")
    p.add_argument("--image-size", type=_ints, help="training image size, comma separated (default: the prepared size, else the bundle's)")
    p.add_argument("--iterations", type=int, help="generator iterations to train")
    p.add_argument("--seed", type=int, default=defaults.SEED, help="random seed (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, help="save a checkpoint every K iterations")
    p.add_argument(
        "--evaluate-every",
        type=int,
        help="every K iterations: FID and diversity of generated samples against the validation split (TensorBoard "
        "evaluation/*), keeping the checkpoint of the lowest FID as 'best'; 0: off (default: "
        f"{defaults.AUTO_EVALUATIONS} evaluations in runs of {defaults.AUTO_EVALUATION_MIN_ITERATIONS} iterations or "
        "more, off for shorter ones)",
    )
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="'auto' (memory plan) or an effective batch size")
    p.add_argument("--max-memory", type=float, help="memory budget in GB for the planner")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="training precision; auto (default): bf16 on GPUs that support it (else fp16) and on CPUs with native "
        "bfloat16 instructions (AVX512-BF16 or AMX), fp32 on other CPUs; the choice and why are printed and recorded "
        "in RUN/plan.json",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default: cuda when available)")
    p.add_argument("--nproc", type=int, default=1, help="processes for distributed training (torchrun)")
    p.add_argument(
        "--width",
        type=int,
        help=f"base channel count of the networks (default: {defaults.BASE_WIDTH[2]} in 2D, {defaults.BASE_WIDTH[3]} "
        f"in 3D, doubled from {low} and {high} training samples); run.json records the widths and parameter counts",
    )
    p.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="network option of the bundle (repeatable; a dotted key reaches one network), e.g. latent_size=64, "
        "minibatch_std=true, critic.channels=[32,64,128]",
    )
    p.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="objective option of the bundle (repeatable), e.g. critic_steps=3, penalty_weight=5, lr=2e-4, "
        "auxiliary_weight=0.5, mode_seeking_weight=0.5",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="classical augmentation (rotation, zoom, shift, shear; no flips) of the training images, drawn anew every "
        "time an image is read; the generator then learns the augmented variations too (docs/results.md: MedNIST "
        "with 180 images)",
    )
    p.add_argument(
        "--critic-augment",
        metavar="off|fixed:P|ada",
        help="differentiable augmentation (translation, rotation, scaling, brightness, contrast, cutout) of the real and "
        "generated images before every critic call, never of the samples: off (the bundle's default), fixed:P (each "
        "operation with probability P), or ada (P adapted so that the critic scores a fraction TARGET of real images "
        "positive; ada:target=0.6,speed=0.005); ops=translation+cutout picks operations. GAN families only",
    )


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate synthetic NIfTI or DICOM files from a trained run")
    p.add_argument("run_dir", metavar="run", help="run folder written by `medvol train`")
    p.add_argument("--n", type=int, required=True, help="number of samples (per class for conditional models)")
    p.add_argument("--label", help="only this class label")
    p.add_argument("--format", dest="fmt", choices=["nifti", "dicom", "png"], default="nifti",
                   help="output format (default %(default)s): NIfTI with the training geometry, one DICOM series per "
                   "sample, or for 2D runs PNG in source units (8-bit when the training images' values fit 0-255, else "
                   "16-bit)")
    p.add_argument("--out", required=True, help="output folder (gets datalist.json)")
    p.add_argument("--seed", type=int, default=defaults.SEED, help="sampling seed (default %(default)s)")
    p.add_argument(
        "--checkpoint",
        default="latest",
        help="'latest' (default), 'best' (lowest FID of the evaluations during training), a file name in "
        "RUN/checkpoints, or a path",
    )


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="is the synthetic data faithful, diverse, private and useful? metrics.json and report.html",
        description="Compares a synthetic folder with the real data: FID/KID with real-vs-real baselines, MMD, "
        "precision/recall, density/coverage, MS-SSIM diversity and a mode_collapse flag, nearest-neighbour privacy "
        "(possible copies of training images), recognisability by a real-trained classifier and, with --utility, "
        "classifiers trained on real / real+augmentation / synthetic / real+synthetic / real+augmentation+synthetic "
        "(paired seeds, the same optimiser steps in every arm, tested on the real test split; optional arms "
        "--balance and --pretrain-synthetic, sample selection --select-confidence). Writes OUT/metrics.json and a self-contained OUT/report.html. "
        "With --reconstruct RUN instead of --synthetic: how well an autoencoder run reconstructs the held-out images.",
    )
    p.add_argument("--real", required=True, help="datalist.json written by `medvol prepare` (needs training and test splits)")
    p.add_argument(
        "--synthetic",
        help="a `medvol sample` output (labels from its datalist.json) or a folder of images/volumes (unlabelled, "
        "or one sub-folder per class)",
    )
    p.add_argument(
        "--reconstruct",
        metavar="RUN",
        help="instead of --synthetic: a trained cae or vae run; reconstructs the held-out (test) images of --real with "
        "it and writes PSNR, SSIM and MAE per image (mean and sd), its parameters (OUT/metrics.json) and inputs next "
        "to reconstructions (OUT/reconstruction.png, tri-planar for volumes). A 2D run trained on slices reconstructs "
        "the same volumes slice by slice, scored on the re-stacked volumes, so 2D and 3D runs compare",
    )
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.html, caches reused by reruns)")
    p.add_argument("--utility", action="store_true", help="run the utility study (classifiers per arm and seed)")
    p.add_argument("--seeds", type=int, default=defaults.UTILITY_SEEDS,
                   help="seeds of the utility study (default %(default)s)")
    p.add_argument("--synthetic-ratio", type=float, default=defaults.SYNTHETIC_RATIO,
                   help="synthetic samples per real sample in the mixed arms (default %(default)g)")
    p.add_argument("--classifier-epochs", type=int,
                   help=f"epochs of every classifier trained (default: the recipe's {defaults.CLASSIFIER_EPOCHS} epochs, "
                        f"and at least {defaults.CLASSIFIER_MIN_STEPS} optimiser steps so that small training sets "
                        "converge); every utility arm takes the optimiser steps these epochs of the real training "
                        "split take, whatever its own size")
    p.add_argument(
        "--features",
        help="feature extractor checkpoint (TorchScript or a medvol classifier) instead of the classifier trained on "
        "the real training split",
    )
    p.add_argument("--run", dest="run_dir", metavar="RUN", help="the training run: its TensorBoard curves go into the report")
    p.add_argument(
        "--filter",
        dest="filter_synthetic",
        action="store_true",
        help="drop the synthetic samples a real-vs-synthetic classifier separates most confidently and report the "
        "utility before and after (implies --utility)",
    )
    p.add_argument(
        "--select-confidence",
        type=float,
        metavar="P",
        help="sample selection: the utility arms use only the synthetic samples that a classifier trained on the real "
        "training split (the recognisability one; never the test split) assigns to their own class with probability "
        ">= P, e.g. 0.9; metrics.json and the report say how many were kept per class (implies --utility)",
    )
    p.add_argument(
        "--balance",
        action="store_true",
        help="add the utility arm real+augmentation+balanced: the real training split with every minority class "
        "filled with synthetic samples of that class up to the majority count, all augmented (implies --utility)",
    )
    p.add_argument(
        "--pretrain-synthetic",
        action="store_true",
        help="add the utility arm synthetic->real+augmentation: half the optimiser steps pre-training on the "
        "synthetic samples, half fine-tuning on real+augmentation (implies --utility)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default: cuda when available)")
    p.add_argument("--max-samples", type=int, help="at most this many samples per real split and synthetic set (seeded "
                   "subset) in the distribution metrics; privacy searches the whole training split and --utility uses "
                   "every sample")
    p.add_argument("--seed", type=int, default=defaults.SEED,
                   help="seed of subsets, feature extractor, bootstrap (default %(default)s)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark loading, caching and training speed")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON")


def _add_demo(sub) -> None:
    from medvol.commands.demo import DEMO_MINUTES, DEMO_OUT

    p = sub.add_parser("demo", help="the main job on built-in phantoms: prepare, train, sample, write a run folder")
    p.add_argument("--out", default=DEMO_OUT, help="output folder (default ./%(default)s)")
    p.add_argument(
        "--minutes",
        type=float,
        default=DEMO_MINUTES,
        help="cap on the training time in minutes (default %(default)g); each model stops at its iteration target or "
        "its share of this cap, whichever comes first",
    )


class _OnlyOnce(logging.Filter):
    """Lets each distinct warning message through once (a warning repeated per file or per iteration says nothing
    new); other levels pass."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


# third-party loggers that talk at INFO about their own machinery (ignite: every run start/end and epoch); shown
# with --verbose
QUIET_LOGGERS = ("ignite", "monai", "torch")


def configure_logging(verbose: bool = False, rank_zero: bool = True) -> None:
    """The console of every medvol command: medvol's own INFO lines and everyone's warnings (each once) and errors;
    with `verbose` everything down to DEBUG. Processes other than rank 0 of a distributed run show errors only.

    Args:
        verbose: show debug messages and third-party INFO lines.
        rank_zero: False in the other processes of a distributed run.
    """
    root = logging.getLogger()
    if not root.handlers:  # a host application (or pytest) may have its own
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        for handler in root.handlers:
            handler.addFilter(_OnlyOnce())
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if not rank_zero:
        for name in ("", "medvol", *QUIET_LOGGERS):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `medvol` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    module = importlib.import_module(f"medvol.commands.{args.command}")
    options = {key: value for key, value in vars(args).items() if key not in ("command", "verbose")}
    try:
        return int(module.run(**options) or EXIT_OK)
    except MedvolInputError as err:
        print(f"medvol {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into head/less that closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or medvol.engines.trainer.TrainingInterrupted (SIGINT/SIGTERM)
        print(f"medvol {args.command}: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return int(getattr(interrupt, "exit_code", 130))
    except (OSError, RuntimeError) as err:  # a full disk or an unwritable folder, possibly wrapped by MONAI
        from medvol.io.files import os_error_line, user_fixable_os_error

        problem = user_fixable_os_error(err)
        if problem is None:
            raise
        print(f"medvol {args.command}: error: {os_error_line(problem, options.get('out'))}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
