"""The ``sbirkit`` command line: parse arguments, then call the library. No logic lives here.

Errors: every :class:`~sbirkit.errors.SbirkitError` (and the few library exceptions that mean an
ordinary mistake, see :func:`_ordinary_message`) is printed as one ``error: ...`` line on
stderr with exit code 2, in one place (:class:`_App`); ``--debug`` or ``SBIRKIT_DEBUG=1``
shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, NoReturn, Optional

import typer
from typer.core import TyperGroup, TyperOption

from .errors import SbirkitError, UsageError
from .registry import Registry

_PACKAGE = Path(__file__).resolve().parent


def _names(kind: str) -> list[str]:
    """Registered names for the help text; an import problem shows up as '(unavailable)'."""
    try:
        if kind == "datasets":
            from .data import list_datasets

            return list_datasets()
        if kind == "backbones":
            from .models import list_backbones

            return list_backbones()
        if kind == "methods":
            from .methods import list_methods

            return list_methods()
        if kind == "presets":
            from .engine.config import list_presets

            return list_presets()
        if kind == "splits":
            from .data.splits import list_manifests

            return list_manifests()
    except Exception as exc:  # pragma: no cover - only when a module is broken
        return [f"(unavailable: {exc})"]
    raise KeyError(kind)


def _help() -> str:
    backbones = [b for b in _names("backbones") if "/" not in b] + ["timm/<name>", "tv/<name>"]
    return (
        "sbirkit: sketch-based image retrieval. Train, evaluate, index and search.\n\n"
        f"Datasets: {', '.join(_names('datasets'))}\n\n"
        f"Backbones: {', '.join(backbones)}\n\n"
        "Run 'sbirkit list' for methods, presets and zero-shot split manifests. "
        "Errors are one line (exit code 2); --debug shows the traceback."
    )


# ---- one place for errors ----------------------------------------------------------------------
def _raised_by_sbirkit(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is sbirkit's own code (a check of its
    own), not a third-party library's."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):  # pragma: no cover - odd frame file names
        return False


def _ordinary_message(exc: BaseException) -> str | None:
    """The one-line message of an ordinary mistake; None for a bug (which keeps its traceback).

    Ordinary: any :class:`SbirkitError`; an ``OSError`` from the system (a missing or unreadable
    file, a full disk: ``errno`` is set); and a ``ValueError`` or a ``KeyError`` carrying a
    sentence that sbirkit's own code raised (argument checks, "unknown backbone ..."). A
    ``ValueError``/``KeyError`` raised inside numpy, torch or another library, or a bare
    ``KeyError('x')`` from a dict lookup, is a bug.
    """
    if isinstance(exc, SbirkitError):
        message = str(exc)
        if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
            message = str(exc.args[0])  # a KeyError's str() is its argument's repr
    elif isinstance(exc, OSError) and exc.errno is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        message = f"{where}: {exc.strerror}" if exc.filename is not None else str(exc)
    elif isinstance(exc, KeyError):
        if not (_raised_by_sbirkit(exc) and exc.args and isinstance(exc.args[0], str) and " " in exc.args[0]):
            return None
        message = exc.args[0]  # unwrapped: str(KeyError) would add quotes around it
    elif isinstance(exc, ValueError) and _raised_by_sbirkit(exc):
        message = str(exc)
    else:
        return None
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or type(exc).__name__


def _debug_wanted(ctx: typer.Context) -> bool:
    if ctx.params.get("debug"):
        return True
    return os.environ.get("SBIRKIT_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _hide_flag_types(command, ctx: typer.Context) -> None:
    """Typer 0.29 prints ``<bool>`` beside every flag in ``--help``; a flag takes no value, so
    give flags (and the help option) an empty metavar, which the help renderer shows as nothing."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class _Group(TyperGroup):
    """Every command group of the CLI: flags show no ``<bool>`` type in ``--help``."""

    def get_command(self, ctx: typer.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_types(command, ctx)
        return command

    def format_help(self, ctx: typer.Context, formatter) -> None:
        _hide_flag_types(self, ctx)
        super().format_help(ctx, formatter)


class _App(_Group):
    """The top-level group: turns an ordinary mistake raised by any command into one line."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exit codes, usage errors: typer's own
            raise
        except Exception as exc:
            message = _ordinary_message(exc)
            if message is None or _debug_wanted(ctx):
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(help=_help(), no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  cls=_App)
data_app = typer.Typer(help="Generate, inspect and validate datasets.", no_args_is_help=True, cls=_Group)
app.add_typer(data_app, name="data")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="SBIRKIT_DEBUG", show_envvar=False,
                               help="Show the full traceback of an error instead of its one-line "
                               "message (or set SBIRKIT_DEBUG=1)."),
) -> None:
    # the flag is read by _App.invoke; nothing else to do before a command runs
    pass


def _fail(message: str) -> NoReturn:
    """Stop the command with a one-line ``error: message`` and exit code 2 (via :class:`_App`)."""
    raise UsageError(message)


def _positive(flag: str, value: int) -> None:
    if value < 1:
        _fail(f"{flag}: expected a positive integer, got {value}")


def _one_of(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"{flag}: expected one of {', '.join(choices)}, got {value!r}")


def _parse_options(options: list[str] | None) -> dict:
    """``key=value`` pairs with YAML-typed values (``max_per_class=20`` -> int, ``1e-3`` -> float)."""
    from .engine.config import load_yaml

    out = {}
    for item in options or []:
        if "=" not in item:
            _fail(f"option {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = load_yaml(value)
    return out


@app.command("list")
def list_cmd() -> None:
    """List registered datasets, backbones (and the timm/<name>, tv/<name> forms), methods, presets, splits."""
    for kind in ("datasets", "backbones", "methods", "presets", "splits"):
        names = _names(kind)
        if kind == "backbones":
            names = [n for n in names if "/" not in n] + ["timm/<name>", "tv/<name>"]
        typer.echo(f"{kind}: {', '.join(names)}")
        if kind == "backbones":
            typer.echo("  timm/<name>: any model in timm.list_models(), e.g. timm/resnet18 "
                       "(built without downloading weights)")
            typer.echo(f"  tv/<name>: torchvision, e.g. tv/resnet18; {', '.join(_torchvision_names())}")


def _torchvision_names() -> list[str]:
    try:
        from .models.torchvision_backbones import supported_torchvision_models

        return list(supported_torchvision_models())
    except Exception as exc:  # pragma: no cover - only when torchvision is broken
        return [f"(unavailable: {exc})"]


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (generic folder layout); must be new or empty "
                             "unless --overwrite."),
    num_classes: int = typer.Option(20, help="Number of object classes."),
    photos_per_class: int = typer.Option(30, help="Photos (instances) per class."),
    sketches_per_photo: int = typer.Option(1, help="Sketches drawn of each photo."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Generator seed."),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite",
                                   help="Write into a non-empty OUT: first delete what an export writes there "
                                   "(photo/, sketch/, metadata.csv), keeping any other file."),
) -> None:
    """Write the built-in synthetic dataset to OUT as photo/<class>, sketch/<class> and metadata.csv.

    OUT must be new or empty: writing over an earlier export would mix its files with the new ones
    and give the old samples no split. --overwrite replaces an earlier export.
    """
    from .data import create_dataset
    from .data.synthetic import write_folder_layout
    from .data.synthetic.writer import prepare_output_folder

    for flag, value in (("--num-classes", num_classes), ("--photos-per-class", photos_per_class),
                        ("--sketches-per-photo", sketches_per_photo), ("--image-size", image_size)):
        _positive(flag, value)
    if not overwrite:
        prepare_output_folder(out)  # refuse a non-empty OUT before generating anything
    ds = create_dataset("synthetic", num_classes=num_classes, photos_per_class=photos_per_class,
                        sketches_per_photo=sketches_per_photo, image_size=image_size, seed=seed)
    counts = write_folder_layout(ds, out, progress=True, overwrite=overwrite)
    typer.echo(f"wrote {out}: {counts}")


def _check_loader_call(format: str, path: Optional[Path], options: dict) -> None:
    """Refuse a missing dataset root or an option the loader does not take, naming the flag."""
    import inspect

    from .data import DATASETS, list_datasets

    list_datasets()  # registers the built-in loaders
    factory = DATASETS.get(format)  # an unknown format is a one-line error already
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - a loader without a signature
        return
    if path is None and params and params[0].default is inspect.Parameter.empty \
            and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        _fail(f"PATH: format {format!r} reads files: expected the dataset root, "
              f"e.g. 'sbirkit data info DATA -f {format}'")
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if key not in known:
            _fail(f"--option {key}: format {format!r} has no option {key!r}; "
                  f"it takes: {', '.join(known) or '(none)'}")


@data_app.command("info")
def data_info(
    path: Optional[Path] = typer.Argument(None, help="Dataset root (omit for --format synthetic)."),
    format: str = typer.Option("folder", "--format", "-f", help="Dataset format; see 'sbirkit list'."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Loader option key=value (repeatable)."),
    validate: bool = typer.Option(False, "--validate/--no-validate",
                                  help="Decode every sample and report the ones that fail (exit code 1 if any "
                                  "does)."),
    per_class: bool = typer.Option(True, "--per-class/--no-per-class", help="Print the per-class table."),
) -> None:
    """Validate a dataset and print counts per class, modality, split and user.

    Exit code 0, or 1 when --validate found files that fail to decode, or 2 for a bad path or flag.
    """
    from .data import create_dataset
    from .data.report import format_summary

    options = _parse_options(option)
    _check_loader_call(format, path, options)
    ds = create_dataset(format, str(path) if path is not None else None, **options)
    report = ds.validate(progress=True) if validate else None
    typer.echo(format_summary(ds.summary(), report, per_class=per_class))
    if report is not None and report.failures:
        total = report.checked + len(report.failures)
        typer.secho(f"error: {len(report.failures)} of {total} files failed to load or decode (listed above)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="A preset name (see 'sbirkit list'; shipped in src/sbirkit/configs/) or a YAML path."),
    run_dir: Optional[Path] = typer.Option(None, help="Run folder (default runs/<preset>); resumes if it has last.pt."),
    dry_run: bool = typer.Option(False, "--dry-run/--no-dry-run",
                                 help="Check the config and build the data, model and optimisers, print the resolved "
                                 "config and exit without training or writing anything."),
) -> None:
    """Train a model from a preset; key=value arguments override any config key (train.steps=200).

    Everything that can be checked (every key and value, names of the dataset, backbone, method and
    optimiser, the validation metric eval.select) is checked before the first step.
    """
    import yaml

    from .engine import Trainer, apply_overrides, load_preset

    config = apply_overrides(load_preset(preset), list(ctx.args))
    trainer = Trainer(config, run_dir)
    if dry_run:
        found = trainer.check()
        typer.echo(yaml.safe_dump(found.pop("config"), sort_keys=False).rstrip())
        typer.echo("# dry run: nothing trained or written")
        for key, value in found.items():
            typer.echo(f"# {key}: {value}")
        return
    out = trainer.fit()
    s = trainer.summary
    best = (f"best {s['select']} {s['best_value']:.4f} at step {s['best_step']}" if s.get("best_value") is not None
            else "no validation result (best.pt = the final step)")
    typer.echo(f"trained {s['steps']} steps in {s['seconds']:.0f} s; {best}")
    typer.echo(f"run: {out}")


@app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="A run folder written by 'sbirkit train'."),
    split: str = typer.Option("test", help="Split to evaluate (queries and gallery)."),
    direction: Optional[List[str]] = typer.Option(None, "--direction", "-d",
                                                  help="sketch2photo, photo2sketch, sketch2sketch, photo2photo (repeatable; default all four)."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="Override the run's data section: key=value (root=/path, name=folder)."),
    which: str = typer.Option("best", help="Checkpoint: best (selected on val) or last."),
    gzsl: bool = typer.Option(False, "--gzsl", help="Zero-shot runs: generalised zero-shot, the gallery also holds "
                              "the seen-class items of the split."),
    adapt: Optional[int] = typer.Option(None, "--adapt", help="Adaptive runs (adaptive_fg): adapt on K support pairs "
                                        "of each task first, then score its queries (docs/adaptive_fg.md)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="With --adapt: class (a task per category) or user "
                                        "(a task per user); default: what the run was meta-trained on."),
    draws: int = typer.Option(5, "--draws", help="With --adapt: support draws per category or user."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="With --adapt: meta (the learned inner loop), "
                                           "none, finetune_head or finetune_all; default: the run's own."),
) -> None:
    """Evaluate a run: mAP@all, P@100, P@200 (and Acc@K where instances are paired), per direction."""
    from .engine import evaluate_run
    from .eval import DIRECTIONS

    overrides = _parse_options(data)
    if "options" in overrides and not isinstance(overrides["options"], dict):
        _fail("--data options=...: expected a mapping, e.g. options={category: shoes}")
    protocol = None
    if adapt is not None:
        from .engine.adaptation import AdaptationProtocol

        _positive("--adapt", adapt)
        _positive("--draws", draws)
        if tasks is not None:
            _one_of("--tasks", tasks, ("class", "user"))
        if strategy is not None:
            _one_of("--strategy", strategy, ("meta", "none", "finetune_head", "finetune_all"))
        _one_of("--which", which, ("best", "last"))
        protocol = AdaptationProtocol.for_run(run, which, k=adapt, group_by=tasks, draws=draws, strategy=strategy)
    elif tasks is not None or strategy is not None:
        _fail("--tasks, --strategy: expected with --adapt K")
    report = evaluate_run(run, split=split, directions=direction or list(DIRECTIONS), data_overrides=overrides,
                          which=which, progress=True, gzsl=gzsl, protocol=protocol)
    if protocol is not None:
        p = report["protocol"]
        typer.echo(f"protocol: {p['name']} ({p['tasks']}-level tasks, k={p['k']}, {p['draws']} draws, strategy "
                   f"{p['strategy']}, groups: {', '.join(map(str, p['groups']))})")
    typer.echo(_format_eval(report))
    typer.echo(f"saved: {run / 'eval.json'}")


@app.command("adapt")
def adapt_cmd(
    run: Path = typer.Argument(..., help="A run trained with an adaptive head (method adaptive_fg)."),
    support: Path = typer.Option(..., "--support", help="Folder of the new category's or user's sketch-photo pairs."),
    k: int = typer.Option(5, "-k", "--k", help="Support pairs to adapt on (drawn from the folder with --seed)."),
    out: Path = typer.Option(..., "--out", help="New run folder for the adapted model (eval, index build, search "
                             "accept it)."),
    support_format: str = typer.Option("folder", "--support-format", help="folder (photo/<class>/X.*, "
                                       "sketch/<class>/X-N.*) or qmul-v1 (.mat files)."),
    which: str = typer.Option("best", help="Checkpoint to adapt: best or last."),
    seed: int = typer.Option(0, help="Seed of the draw of the k pairs."),
    split: Optional[str] = typer.Option(None, help="Only pairs of this split of the support folder."),
    strategy: Optional[str] = typer.Option(None, help="meta (default for meta-trained runs), none, finetune_head "
                                           "or finetune_all."),
) -> None:
    """Adapt a meta-trained run to k sketch-photo pairs of a new category or user; the run itself is not changed."""
    from .engine.adaptation import adapt_run

    _positive("-k", k)
    _one_of("--support-format", support_format, ("folder", "qmul-v1"))
    _one_of("--which", which, ("best", "last"))
    if strategy is not None:
        _one_of("--strategy", strategy, ("meta", "none", "finetune_head", "finetune_all"))
    record = adapt_run(run, support, k, out, support_format=support_format, which=which, seed=seed, split=split,
                       strategy=strategy)
    margin = f", margin {record['margin']:.4f}" if record.get("margin") is not None else ""
    typer.echo(f"adapted {run} on k={k} pairs of {support} ({record['strategy']}, {record['steps']} steps{margin}, "
               f"{record['seconds'] * 1000:.0f} ms)")
    typer.echo(f"run: {out}")


def _format_eval(report: dict) -> str:
    """The protocol (dataset, split, gallery, checkpoint) above the metrics table."""
    from .eval import RetrievalResult, format_table

    p, c = report["protocol"], report["checkpoint"]
    head = [
        f"dataset: {p['dataset']}" + (f" ({p['root']})" if p.get("root") else "") + f"  split: {p['split']}",
        f"queries/gallery: {p['gallery']}",
        f"checkpoint: {c['which']} (step {c['step']}, fingerprint {str(c['fingerprint'])[:12]})",
        "",
    ]
    results = {d: RetrievalResult(**r) for d, r in report["results"].items()}
    return "\n".join(head) + format_table(results)


def _run_encoder(run: Path, which: str):
    """(encoder, image_size, model_info) for a trained run (:mod:`sbirkit.index.run_model`)."""
    from .index.run_model import load_run_encoder

    return load_run_encoder(run, which)


def _embed_folder(run: Path, folder: Path, which: str, batch_size: int, modality: str = "photo",
                  before_embedding=None):
    """Embed every image under ``folder`` with a run's model: (embeddings, items, info, skipped count).

    Flags and the folder are checked before the model is loaded, and ``before_embedding(info)``
    (more checks that need the model, e.g. the index factory) runs before any image is embedded.
    Unreadable images are reported on stderr and skipped; a folder with none readable fails.
    """
    import torch

    from .index import embed_image_files, image_items, list_image_files

    _one_of("--modality", modality, ("photo", "sketch"))
    _one_of("--which", which, ("best", "last"))
    _positive("--batch-size", batch_size)
    paths = list_image_files(folder)
    if not paths:
        _fail(f"{folder}: expected image files, found none")
    encoder, size, info = _run_encoder(run, which)
    if before_embedding is not None:
        before_embedding(info)
    fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
    with torch.no_grad():
        emb, ok, failures = embed_image_files(fn, paths, size, batch_size=batch_size, modality=modality)
    for path, reason in failures:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    if not ok:
        _fail(f"{folder}: none of the {len(paths)} images could be read")
    return emb, image_items(ok, folder), info, len(failures)


def _npz_path(out: Path) -> Path:
    """The file ``numpy.savez`` really writes for ``out``: '.npz' is appended unless it ends so."""
    return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")


@app.command()
def embed(
    run: Path = typer.Argument(..., help="Run folder of the model to embed with."),
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Output file with embeddings, ids, paths and labels; '.npz' is "
                             "appended unless the name ends in it (x -> x.npz). In shard mode (--shard, --shards "
                             "or under torchrun): a folder of shards (docs/scale.md)."),
    modality: str = typer.Option("photo", help="photo or sketch: which encoder branch to use."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: this is worker i of n (0-based; e.g. "
                                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); under torchrun the default "
                                        "is RANK/WORLD_SIZE. Each worker embeds its shards of the sorted file list."),
    shards: Optional[int] = typer.Option(None, "--shards", help="How many shards the folder holds (default: the "
                                         "number of workers); worker i embeds shards i, i+n, ... Finished shards "
                                         "are never redone, so more shards lose less work to a killed worker."),
) -> None:
    """Embed a folder of images to disk (.npz: embeddings, ids, paths, labels where the layout gives them),
    or, in shard mode, one worker's shards of it into a folder that 'index build --from-embeddings' reads."""
    import json

    import numpy as np

    from .index.shards import parse_shard_spec, worker_from_env

    env_worker = worker_from_env()
    if shard is not None or shards is not None or (env_worker is not None and env_worker[1] > 1):
        worker, workers = parse_shard_spec(shard) if shard is not None else (env_worker or (0, 1))
        if shards is not None:
            _positive("--shards", shards)
        _embed_shards(run, folder, out, modality, which, batch_size, worker, workers,
                      shards if shards is not None else workers, from_env=shard is None and env_worker is not None)
        return
    target = _npz_path(out)
    if target.is_dir():
        _fail(f"--out {target}: expected a file name, found a folder")
    emb, items, info, skipped = _embed_folder(run, folder, which, batch_size, modality)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, embeddings=emb, ids=np.array([i["id"] for i in items]),
             paths=np.array([i["path"] for i in items]),
             labels=np.array([i.get("class_name", "") for i in items]), model=json.dumps(info, sort_keys=True))
    typer.echo(f"embedded {len(items)} images ({skipped} skipped) -> {target}")


def _embed_shards(run: Path, folder: Path, out: Path, modality: str, which: str, batch_size: int,
                  worker: int, workers: int, num_shards: int, from_env: bool) -> None:
    """``embed`` in shard mode: flags, --out and the folder are checked before the model loads."""
    import torch

    from .index.shards import Manifest, check_out_folder, embed_shards

    _one_of("--modality", modality, ("photo", "sketch"))
    _one_of("--which", which, ("best", "last"))
    _positive("--batch-size", batch_size)
    if workers > num_shards:
        _fail(f"--shards: expected at least as many shards as workers ({workers}), got {num_shards}")
    check_out_folder(out)
    manifest = Manifest.of_folder(folder)

    def load_model():
        encoder, size, info = _run_encoder(run, which)
        fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
        return fn, size, info

    who = f"worker {worker}/{workers}" + (" (torchrun RANK/WORLD_SIZE)" if from_env else "")
    typer.echo(f"{who}: {len(manifest)} files in {folder}, {num_shards} shards -> {out}", err=True)
    with torch.no_grad():
        report = embed_shards(out, manifest, worker, workers, num_shards, load_model, batch_size=batch_size,
                              modality=modality, echo=lambda line: typer.echo(line, err=True))
    typer.echo(f"{who}: embedded {report.rows} images in {len(report.embedded)} shards ({report.skipped} "
               f"unreadable, skipped); {len(report.finished_before)} shards finished earlier"
               + (f"; {len(report.busy)} being written by another worker" if report.busy else "") + f" -> {out}")


index_app = typer.Typer(help="Build and inspect persistent search indexes.", no_args_is_help=True, cls=_Group)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    run: Optional[Path] = typer.Argument(None, help="Run folder of the model to embed with (with "
                                         "--from-embeddings: optional, checked against the shards' model)."),
    folder: Optional[Path] = typer.Argument(None, help="Photo collection (searched recursively; ROOT/<class>/* "
                                            "gives labels). Not with --from-embeddings."),
    out: Path = typer.Option(..., "--out", help="Index folder to write: new, or an index folder (a new version "
                             "replaces the old one; searches running meanwhile see one or the other)."),
    factory: Optional[str] = typer.Option(None, help="FAISS index factory: Flat (exact, the default), IVF256,Flat, "
                                          "HNSW32 ... (an IVF with more lists than photos is shrunk; the one used "
                                          "is printed)."),
    from_embeddings: Optional[Path] = typer.Option(None, "--from-embeddings", help="Build from a shard folder "
                                                   "('embed --shard') or an .npz ('embed --out x.npz') instead of "
                                                   "embedding photos; vectors are read one shard at a time."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Choose the index for this memory budget "
                                             "(e.g. 4GB = 4e9 bytes, 4GiB = 4G = 2^30 bytes): Flat, HNSW, IVF-Flat, "
                                             "IVF-PQ or OPQ+IVF-PQ; recorded with its measured recall (docs/scale.md)."),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", help="Tune nprobe/efSearch until "
                                                  "recall@10 against exact search reaches this on held-out "
                                                  "gallery vectors (default 0.95 with --max-memory)."),
    mmap: Optional[bool] = typer.Option(None, "--mmap/--no-mmap", help="Whether search and serve memory-map the "
                                        "index instead of reading it (default: on with --max-memory or "
                                        "--from-embeddings)."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Embed a photo collection with a trained model (or read shards) and save a FAISS index with its metadata.

    --out, the folder, the flags and the factory are checked before anything is embedded.
    """
    import warnings

    from .index import GalleryIndex
    from .index.autotune import check_target_recall, parse_memory
    from .index.gallery import check_factory

    if factory is not None and max_memory is not None:
        _fail("--factory, --max-memory: expected one of them (--max-memory chooses the factory)")
    budget = parse_memory(max_memory) if max_memory is not None else None
    check_target_recall(target_recall)
    GalleryIndex.check_target(out)
    large = from_embeddings is not None or budget is not None or target_recall is not None
    if from_embeddings is not None:
        if folder is not None:
            _fail(f"FOLDER {folder}: --from-embeddings builds from the embeddings; give no photo folder")
        _index_from_embeddings(from_embeddings, run, out, factory, budget, target_recall, mmap, which)
        return
    if run is None or folder is None:
        _fail("RUN FOLDER: expected a run folder and a photo folder (or --from-embeddings DIR)")
    factory_used = factory or "Flat"
    emb, items, info, skipped = _embed_folder(
        run, folder, which, batch_size,
        before_embedding=lambda info: factory is None or check_factory(factory, info["embed_dim"]))
    if large:
        from .index.autotune import ArraySource

        index = _build_large(ArraySource(emb, items, info), factory, budget, target_recall,
                             mmap if mmap is not None else budget is not None, {"kind": "folder", "path": str(folder)})
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"factory .*: nlist")  # said below, in words
            index = GalleryIndex.build(emb, items, info, factory=factory_used)
        if mmap:
            index.build_info = {"mmap": True}
    saved = index.save(out)
    typer.echo(f"indexed {len(items)} photos ({skipped} unreadable, skipped) with {index.factory} -> {saved}")
    if factory is not None and index.factory != factory:
        typer.echo(f"factory: asked for {factory}, used {index.factory}: {index.factory_note}")


def _build_large(source, factory, budget, target_recall, mmap: bool, source_info: dict):
    """``index build`` through :func:`sbirkit.index.autotune.build_index` (shards, budgets, recall)."""
    import warnings

    from .index.autotune import build_index

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"factory .*: nlist")
        return build_index(source, factory=factory, max_memory=budget, target_recall=target_recall, mmap=mmap,
                           echo=lambda line: typer.echo(line, err=True), source_info=source_info)


def _index_from_embeddings(path: Path, run: Optional[Path], out: Path, factory, budget, target_recall, mmap,
                           which: str) -> None:
    from .index import check_model
    from .index.autotune import open_source
    from .index.gallery import check_factory

    source = open_source(path)
    if factory is not None:
        check_factory(factory, source.dim)
    info = source.model_info
    if run is not None:  # the model named on the command line must be the one that embedded the shards
        _, _, run_info = _run_encoder(run, which)
        check_model(info, run_info, where=str(path))
    if getattr(source, "header", {}).get("modality") == "sketch":
        source.model_info["modality"] = "sketch"
    kind = "shards" if hasattr(source, "shards") else "npz"
    index = _build_large(source, factory, budget, target_recall, True if mmap is None else mmap,
                         {"kind": kind, "path": str(path.resolve()),
                          **({"shards": len(source.shards)} if kind == "shards" else {})})
    saved = index.save(out)
    typer.echo(f"indexed {len(index)} vectors from {path} ({source.skipped} unreadable when embedded) with "
               f"{index.factory} -> {saved}")
    if factory is not None and index.factory != factory:
        typer.echo(f"factory: asked for {factory}, used {index.factory}: {index.factory_note}")


@index_app.command("info")
def index_info(
    index_dir: Path = typer.Argument(..., help="Index folder from 'sbirkit index build'."),
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print meta.json (plus path, version, file "
                                 "sizes) as JSON instead."),
    verify: bool = typer.Option(False, "--verify", help="Also check the full SHA-256 of every file (reads the "
                                "whole index once; memory-mapped loads check only sizes and the file's ends)."),
) -> None:
    """Describe an index without loading its vectors: size, model, factory, metric, dim, nprobe, created."""
    import json

    from .index import GalleryIndex
    from .index.sizes import format_bytes as _size

    meta = GalleryIndex.read_meta(index_dir)
    if verify:
        from .index.ondisk import verify_index

        meta["verified"] = verify_index(index_dir)
    if as_json:
        typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return
    model = meta.get("model_info") or {}
    factory = str(meta["factory"])
    if meta.get("factory_requested") and meta["factory_requested"] != factory:
        factory += f" (asked for {meta['factory_requested']}: {meta.get('factory_note') or 'changed'})"
    metric = {"ip": "ip (inner product: cosine on L2-normalised vectors; higher is closer)",
              "l2": "l2 (squared L2 distance; lower is closer)"}.get(meta["metric"], meta["metric"])
    lines = [
        f"index: {meta['path']}  (format version {meta['format_version']}"
        + (f", version folder {meta['version']})" if meta.get("version") else ", flat layout)"),
        f"items: {meta['ntotal']}  dim: {meta['dim']}",
        f"factory: {factory}",
        f"metric: {metric}",
        f"nprobe: {meta.get('nprobe') if meta.get('nprobe') is not None else '- (exact or graph index)'}",
        f"model: run {model.get('run', '?')}  fingerprint {model.get('fingerprint', '?')}  "
        f"checkpoint {model.get('which', '?')}",
        f"       backbone {model.get('backbone', '?')}  embed_dim {model.get('embed_dim', '?')}  "
        f"image_size {model.get('image_size', '?')}",
        f"created: {meta.get('created', '?')}  (sbirkit {meta.get('sbirkit_version', '?')}, "
        f"faiss {meta.get('faiss_version', '?')})",
        "files: " + ", ".join(f"{name} {_size(n)}" for name, n in sorted(meta.get("files", {}).items())),
    ]
    build = meta.get("build") or {}
    tuned = build.get("autotune")
    if tuned:
        budget = tuned.get("max_memory_bytes")
        param = ", ".join(f"{k} {v}" for k, v in (tuned.get("search_param") or {}).items())
        recall = tuned.get(f"recall@{tuned['k']}")
        lines.append(f"chosen: {tuned.get('kind') or tuned['factory']} for "
                     + (f"--max-memory {_size(budget)}" if budget else "the given factory")
                     + f" (estimated {_size(tuned.get('estimated_bytes') or 0)}); recall@{tuned['k']} "
                     f"{recall:.3f} on {tuned['queries']['held_out']} held-out queries"
                     + (f" at {param}" if param else "") + f", target {tuned['target_recall']:g}"
                     + ("" if tuned.get("target_reached") else " (not reached)"))
    if build:
        lines.append(f"loading: {'memory-mapped' if build.get('mmap') else 'read into memory'}"
                     + (f"; built from {build['source']['kind']} {build['source']['path']}" if build.get("source")
                        else ""))
    if verify:
        lines.append("verified: full sha256 of " + ", ".join(sorted(meta["verified"])) + " match meta.json")
    typer.echo("\n".join(lines))


@index_app.command("add")
def index_add(
    folder: Path = typer.Argument(..., help="Photos to add (searched recursively; ROOT/<class>/* gives labels)."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    id_prefix: str = typer.Option("", "--id-prefix", help="Put before each new id (ids are paths relative to "
                                  "FOLDER, and must not be in the index already), e.g. 'batch2/'."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Add photos to an existing index, embedded by the model that built it (checked as 'search' checks).

    Atomic: the index gets a new version only when every step worked; a failure leaves the old one
    live and unchanged. Ids already in the index are refused before anything is embedded.
    """
    from .index import GalleryIndex, check_model, image_items, list_image_files

    index = GalleryIndex.load(index_dir)
    built_with = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    paths = list_image_files(folder)
    if not paths:
        _fail(f"{folder}: expected image files, found none")
    have = {str(it["id"] if "id" in it else it["path"]) for it in index.items}
    clash = next((i["id"] for i in image_items(paths, folder) if id_prefix + i["id"] in have), None)
    if clash is not None:
        _fail(f"{folder}: id {id_prefix + clash!r} is already in {index_dir}; pick another --id-prefix")
    del index, have

    def check(info: dict) -> None:
        check_model(built_with, info, where=str(index_dir))
        if info["embed_dim"] != int(built_with.get("embed_dim", info["embed_dim"])):
            _fail(f"{index_dir}: embedding size {built_with['embed_dim']}, but the model {run_dir} embeds to "
                  f"{info['embed_dim']}")

    emb, items, info, skipped = _embed_folder(run_dir, folder, built_with.get("which", "best"), batch_size,
                                              before_embedding=check)
    items = [{**item, "id": id_prefix + item["id"]} for item in items]
    updated, _ = GalleryIndex.update(index_dir, lambda idx: idx.add(emb, items), expect_model=info)
    typer.echo(f"added {len(items)} photos ({skipped} unreadable, skipped) to {index_dir}: {len(updated)} items "
               f"now ({updated.factory})")


@index_app.command("remove")
def index_remove(
    ids: Optional[List[str]] = typer.Argument(None, help="Ids of the items to remove (as 'search --json' and the "
                                              "HTTP API show them)."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    ids_from: Optional[Path] = typer.Option(None, "--ids-from", help="A file with more ids, one per line."),
) -> None:
    """Remove items from an index by id. All or nothing: an id the index does not hold is an error and
    nothing changes; the rows left keep their vectors as they are (no model is needed)."""
    from .index import GalleryIndex

    wanted = list(ids or [])
    if ids_from is not None:
        if not ids_from.is_file():
            _fail(f"--ids-from {ids_from}: expected a file of ids, one per line, found nothing there")
        wanted += [line.strip() for line in ids_from.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        _fail("ID: expected at least one id to remove (or --ids-from FILE)")
    updated, n = GalleryIndex.update(index_dir, lambda idx: idx.remove(wanted))
    typer.echo(f"removed {n} items from {index_dir}: {len(updated)} left")


def _query_files(sketch: Path) -> list[Path]:
    """The sketch file, or every sketch file under a folder (recursive, sorted by relative path)."""
    from .index.files import SKETCH_EXTENSIONS

    if not sketch.is_dir():
        return [sketch]
    found = sorted((p for p in sketch.rglob("*") if p.is_file() and p.suffix.lower() in SKETCH_EXTENSIONS),
                   key=lambda p: p.relative_to(sketch).as_posix())
    if not found:
        _fail(f"--sketch {sketch}: expected sketch files ({', '.join(sorted(SKETCH_EXTENSIONS))}) in the folder, "
              "found none")
    return found


@app.command()
def search(
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    sketch: Path = typer.Option(..., "--sketch", help="Query sketch: PNG/JPG, SVG or Quick, Draw! .ndjson; or a "
                                "folder, to search with every sketch file in it (one block of results each)."),
    k: int = typer.Option(10, "-k", help="How many results per query."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a PNG of each query beside its top results "
                                        "(one row per query)."),
    nprobe: Optional[int] = typer.Option(None, help="IVF lists to scan (IVF indexes only)."),
    drawing: int = typer.Option(0, "--drawing", help="Which drawing of a Quick, Draw! .ndjson file to search "
                                "with (0 = the first line)."),
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print the results as one JSON object on stdout."),
) -> None:
    """Search an index with a sketch (or a folder of sketches); print ranked paths and scores.

    Scores are cosine similarities for the default metric (ip; higher is closer). In a folder, a
    sketch that cannot be used (blank, unreadable) is reported on stderr and skipped.
    """
    import json
    import warnings

    import numpy as np
    import torch

    from .errors import DataError
    from .index import GalleryIndex, check_model, draw_grid_rows, load_query_sketch

    _positive("-k", k)
    if drawing < 0:
        _fail(f"--drawing: expected a drawing number >= 0, got {drawing}")
    if grid is not None and not grid.parent.is_dir():  # checked first; nothing is created for it
        _fail(f"--grid {grid}: expected a file in an existing folder, {grid.parent} is not one")
    queries = _query_files(sketch)
    index = GalleryIndex.load(index_dir)
    if nprobe is not None:
        if not index.is_ivf:
            _fail(f"--nprobe: only IVF indexes take it; {index_dir} is a {index.factory!r} index")
        _positive("--nprobe", nprobe)
    built_with = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    encoder, size, info = _run_encoder(run_dir, built_with.get("which", "best"))
    check_model(built_with, info, where=str(index_dir))
    if info["embed_dim"] != index.dim:
        _fail(f"{index_dir}: embedding size {index.dim}, but the model {run_dir} embeds to {info['embed_dim']}")
    images, used, skipped, notes = [], [], [], []
    for path in queries:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = load_query_sketch(path, size=size, index=drawing)
            except DataError as exc:
                if not sketch.is_dir():
                    raise
                skipped.append({"query": str(path), "error": str(exc)})
                typer.secho(f"skipped {path}: {exc}", fg=typer.colors.YELLOW, err=True)
                continue
        for w in caught:  # e.g. "looks like a photo": one line each, not a Python warning block
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
        images.append(image)
        used.append(path)
        notes.append([str(w.message) for w in caught])
    if not used:
        _fail(f"--sketch {sketch}: none of the {len(queries)} sketch files could be used")
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images])
    with torch.no_grad():
        q = encoder.encode_sketch(x).numpy()
    result = index.search(q, k=k, nprobe=nprobe)
    blocks = [result.items_for(i) for i in range(len(used))]
    if grid is not None:
        draw_grid_rows([(im, [(item.get("path"), f"{item['score']:.2f}", None) for item in rows])
                        for im, rows in zip(images, blocks)], grid)
    if as_json:
        out = {
            "index": str(index_dir), "metric": index.metric, "k": k, "nprobe": nprobe if nprobe else index.nprobe,
            "model": {key: info.get(key) for key in ("run", "fingerprint", "which")},
            "queries": [
                {"query": str(path), **({"drawing": drawing} if path.suffix.lower() == ".ndjson" else {}),
                 "warnings": note,
                 "results": [{**{key: v for key, v in item.items() if key != "rank"}, "rank": item["rank"] + 1}
                             for item in rows]}
                for path, rows, note in zip(used, blocks, notes)
            ],
            "skipped": skipped,
            "grid": str(grid) if grid is not None else None,
        }
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    for n, (path, rows) in enumerate(zip(used, blocks)):
        if sketch.is_dir():
            typer.echo(("\n" if n else "") + f"query: {path}")
        for rank, item in enumerate(rows, 1):
            typer.echo(f"{rank:>3}  {item['score']:.4f}  {item.get('path', item.get('id'))}")
    if sketch.is_dir():
        typer.echo(f"\nsearched with {len(used)} sketches ({len(skipped)} skipped)")
    if grid is not None:
        typer.echo(f"grid: {grid}")


@app.command()
def serve(
    index_dir: Path = typer.Option(..., "--index", help="Index folder to serve (from 'sbirkit index build' or the "
                                   "demo: runs/demo/index)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Loopback by default; any other address "
                             "(0.0.0.0: every interface) makes the server reachable from other machines."),
    port: int = typer.Option(8000, help="Port (0: any free port, printed at start-up)."),
    workers: int = typer.Option(1, help="Worker processes; each loads the model once."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    which: Optional[str] = typer.Option(None, help="Checkpoint best or last (default: the index's)."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="SBIRKIT_ADMIN_TOKEN",
                                              help="Enable POST /admin/reload for 'Authorization: Bearer TOKEN' "
                                              "(at least 16 characters; prefer the SBIRKIT_ADMIN_TOKEN variable, "
                                              "which 'ps' does not show)."),
    batch_wait_ms: float = typer.Option(5.0, help="How long a query waits for others to share its forward pass."),
    max_batch: int = typer.Option(32, help="Most queries in one forward pass (1: no batching)."),
    max_body_bytes: int = typer.Option(2_000_000, help="Largest request body (413 above)."),
    max_pixels: int = typer.Option(4096 * 4096, help="Largest uploaded image, in pixels (413 above)."),
    max_strokes: int = typer.Option(1_000, help="Most strokes in a query (422 above)."),
    max_points: int = typer.Option(20_000, help="Most points in a query's strokes (422 above)."),
    max_k: int = typer.Option(100, help="Most results per query (422 above)."),
    allowed_host: Optional[List[str]] = typer.Option(None, "--allowed-host", help="A Host header to accept "
                                                     "(repeatable; default: the loopback names when bound to "
                                                     "loopback, any otherwise). Set it behind a reverse proxy."),
    root_path: str = typer.Option("", help="The path prefix a reverse proxy strips before forwarding (e.g. /sketch); "
                                  "names the prefixed URL in the OpenAPI schema."),
    threads: Optional[int] = typer.Option(None, help="torch threads for the model (default: torch's)."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
) -> None:
    """Serve an index over HTTP: the drawing page at /, the API (POST /search ...) and its reference at /docs.

    The index and its model are loaded and checked before the port opens. Localhost only unless
    --host says otherwise; POST /admin/reload exists only with --admin-token.
    """
    from .serve import Limits, ServeConfig
    from .serve.run import serve as run_server

    _one_of("--log-level", log_level, ("critical", "error", "warning", "info", "debug"))
    if threads is not None:
        import torch

        _positive("--threads", threads)
        torch.set_num_threads(threads)
    for flag, value in (("--max-body-bytes", max_body_bytes), ("--max-pixels", max_pixels),
                        ("--max-strokes", max_strokes), ("--max-points", max_points), ("--max-k", max_k),
                        ("--max-batch", max_batch), ("--workers", workers)):
        _positive(flag, value)
    if not 0 <= batch_wait_ms <= 1000:
        _fail(f"--batch-wait-ms: expected 0..1000 milliseconds, got {batch_wait_ms:g}")
    if admin_token is not None and len(admin_token) < 16:
        _fail("--admin-token: expected at least 16 characters (a long random string, e.g. from 'openssl rand -hex 16')")
    limits = Limits(max_body_bytes=max_body_bytes, max_pixels=max_pixels, max_strokes=max_strokes,
                    max_points=max_points, max_k=max_k)
    config = ServeConfig(index_dir=str(index_dir), run=str(run) if run else None, which=which, limits=limits,
                         batch_wait_ms=batch_wait_ms, max_batch=max_batch, admin_token=admin_token,
                         allowed_hosts=tuple(allowed_host) if allowed_host else None)
    run_server(config, host=host, port=port, workers=workers, log_level=log_level, access_log=access_log,
               root_path=root_path, echo=typer.echo)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the report and run go."),
    quick: bool = typer.Option(False, help="A much shorter run, for smoke tests."),
    fresh: bool = typer.Option(False, help="Delete OUT first instead of reusing a finished run."),
) -> None:
    """The end-to-end demo on the built-in synthetic data (no files, no network)."""
    from .demo import run_demo

    run_demo(out, quick=quick, fresh=fresh)


dfl_app = typer.Typer(help="Data-free SBIR (CrossX-DFL): look at what the estimators generate.",
                      no_args_is_help=True, cls=_Group)
app.add_typer(dfl_app, name="dfl")


@dfl_app.command("samples")
def dfl_samples(
    run: Path = typer.Argument(..., help="A crossx_dfl run folder (its teachers are loaded as the run names them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default RUN/samples.png); an existing "
                                       "file is refused unless --overwrite."),
    per_class: int = typer.Option(4, "--per-class", help="Pairs per class row (the most confident first)."),
    n: int = typer.Option(256, "--n", help="Pairs to generate from held-out noise before picking."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    seed: int = typer.Option(24301, help="Seed of the noise."),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing --out."),
    reference_photos: Optional[Path] = typer.Option(None, "--reference-photos", help="Real photos (a folder, read "
                                                    "for diagnosis only): the generated-vs-real probe accuracy."),
    reference_sketches: Optional[Path] = typer.Option(None, "--reference-sketches", help="Real sketches (a folder, "
                                                      "for diagnosis only), as --reference-photos."),
) -> None:
    """A grid of generated photo/sketch pairs per class: one row per class (the teachers' pseudo-label),
    and the synthesis diagnostics (teachers' agreement, class balance, confidence, probes) printed and
    written beside it as JSON."""
    import json

    from .methods.crossx_dfl import write_samples_grid
    from .methods.dfl_diagnostics import format_diagnostics

    _one_of("--which", which, ("best", "last"))
    reference = {k: str(v) for k, v in (("photos", reference_photos), ("sketches", reference_sketches)) if v} or None
    path = write_samples_grid(run, out, per_class=per_class, n=n, which=which, seed=seed, overwrite=overwrite,
                              reference=reference)
    values = json.loads(path.with_suffix(".json").read_text())
    typer.echo(format_diagnostics({k: v for k, v in values.items() if "/" in k}))
    typer.echo(f"wrote {path} and {path.with_suffix('.json')}")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line on stderr (Python's default adds the source line)."""
    import sys

    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file if file is not None else sys.stderr)


def main() -> None:  # console-script entry point
    import warnings

    warnings.showwarning = _one_line_warning
    app()


__all__ = ["app", "main", "Registry"]
