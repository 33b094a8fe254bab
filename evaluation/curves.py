"""Robust accuracy against the attack budget (eps) and against the number of
attack iterations, and a PNG plot of such curves.

The two curves are the cheapest evidence that an evaluation is not fooled
by gradient masking: accuracy must fall as eps grows, reaching ~0 once the
ball covers the whole pixel box, and must not rise with more iterations
(Carlini et al. 2019, Sec. 5; `evaluation.sanity_checks` turns them into
pass/fail checks). Xie et al. 2019, Fig. 6, plots accuracy against PGD
iterations (10 to 2000, eps 16/255) to show that a defense does not
recover as the attacker spends more compute.

Step size for each point (`step_size_rule`):
    "config" (default): the eps curve keeps the config's ratio
        `step_size / eps` (so every point takes the same number of steps to
        cross the ball); the steps curve keeps the config's `step_size`.
    "xie2019": `max(1/255, eps/steps)` for every point, the CAAD protocol of
        Xie et al. 2019, Sec. 5 (step 1/255, or eps/10 for 10 iterations).
Attacks without a `step_size` argument (FGSM, Square) are unaffected.

References:
    Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for
    Improving Adversarial Robustness", arXiv 1812.03411, Sec. 5, Fig. 6.
    Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry,
    Kurakin 2019, "On Evaluating Adversarial Robustness", arXiv 1902.06705,
    Sec. 5 (accuracy-vs-distortion curves; unbounded attacks reach 100%).
"""

from __future__ import annotations

import inspect
import numbers
import pathlib
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

import attacks
from evaluation.accuracy import robust_accuracy

STEP_SIZE_RULES = ("config", "xie2019")
# Minimum-norm attacks (no eps-ball) and the one-pixel attack (a pixel
# count, not an eps): no curve.
EXCLUDED = frozenset({"cw_l2", "cw_linf", "cw_l0", "lbfgs", "one_pixel",
                      "deepfool"})


def check_arrays(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """`x` as float32 `(n, height, width, channels)` in [0, 1] and `y` as
    int32 `(n,)`, n >= 1.

    Raises:
        ValueError: wrong rank, dtype, range, empty, or len(x) != len(y).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError("x must be float (batch, height, width, channels); "
                         f"got shape {x.shape}, dtype {x.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be int labels (batch,); got shape {y.shape},"
                         f" dtype {y.dtype}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same number (>= 1) of "
                         f"examples; got {len(x)} and {len(y)}")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"x must lie in [0, 1]; got [{x.min()}, {x.max()}]")
    return x.astype(np.float32), y.astype(np.int32)


def check_batch_size(batch_size: int) -> int:
    """Raises ValueError unless `batch_size` is an int >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    return batch_size


def logits(model: Callable, x: Any) -> Any:
    """`model(x)`, with `training=False` for Keras layers and models."""
    if isinstance(model, keras.layers.Layer):
        return model(x, training=False)
    return model(x)


def bind_attack(config: Mapping[str, Any], model: Callable) -> Callable:
    """`fn(model, x, y) -> x_adv` from an attack config; with
    `config["bpda"]` (as evaluate.py writes it) the gradients come from
    `attacks.with_straight_through(model)`, built once, while accuracy is
    still measured on `model` itself.

    Raises:
        KeyError: unknown attack name. TypeError: an unknown config key.
    """
    cfg = dict(config)
    bpda = cfg.pop("bpda", False)
    fn = attacks.from_config(cfg)
    if not bpda:
        return fn
    surrogate = attacks.with_straight_through(model)
    return lambda _, x, y, **kwargs: fn(surrogate, x, y, **kwargs)


def _check_config(config: Mapping[str, Any], varied: str) -> dict:
    cfg = dict(config)
    if "name" not in cfg:
        raise ValueError(f"attack_config needs a 'name'; got {cfg!r}")
    if cfg["name"] in EXCLUDED:
        raise ValueError(
            f"attack {cfg['name']!r} is a minimum-norm or host-loop attack "
            f"({sorted(EXCLUDED)}), which has no accuracy curve; use an "
            f"eps-ball attack such as 'pgd', 'apgd_ce', 'fgsm' or 'square'")
    params = inspect.signature(attacks.get_attack(cfg["name"])).parameters
    if varied not in params:
        accepted = sorted(set(params) - {"model", "x", "y"})
        raise ValueError(f"attack {cfg['name']!r} has no {varied!r} argument;"
                         f" accepted: {accepted}")
    return cfg


def check_grid(values: Sequence, name: str, integer: bool) -> list:
    """`values` as a list of float (or int with `integer`), checked to be
    strictly increasing, finite and >= 0 (>= 1 for integers).

    Raises:
        ValueError: naming `name` and the bad `values`.
    """
    vals = list(values)
    low = 1 if integer else 0
    ok = bool(vals) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool)
        and np.isfinite(v) and v >= low and (not integer or int(v) == v)
        for v in vals)
    if not ok or any(b <= a for a, b in zip(vals, vals[1:])):
        kind = "integers >= 1" if integer else "numbers >= 0"
        raise ValueError(f"{name} must be strictly increasing {kind}; "
                         f"got {values!r}")
    return [int(v) for v in vals] if integer else [float(v) for v in vals]


def _step_size(cfg: dict, eps: float, steps: int | None, rule: str):
    """The step size of one curve point (module docstring), or None when
    the attack takes none."""
    params = inspect.signature(attacks.get_attack(cfg["name"])).parameters
    if "step_size" not in params:
        return None
    if rule == "xie2019":
        if steps is None:
            raise ValueError("step_size_rule='xie2019' needs 'steps' in the "
                             f"attack config; got {cfg!r}")
        return max(1 / 255, eps / steps)  # Xie et al. 2019, Sec. 5
    if "step_size" not in cfg:
        return None  # the attack's own default
    if cfg.get("eps") is None or eps == cfg["eps"] or eps == 0:
        return cfg["step_size"]  # eps 0: the ball is a point; any step works
    if cfg["eps"] <= 0:
        raise ValueError(f"cannot keep step_size/eps with config eps "
                         f"{cfg['eps']!r}; use step_size_rule='xie2019'")
    return cfg["step_size"] * eps / cfg["eps"]


def measure(model: Callable, x: np.ndarray, y: np.ndarray,
            config: Mapping[str, Any] | Callable, *, batch_size: int = 500,
            seed: int = 0, strategy: Any | None = None
            ) -> dict[str, Any]:
    """`evaluation.robust_accuracy` on in-memory arrays, run eagerly per
    batch of numpy arrays (the attacks compile their own loops). `config` is an attack
    config (`bind_attack`) or a bound `fn(model, x, y) -> x_adv`; a config
    with `targeted` draws one random wrong target per image (`seed`).
    Returns robust_accuracy's dict (`clean_acc`, `robust_acc`, ...)."""

    x, y = check_arrays(x, y)
    fn = config if callable(config) else bind_attack(config, model)
    targeted = not callable(config) and bool(config.get("targeted"))
    num_classes = int(logits(model, x[:1]).shape[-1])
    batch_size = check_batch_size(batch_size)
    ds = [(x[i:i + batch_size], y[i:i + batch_size])
          for i in range(0, len(x), batch_size)]
    return robust_accuracy(model, ds, fn, num_classes=num_classes,
                           targeted=targeted, strategy=strategy, seed=seed,
                           verbose=0, eager=True)


def _curve(model, x, y, cfg, key, grid, rule, kwargs) -> dict[str, Any]:
    if rule not in STEP_SIZE_RULES:
        raise ValueError(f"step_size_rule must be one of {STEP_SIZE_RULES}; "
                         f"got {rule!r}")
    out = {key: grid, "acc": [], "step_size": [], "attack_success_rate": []}
    for value in grid:
        point = dict(cfg, **{key: value})
        step = _step_size(cfg, point.get("eps") or 0.0, point.get("steps"),
                          rule)
        if step is not None:
            point["step_size"] = step
        r = measure(model, x, y, point, **kwargs)
        out["acc"].append(r["robust_acc"])
        out["step_size"].append(step)
        out["attack_success_rate"].append(r["attack_success_rate"])
    out.update(clean_acc=r["clean_acc"], n=r["n"], attack=dict(cfg),
               step_size_rule=rule)
    return out


def accuracy_vs_eps(model: Callable, x: Any, y: Any,
                    attack_config: Mapping[str, Any], eps_list: Sequence[float],
                    *, step_size_rule: str = "config", batch_size: int = 500,
                    seed: int = 0,
                    strategy: Any | None = None
                    ) -> dict[str, Any]:
    """Robust accuracy at each eps of `eps_list`, other settings from
    `attack_config` (step size per `step_size_rule`, module docstring).

    Args:
        model: `x` -> logits `(batch, classes)`, called with training=False.
        x: float `(n, height, width, channels)` in [0, 1]; y: int `(n,)`.
        attack_config: e.g. `{"name": "pgd", "eps": 0.1, "step_size": 0.01,
            "steps": 20, "seed": 0}`; optional `"bpda": True`.
        eps_list: strictly increasing budgets >= 0, on the [0, 1] scale.
        step_size_rule: "config" or "xie2019".
        batch_size: global batch size; seed: seed of random targets;
            strategy: a `tf.distribute` strategy (TensorFlow; default:
            none, the batches run one by one).

    Returns:
        dict: `eps` (list of float), `acc` (robust accuracy per eps, floats
        in [0, 1]; at eps 0 it equals `clean_acc`), `step_size` (per eps,
        None if the attack takes none), `attack_success_rate` (targeted,
        else Nones), `clean_acc`, `n`, `attack`, `step_size_rule`.

    Raises:
        ValueError: bad arrays, grid, rule, batch size, an attack without
            `eps` or of `EXCLUDED`; KeyError: unknown attack name.
    """
    cfg = _check_config(attack_config, "eps")
    grid = check_grid(eps_list, "eps_list", integer=False)
    return _curve(model, x, y, cfg, "eps", grid, step_size_rule,
                  dict(batch_size=batch_size, seed=seed, strategy=strategy))


def accuracy_vs_steps(model: Callable, x: Any, y: Any,
                      attack_config: Mapping[str, Any],
                      steps_list: Sequence[int], *,
                      step_size_rule: str = "config", batch_size: int = 500,
                      seed: int = 0,
                      strategy: Any | None = None
                      ) -> dict[str, Any]:
    """Robust accuracy at each number of attack iterations of `steps_list`
    (Xie et al. 2019, Fig. 6). Arguments, errors and the returned dict as
    `accuracy_vs_eps`, with `steps` (list of int >= 1, strictly
    increasing) in place of `eps`; the attack must take `steps`."""
    cfg = _check_config(attack_config, "steps")
    grid = check_grid(steps_list, "steps_list", integer=True)
    return _curve(model, x, y, cfg, "steps", grid, step_size_rule,
                  dict(batch_size=batch_size, seed=seed, strategy=strategy))


def _series(xs, ys, label, series, log_x) -> list:
    lines = [] if xs is None and ys is None else [(label, xs, ys)]
    lines += [(name, sx, sy) for name, (sx, sy) in (series or {}).items()]
    if not lines:
        raise ValueError("nothing to plot: give xs and ys, or series")
    for name, sx, sy in lines:
        sx, sy = np.asarray(sx, float), np.asarray(sy, float)
        if sx.ndim != 1 or sx.shape != sy.shape or not len(sx) \
                or not np.all(np.isfinite(sx)):
            raise ValueError(f"series {name!r}: xs and ys must be equal-length"
                             f" non-empty 1-d lists; got {sx!r}, {sy!r}")
        if log_x and np.any(sx <= 0):
            raise ValueError(f"log_x needs xs > 0; series {name!r} has "
                             f"{sx.tolist()}")
    return lines


def plot_curve(xs: Sequence[float] | None, ys: Sequence[float] | None,
               path: str | pathlib.Path, *, xlabel: str, ylabel: str,
               title: str, log_x: bool = False,
               series: Mapping[str, tuple[Sequence, Sequence]] | None = None,
               label: str | None = None) -> pathlib.Path:
    """Writes a PNG line plot with matplotlib's Agg canvas (no display, no
    global pyplot state).

    Args:
        xs, ys: one curve (equal lengths), or both None with `series`.
        path: the new `.png` file; missing parent directories are made.
        xlabel, ylabel, title: text of the axes and the title.
        log_x: logarithmic x axis (Xie et al. 2019, Fig. 6); xs must be > 0.
        series: more curves, `{legend name: (xs, ys)}`, e.g. one per model.
        label: legend name of the `xs, ys` curve.

    Returns:
        The path written.

    Raises:
        FileExistsError: `path` exists (a file is never overwritten).
        ValueError: not a `.png` path, no curve, unequal or empty lists,
            non-finite xs, or xs <= 0 with `log_x`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = pathlib.Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in '.png'; got {str(path)!r}")
    lines = _series(xs, ys, label, series, log_x)
    if path.exists():
        raise FileExistsError(f"{path} exists; plot_curve never overwrites")
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, sx, sy in lines:
        ax.plot(sx, sy, marker="o", label=name)
    if log_x:
        ax.set_xscale("log")
        ticks = sorted({float(v) for _, sx, _ in lines for v in sx})
        if len(ticks) <= 12:  # label the measured points, e.g. 1, 5, 20
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
            ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if any(name is not None for name, _, _ in lines):
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, "xb")  # "x": fails rather than overwrite (races too)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; plot_curve never overwrites")
    with f:
        try:
            fig.savefig(f, format="png", dpi=120)
        except BaseException:
            f.close()
            path.unlink()  # our own half-written file, never the user's
            raise
    return path


__all__ = ["STEP_SIZE_RULES", "accuracy_vs_eps", "accuracy_vs_steps",
           "bind_attack", "measure", "plot_curve"]
