"""The ``nndk`` command line: thin click commands over the SDK and runtime APIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from nndk import __version__
from nndk.check import describe
from nndk.config import VAL_SPLITS, default_dims
from nndk.gradcheck import gradcheck, make_problem
from nndk.init import INIT_SCHEMES
from nndk.models import parse_bindings, read_model, resolve_dims
from nndk.onnx.common import DEFAULT_EXPORT_OPSET
from nndk.optim import OPTIMIZERS, SCHEDULES
from nndk.pack import PackRequest, pack, parse_codecs
from nndk.progress import Reporter
from nndk.resume import resume_rules, run_directory
from nndk.train import TrainConfig, start
from nndk.train import resume as resume_training
from nnre.bundle.info import escaped
from nnre.cli import run_cli, threads_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nndk")
@threads_option
def cli() -> None:
    """nndk: check, train and pack equation models for the nnre runtime."""


@cli.command("check")
@click.argument("model", metavar="MODEL")
@click.option("--set", "bindings", multiple=True, metavar="NAME=N",
              help="Bind a dimension, e.g. --set H=128 (repeatable).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Precision of the compiled program.")
def check_command(model: str, bindings: tuple[str, ...], dtype: str) -> None:
    """Parse and shape-check MODEL (an .eqn file or a template: lstm, gru, rnn, mlp, lstm2,
    gru2, mlp_ln).

    Prints the canonical equations, the roles (inputs, state, outputs), every parameter's
    shape, the parameter count and the compiled program. On an error, prints where it is
    (file:line:column) and exits with status 1.

    \b
    Example:
      nndk check lstm --set H=128 --set V=65
    """
    text, filename = read_model(model)
    # an unknown name is an error; unset ones the model declares take training's defaults
    dims = resolve_dims(text, filename, parse_bindings(bindings), default_dims(filename))
    click.echo(describe(text, dims, filename, dtype))


@cli.command("gradcheck")
@click.argument("model", metavar="MODEL")
@click.option("--set", "bindings", multiple=True, metavar="NAME=N",
              help="Bind a dimension, e.g. --set H=8 (repeatable).")
@click.option("--steps", default=4, show_default=True, help="Time steps to unroll.")
@click.option("--batch", default=2, show_default=True, help="Examples per batch.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random problem.")
@click.option("--tolerance", default=1e-6, show_default=True,
              help="Largest relative error accepted.")
def gradcheck_command(model: str, bindings: tuple[str, ...], steps: int, batch: int, seed: int,
                      tolerance: float) -> None:
    """Check backpropagation through MODEL against float64 central differences.

    Builds random float64 weights, inputs and initial state, and compares the gradient of
    a random linear loss (over every output at every step and the final state), taken by
    the trainer's backward pass in the trainer's weight layout, with finite differences
    along random directions through the runtime's own Model.run (compiled separately,
    without the optimizer's rewrites). Exits 1 if any error exceeds --tolerance.

    \b
    Example:
      nndk gradcheck gru --set H=8 --set V=5
    """
    text, filename = read_model(model)
    problem = make_problem(text, resolve_dims(text, filename, parse_bindings(bindings),
                                              default_dims(filename)),
                           steps=steps, batch=batch, seed=seed, contiguous=True, stacked=True,
                           filename=filename)
    errors = gradcheck(problem)
    click.echo("backprop (trainer layout) vs central differences of Model.run, float64")
    width = max(len(k) for k in errors)
    for name, err in errors.items():
        mark = "ok" if err <= tolerance else "FAIL"
        click.echo(f"{name:<{width}}  {err:.2e}  {mark}")
    worst = max(errors.values())
    if worst > tolerance:
        raise click.ClickException(f"{filename}: gradient check failed (worst relative error "
                                   f"{worst:.2e} > {tolerance:g})")
    click.echo(f"{filename}: {len(errors)} gradients match (worst relative error {worst:.2e})")


@cli.command("train")
@click.argument("data", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--model", default="lstm", show_default=True,
              help="Template (lstm, gru, rnn, lstm2, gru2; gpt, a character transformer: "
                   "--set L heads d context; mlp, mlp_ln for arrays; cnn for images "
                   "(N, C, H, W)) or a path to an .eqn file.")
@click.option("--set", "bindings", multiple=True, metavar="NAME=N",
              help="Bind a dimension the model declares, e.g. --set H=256 (default H=128). "
                   "Refused above a memory budget ($NNRE_MAX_BYTES, default half the RAM).")
@click.option("--seq-length", default=50, show_default=True, help="Steps of BPTT per batch.")
@click.option("--batch-size", default=32, show_default=True, help="Parallel text streams.")
@click.option("--steps", type=int, default=None,
              help="Optimizer steps (default: 1 epoch; not with --epochs).")
@click.option("--epochs", type=float, default=None,
              help="Passes over the training split (not with --steps).")
@click.option("--lr", default=2e-3, show_default=True,
              help="Learning rate (the peak, after --warmup; nanoGPT's learning_rate).")
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default="adam",
              show_default=True,
              help="adamw: Adam with decoupled weight decay, as torch.optim.AdamW (nanoGPT's).")
@click.option("--weight-decay", type=float, default=None,
              help="AdamW's decoupled weight decay: each step multiplies the weights by "
                   "1 − lr·λ. As nanoGPT, only parameters with 2 axes or more (matrices, "
                   "embeddings) decay; biases and norm gains do not. [default: 0.1, "
                   "nanoGPT's; adamw only]")
@click.option("--beta1", type=float, default=None,
              help="Adam/AdamW's decay of the gradient's running mean. [default: 0.9]")
@click.option("--beta2", type=float, default=None,
              help="Adam/AdamW's decay of the squared gradient's running mean; nanoGPT's "
                   "shakespeare_char uses 0.99. [default: 0.999]")
@click.option("--clip", default=5.0, show_default=True,
              help="Clip the global gradient norm to this, as torch.nn.utils.clip_grad_norm_ "
                   "(0: off; nanoGPT's grad_clip).")
@click.option("--warmup", default=0, show_default=True,
              help="Raise the learning rate linearly over the first N steps, "
                   "lr·(step+1)/(N+1), before the schedule (nanoGPT's warmup_iters).")
@click.option("--lr-schedule", type=click.Choice(SCHEDULES), default="step",
              show_default=True,
              help="After --warmup: constant; step, ×--lr-decay every --decay-every steps "
                   "(by default never, so constant too); or cosine from --lr down to --min-lr "
                   "at step --lr-decay-steps, then --min-lr (nanoGPT's decay_lr).")
@click.option("--lr-decay", default=1.0, show_default=True,
              help="Step schedule: multiply the learning rate by this every --decay-every "
                   "steps.")
@click.option("--decay-every", default=0, show_default=True,
              help="Step schedule: steps between two decays (0: none).")
@click.option("--min-lr", type=float, default=None,
              help="Cosine schedule: the learning rate it ends at (nanoGPT's min_lr). "
                   "[default: --lr / 10]")
@click.option("--lr-decay-steps", type=int, default=None,
              help="Cosine schedule: the step it reaches --min-lr at, counted from the "
                   "start, warm-up included (nanoGPT's lr_decay_iters). [default: the run's "
                   "last step; with --resume and more --steps, the curve stretches]")
@click.option("--dropout", default=0.0, show_default=True,
              help="In training, each dropout(x) of the model zeroes an entry with this "
                   "probability and scales the rest by 1/(1−P), a fresh mask per batch and "
                   "per entry from --seed (nanoGPT's dropout). Evaluation, samples and the "
                   "packed model run dropout(x) as x.")
@click.option("--val-frac", default=0.1, show_default=True,
              help="Fraction of the text (or rows) held out for validation: the end of it.")
@click.option("--val-split", type=click.Choice(VAL_SPLITS), default="tail",
              show_default=True,
              help="Where --val-frac cuts: tail holds out the last ⌊n·f⌋ characters; nanogpt "
                   "trains on the first ⌊n·(1−f)⌋, exactly nanoGPT's data[:int(n*0.9)] split "
                   "(at most one character more held out).")
@click.option("--eval-every", default=100, show_default=True,
              help="Evaluate, sample and checkpoint every N steps.")
@click.option("--eval-iters", default=0, show_default=True,
              help="Evaluate on N batches of the held-out part instead of all of it (0): text "
                   "reads the first N of its streams' batches, arrays N batches of rows drawn "
                   "once from --seed; the same part every time, so losses compare. A large "
                   "held-out part can otherwise take most of a run's time.")
@click.option("--print-every", default=0, show_default=True,
              help="Not in a terminal (logs, CI): a progress line every N steps besides those "
                   "at each evaluation (0: at evaluations only).")
@click.option("--sample-every", default=0, show_default=True,
              help="Sample every N steps (0: at each evaluation).")
@click.option("--sample-length", default=200, show_default=True)
@click.option("--temperature", default=0.8, show_default=True, help="Of the progress samples.")
@click.option("--reset-frac", default=0.25, show_default=True,
              help="Text: the fraction of streams that read each batch from the zero state "
                   "(the state generation starts from) instead of carrying the previous "
                   "batch's state; 0 carries every stream, as char-rnn does. Without it a "
                   "model garbles the text right after a short --prime.")
@click.option("--min-count", default=1, show_default=True,
              help="Text: characters seen fewer than N times in the text are read as one "
                   "unknown symbol, U+FFFD (in the vocabulary only when some character is that "
                   "rare), which the bundle keeps so that `nnre run` reads a prime's unseen "
                   "characters as it too. A corpus with many rare characters "
                   "otherwise gets a large vocabulary whose rare rows barely train, and "
                   "samples can fall into loops of them. (With --init-from a character "
                   "bundle, its vocabulary is used.)")
@click.option("--init", "init_scheme", type=click.Choice(INIT_SCHEMES), default="auto",
              show_default=True, help="auto: orthogonal square matrices, Xavier the rest; for "
              "attention (a text with histories), normal. normal: GPT-2's N(0, 0.02).")
@click.option("--seed", default=0, show_default=True, help="Drives every random choice.")
@click.option("--checkpoint-dir", default="checkpoints", show_default=True,
              type=click.Path(file_okay=False),
              help="Where checkpoints go (with --resume: the checkpoint's own directory).")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=1),
              help="Keep the last N checkpoints (step-*.npz) besides checkpoint.npz and "
                   "best.npz (the lowest validation loss).")
@click.option("--overwrite", is_flag=True,
              help="Replace another run's checkpoints in --checkpoint-dir (refused without).")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue a checkpoint exactly (weights, optimizer, step, data, RNG), in "
                   f"its own directory. {resume_rules()}")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from the weights of a .bundle (weights only, fresh optimizer).")
@click.option("--loss", type=click.Choice(["auto", "ce", "mse"]), default="auto",
              show_default=True, help="Arrays: cross-entropy for integer targets, else MSE.")
@click.option("--target", default="target", show_default=True,
              help="Arrays: the name of the target array.")
@click.option("--output", default=None, help="The model output to train (default: y).")
def train_command(data: str, model: str, bindings: tuple[str, ...], resume_dir: str | None,
                  checkpoint_dir: str, init_scheme: str, init_from: str | None, keep: int,
                  overwrite: bool, **options: Any) -> None:
    """Train MODEL on DATA: a text file (characters, char-rnn style) or arrays.

    Text: the model reads one character per step (one-hot) and predicts the next.
    Arrays (.npz or .csv): one array per model input, named like it, plus a target array
    (--target); rows are examples, (N, n) or, for a recurrent model, (N, T, n). A CSV's
    header names its columns: x.0, x.1, … or x0, x1, … (numbered from 0 or 1) are the
    columns of array x, any other name an array of one column.

    Prints progress on stderr (a bar in a terminal, log lines otherwise) with the loss,
    validation loss (in bits per character for text; a classifier's accuracy too), speed
    and ETA (training steps timed apart from evaluations), and a text sample at each
    evaluation. Checkpoints go to --checkpoint-dir atomically: checkpoint.npz (the
    latest), the last --keep as step-*.npz, and best.npz (lowest validation loss). A
    directory holding another run's checkpoint is refused unless --overwrite. Ctrl-C saves
    one and exits; --resume continues bit for bit.

    \b
    Examples:
      nndk train input.txt --set H=128 --steps 2000
      nndk train input.txt --resume checkpoints --steps 4000
      nndk train iris.npz --model mlp --set H=16 --epochs 50
    """
    if resume_dir:
        changes = given_options(click.get_current_context(), bindings)
        trainer = resume_training(resume_dir, data, changes=changes)
        checkpoint_dir = str(run_directory(resume_dir))
    else:
        config = TrainConfig(model=model, dims=parse_bindings(bindings), init=init_scheme,
                             **options)
        trainer = start(config, data, init_from)
    for note in trainer.notes:
        click.echo(f"note: {escaped(note)}", err=True)
    try:
        trainer.fit(checkpoint_dir, Reporter(print_every=trainer.config.print_every),
                    keep=keep, overwrite=overwrite)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted at step {trainer.step}; checkpoint saved in "
                   f"{checkpoint_dir}", err=True)
        raise SystemExit(130) from None
    click.echo(f"trained {trainer.step} steps; checkpoint: {checkpoint_dir}", err=True)


def given_options(ctx: click.Context, bindings: tuple[str, ...]) -> dict[str, Any]:
    """The options the user actually gave (not defaults), by config field name."""
    rename = {"init_scheme": "init", "bindings": "dims"}
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = {rename.get(k, k): v for k, v in ctx.params.items()
             if k not in ("data", "resume_dir") and ctx.get_parameter_source(k) in sources}
    if "dims" in given:
        given["dims"] = parse_bindings(bindings)
    return given


@cli.command("pack")
@click.argument("equations", metavar="SOURCE", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="With an .eqn file: an .npz of weights keyed by canonical name (W_i, b_f).")
@click.option("--name", required=True, help="Model name.")
@click.option("--version", "version_", required=True, help="Semantic version, e.g. 1.0.0.")
@click.option("--description")
@click.option("--license", "license_")
@click.option("--author", "authors", multiple=True, help="Repeat for several authors.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Free-form string metadata (metadata.extra; repeatable).")
@click.option("--codec", "codecs", multiple=True, metavar="NAME=JSON",
              help="A codec for a signature name (repeatable), as JSON or @FILE holding it, "
                   "e.g. --codec 'y={\"id\": \"argmax-label\", \"labels\": [\"no\", "
                   "\"yes\"]}'. Ids: tensor, char, sample, argmax-label.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="Compute dtype of the bundle; weights are converted to it. Default: "
                   "float32 (float64 weights too), or a .bundle SOURCE's own dtype.")
@click.option("--created", help="RFC 3339 UTC time (default: $SOURCE_DATE_EPOCH, else none).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .bundle file to write (its folder must exist).")
def pack_command(equations: Path, weights: Path | None, name: str, version_: str,
                 description: str | None, license_: str | None, authors: tuple[str, ...],
                 meta: tuple[str, ...], codecs: tuple[str, ...], dtype: str | None,
                 created: str | None, output: Path) -> None:
    """Pack SOURCE into a versioned .bundle.

    \b
    SOURCE is one of
      an .eqn file, with --weights;
      a training checkpoint (a --checkpoint-dir of nndk train, or its checkpoint.npz):
        the bundle also carries the character vocabulary, recommended sampling settings
        and the training provenance (data sha256, hyperparameters, steps, final losses);
      a .bundle, relabelled: the new bundle keeps its equations, weights, codecs,
        sampling and provenance, takes the given name, version and other options
        (--meta and --codec add to what it has), and names it as its lineage parent.

    \b
    Examples:
      nndk pack checkpoints --name shakespeare --version 1.0.0 -o model.bundle
      nndk pack mlp.eqn --weights w.npz --name iris --version 0.1.0 -o iris.bundle
      nndk pack model.bundle --name shakespeare --version 1.1.0 --meta stage=release \\
          -o release.bundle
      nndk pack imported.bundle --name iris --version 1.0.0 -o labelled.bundle \\
          --codec 'y={"id": "argmax-label", "labels": ["setosa", "versicolor", "virginica"]}'
    """
    result = pack(PackRequest(equations, weights, output, name, version_, description,
                              license_, authors, meta, dtype, created, parse_codecs(codecs)))
    click.echo(f"packed {escaped(str(result.path))}: {result.tensors} tensors, "
               f"{result.size:,} bytes, id {result.bundle_id}")


@cli.command("export")
@click.argument("bundle_path", metavar="MODEL.bundle", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The .onnx file to write.")
@click.option("--opset", type=int, default=DEFAULT_EXPORT_OPSET, show_default=True,
              help="ONNX opset version of the graph.")
@click.option("--sequence", is_flag=True,
              help="The whole sequence (a Scan over time) instead of one step; for a "
                   "transformer, every step of its context at once with a causal mask.")
def export_command(bundle_path: str, output: str, opset: int, sequence: bool) -> None:
    """Export MODEL.bundle as an ONNX model (needs the onnx extra).

    One time step by default: inputs and the previous state (NAME_prev) in, outputs and the
    next state (NAME_next) out (a transformer's keys and values: its cache). With
    --sequence, inputs are [T, N, n] and the outputs are given for every step; a
    transformer's sequence form takes [N, T, …] (T its context) and needs no state.
    Parameters are initializers under their own names. The bundle's
    name, version and id go into the ONNX metadata_props, and its whole metadata (vocabulary,
    sampling settings, provenance…) as JSON under nnre.bundle, which nndk import restores.

    \b
    Examples:
      nndk export model.bundle -o model.onnx
      nndk export model.bundle -o model_seq.onnx --sequence --opset 18
    """
    from nndk.onnx.export import export_bundle, save

    proto = export_bundle(bundle_path, opset=opset, sequence=sequence)
    save(proto, output)
    names = ", ".join(vi.name for vi in proto.graph.input)
    outs = ", ".join(vi.name for vi in proto.graph.output)
    click.echo(f"exported {escaped(output)}: opset {opset}, {len(proto.graph.node)} nodes; "
               f"inputs {escaped(names)}; outputs {escaped(outs)}")


@cli.command("import")
@click.argument("source", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The .bundle file to write.")
@click.option("--name", help="Model name (default: from the ONNX model).")
@click.option("--version", "version_", help="Semantic version (default: from the model, "
              "else 0.1.0).")
@click.option("--created", help="RFC 3339 UTC time (default: $SOURCE_DATE_EPOCH, else none).")
def import_command(source: str, output: str, name: str | None, version_: str | None,
                   created: str | None) -> None:
    """Import an ONNX model as readable equations plus weights in a .bundle.

    Prints the equations. Every node the equations cannot express is named in one error.
    A model nndk exported comes back with its metadata (nnre.bundle, checked as a bundle
    header is) and names the original bundle as its lineage parent. To add codecs or
    labels afterwards, relabel the bundle with nndk pack BUNDLE --codec ….

    \b
    Example:
      nndk import mlp.onnx -o mlp.bundle --name iris --version 1.0.0
    """
    from nndk.onnx.importer import import_file

    bundle_id, result = import_file(source, output, name=name, version=version_,
                                    created=created)
    for line in result.equations.rstrip("\n").split("\n"):
        click.echo(escaped(line))
    for onnx_name, why in result.dropped.items():
        click.echo(f"note: output {escaped(onnx_name)} left out: {escaped(why)}")
    click.echo(f"imported {escaped(output)}: {len(result.weights)} tensors, id {bundle_id}")


def main() -> None:
    run_cli(cli, "nndk")
