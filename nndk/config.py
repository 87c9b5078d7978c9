"""The options of a training run (``TrainConfig``) and the rules every value must meet.

The rules are data (``nndk/schema.py``) checked in one place, ``validate``: by ``nndk train``
before anything is read or allocated, and again on every config read from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from nndk.init import INIT_SCHEMES
from nndk.optim import HYPER, OPTIMIZERS, SCHEDULES
from nndk.schema import MAX_COUNT, Rule, check_dims, check_fields
from nnre.errors import NnreError


class ConfigError(NnreError):
    """An option (or a checkpoint's stored option) outside what training can use."""

    code = "bad-option"


@dataclass
class TrainConfig:
    model: str = "lstm"
    dims: dict[str, int] = field(default_factory=dict)  # + DEFAULT_DIMS the model declares
    seq_length: int = 50
    batch_size: int = 32
    steps: int | None = None
    epochs: float | None = None
    lr: float = 2e-3
    optimizer: str = "adam"
    clip: float = 5.0
    lr_decay: float = 1.0
    decay_every: int = 0
    val_frac: float = 0.1
    eval_every: int = 100
    sample_every: int = 0  # 0: at every evaluation
    sample_length: int = 200
    temperature: float = 0.8
    seed: int = 0
    init: str = "auto"
    loss: str = "auto"  # arrays: auto (integer targets: ce, else mse), ce or mse
    target: str = "target"  # arrays: the name of the target array
    output: str | None = None  # the output trained (default: y, or the one that fits)
    reset_frac: float = 0.25  # text: streams that read each batch from the zero state
    eval_iters: int = 0  # evaluate on this many validation batches (0: all of them)
    print_every: int = 0  # a log line every N steps when not in a terminal (0: at evaluations)
    min_count: int = 1  # text: rarer characters read as the unknown symbol U+FFFD
    # the optimizer's hyperparameters (None: its default, nndk.optim.HYPER; filled in by
    # ``resolve`` for the optimizers that read them)
    weight_decay: float | None = None  # adamw: decoupled, on parameters of ≥ 2 axes
    beta1: float | None = None  # adam, adamw
    beta2: float | None = None
    # the learning rate: a linear warm-up, then the schedule (nndk.optim.Schedule)
    warmup: int = 0
    lr_schedule: str = "step"  # step: --lr-decay every --decay-every (by default never)
    min_lr: float | None = None  # cosine: where it ends (None: lr / 10)
    lr_decay_steps: int | None = None  # cosine: the step it ends at (None: the run's total)
    dropout: float = 0.0  # the probability dropout(x) zeroes an entry in training
    val_split: str = "tail"  # text: how --val-frac cuts the held-out part (VAL_SPLITS)


#: How a text is cut into training and validation parts (``nndk.data.split_at``): "tail"
#: holds out the last ⌊n·val_frac⌋ characters; "nanogpt" trains on the first
#: ⌊n·(1 − val_frac)⌋, as nanoGPT's shakespeare_char/prepare.py (one character more may go to
#: validation).
VAL_SPLITS = ("tail", "nanogpt")

DEFAULT_DIMS = {"H": 128, "F": 16, "G": 32}  # hidden units; the cnn's filters
#: A template's own defaults: gpt's are nanoGPT's CPU example for shakespeare_char.
TEMPLATE_DIMS = {"gpt.eqn": {"L": 4, "heads": 4, "d": 128, "context": 64}}


def default_dims(filename: str) -> dict[str, int]:
    """The dimensions a model gets when --set leaves them out (those it declares)."""
    return DEFAULT_DIMS | TEMPLATE_DIMS.get(filename, {})

RULES: dict[str, Rule] = {
    "model": Rule("str"),
    "dims": Rule("dict"),
    "seq_length": Rule("int", 1, 1_000_000),
    "batch_size": Rule("int", 1, 1_000_000),
    "steps": Rule("int", 1, MAX_COUNT, optional=True),
    "epochs": Rule("float", 0, 1e9, low_open=True, optional=True),
    "lr": Rule("float", 0, 1e3, low_open=True),
    "optimizer": Rule("str", choices=tuple(sorted(OPTIMIZERS))),
    "clip": Rule("float", 0, 1e30),
    "lr_decay": Rule("float", 0, 1e3, low_open=True),
    "decay_every": Rule("int", 0, MAX_COUNT),
    "val_frac": Rule("float", 0, 1, high_open=True),
    "eval_every": Rule("int", 1, MAX_COUNT),
    "sample_every": Rule("int", 0, MAX_COUNT),
    "sample_length": Rule("int", 0, 1_000_000),
    "temperature": Rule("float", 0, 1e6, low_open=True),
    "seed": Rule("int", 0, 2**63 - 1),
    "init": Rule("str", choices=INIT_SCHEMES),
    "loss": Rule("str", choices=("auto", "ce", "mse")),
    "target": Rule("str"),
    "output": Rule("str", optional=True),
    "reset_frac": Rule("float", 0, 1),
    "eval_iters": Rule("int", 0, MAX_COUNT),
    "print_every": Rule("int", 0, MAX_COUNT),
    "min_count": Rule("int", 1, MAX_COUNT),
    "weight_decay": Rule("float", 0, 1e3, optional=True),
    "beta1": Rule("float", 0, 1, high_open=True, optional=True),
    "beta2": Rule("float", 0, 1, high_open=True, optional=True),
    "warmup": Rule("int", 0, MAX_COUNT),
    "lr_schedule": Rule("str", choices=SCHEDULES),
    "min_lr": Rule("float", 0, 1e3, optional=True),
    "lr_decay_steps": Rule("int", 1, MAX_COUNT, optional=True),
    "dropout": Rule("float", 0, 1, high_open=True),
    "val_split": Rule("str", choices=VAL_SPLITS),
}

#: What a checkpoint written before an option existed ran with: it resumes the same way.
LEGACY: dict[str, object] = {"reset_frac": 0.0, "eval_iters": 0, "print_every": 0,
                             "min_count": 1, "weight_decay": None, "beta1": None,
                             "beta2": None, "warmup": 0, "lr_schedule": "step",
                             "min_lr": None, "lr_decay_steps": None, "dropout": 0.0,
                             "val_split": "tail"}


def flag(name: str) -> str:
    """The command-line spelling of a config field: seq_length → --seq-length."""
    return "--" + name.replace("_", "-")


def validate(values: dict[str, object], where: str | None = None) -> None:
    """Check every field of a config (as a dict); ``where`` names a checkpoint it came from.

    Without ``where`` the fields are named as flags (``--lr must be …``); with it, as the
    checkpoint's fields (``ck/checkpoint.npz: config.lr must be …``).
    """
    def name(key: str) -> str:
        return f"{where}: config.{key}" if where else flag(key)

    unknown = sorted(set(values) - set(RULES))
    if unknown:
        raise ConfigError(f"{name(unknown[0])} is not an option of this nndk")
    check_fields(values, RULES, name, ConfigError)
    check_dims(values["dims"], name("dims") if where else "--set", ConfigError)
    if values.get("steps") is not None and values.get("epochs") is not None:
        raise ConfigError(f"{name('steps')} and {name('epochs')} both given: choose one "
                          "(steps count optimizer updates, epochs passes over the data)")
    for key, (applies, why) in WHERE_USED.items():
        if values.get(key) not in (None, DEFAULTS[key]) and not applies(values):
            raise ConfigError(f"{name(key)} {values[key]} {why}")
    decay_steps, warmup = values.get("lr_decay_steps"), values.get("warmup", 0)
    if isinstance(decay_steps, int) and isinstance(warmup, int) and decay_steps <= warmup:
        raise ConfigError(f"{name('lr_decay_steps')} {decay_steps} must be more than "
                          f"{name('warmup')} {warmup}: the cosine decays after the warm-up")


def _reads(key: str) -> Callable[[dict[str, object]], bool]:
    return lambda values: key in HYPER.get(str(values["optimizer"]), {})


def _schedule(kind: str) -> Callable[[dict[str, object]], bool]:
    return lambda values: values["lr_schedule"] == kind


#: Options that only some runs use, with the test and the reason: one given elsewhere would
#: be silently ignored, so it is refused.
WHERE_USED: dict[str, tuple[Callable[[dict[str, object]], bool], str]] = {
    "weight_decay": (_reads("weight_decay"), "is AdamW's (--optimizer adamw)"),
    "beta1": (_reads("beta1"), "is Adam's and AdamW's (--optimizer adam or adamw)"),
    "beta2": (_reads("beta2"), "is Adam's and AdamW's (--optimizer adam or adamw)"),
    "lr_decay": (_schedule("step"), "is the step schedule's (--lr-schedule step)"),
    "decay_every": (_schedule("step"), "is the step schedule's (--lr-schedule step)"),
    "min_lr": (_schedule("cosine"), "is the cosine schedule's (--lr-schedule cosine)"),
    "lr_decay_steps": (_schedule("cosine"), "is the cosine schedule's (--lr-schedule cosine)"),
}
DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill in the optimizer's defaults for the hyperparameters it reads, so that the
    checkpoint and the bundle's provenance record the values the run used."""
    for key, default in HYPER.get(config.optimizer, {}).items():
        if getattr(config, key) is None:
            setattr(config, key, default)
    return config
