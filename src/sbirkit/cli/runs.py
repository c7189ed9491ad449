"""'sbirkit train', 'eval' and 'adapt': a run folder trained, scored, adapted."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import _fail, _one_of, _parse_options, _positive, app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="A preset name (see 'sbirkit list'; shipped in src/sbirkit/configs/) or a YAML path. "
                        "A bare name is a preset even when a folder or file of that name is here; "
                        "a path has a / or ends in .yaml."),
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

    from ..engine import Trainer, apply_overrides, load_preset

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
    ties: Optional[str] = typer.Option(None, "--ties", help="Order inside tied distances: pessimistic, expected or "
                                       "optimistic; default: the run's eval.ties (docs/metrics.md)."),
    as_: Optional[str] = typer.Option(None, "--as", help="Print the metrics a paper's code prints, in its "
                                      "conventions: sake, zse, sem-pcyc, doodle2search or yelamarthi."),
) -> None:
    """Evaluate a run: mAP@all, P@100, P@200 (and Acc@K where instances are paired), per direction."""
    from ..engine import evaluate_run
    from ..eval import DIRECTIONS, PRESETS, TIE_POLICIES

    overrides = _parse_options(data)
    if "options" in overrides and not isinstance(overrides["options"], dict):
        _fail("--data options=...: expected a mapping, e.g. options={category: shoes}")
    protocol = None
    if adapt is not None:
        from ..engine.adapt_run import protocol_for_run

        _positive("--adapt", adapt)
        _positive("--draws", draws)
        if tasks is not None:
            _one_of("--tasks", tasks, ("class", "user"))
        if strategy is not None:
            _one_of("--strategy", strategy, ("meta", "none", "finetune_head", "finetune_all"))
        _one_of("--which", which, ("best", "last"))
        protocol = protocol_for_run(run, which, k=adapt, group_by=tasks, draws=draws, strategy=strategy)
    elif tasks is not None or strategy is not None:
        _fail("--tasks, --strategy: expected with --adapt K")
    if ties is not None:
        _one_of("--ties", ties, tuple(TIE_POLICIES))
    if as_ is not None:
        _one_of("--as", as_, tuple(PRESETS))
        if adapt is not None:
            _fail("--as: scores class-level retrieval; expected without --adapt")
    report = evaluate_run(run, split=split, directions=direction or list(DIRECTIONS), data_overrides=overrides,
                          which=which, progress=True, gzsl=gzsl, protocol=protocol, ties=ties, preset=as_)
    if protocol is not None:
        p = report["protocol"]
        typer.echo(f"protocol: {p['name']} ({p['tasks']}-level tasks, k={p['k']}, {p['draws']} draws, strategy "
                   f"{p['strategy']}, groups: {', '.join(map(str, p['groups']))})")
    typer.echo(_format_eval(report))
    if as_ is not None:
        from ..eval import RetrievalResult
        from ..eval.presets import format_preset

        typer.echo("\n" + format_preset(as_, {d: RetrievalResult(**r) for d, r in report["results"].items()}))
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
    from ..engine.adapt_run import adapt_run

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
    from ..eval import RetrievalResult, format_table

    p, c = report["protocol"], report["checkpoint"]
    head = [
        f"dataset: {p['dataset']}" + (f" ({p['root']})" if p.get("root") else "") + f"  split: {p['split']}",
        f"queries/gallery: {p['gallery']}",
        f"checkpoint: {c['which']} (step {c['step']}, fingerprint {str(c['fingerprint'])[:12]})",
        "",
    ]
    results = {d: RetrievalResult(**r) for d, r in report["results"].items()}
    return "\n".join(head) + format_table(results)
