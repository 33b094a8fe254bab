"""Named attacker suites: the fixed sets of attacks `evaluate.py --suite`
runs, each fully specified here (attack configs, labels, scoring).

A suite expands, for a budget `eps` (L-inf, [0, 1] pixel scale), into a
list of `Attacker`s. Each attacker is an attack config for
`attacks.from_config`, plus how its labels are chosen (`target`: the true
label, one random wrong label per image, the k-th most likely wrong class,
or none: the attack picks its own, as ILLC does) and whether it crafts on
the evaluated model ("white-box") or on the surrogates (transfer).

Scoring (`Suite.scoring`):
    "per_attacker": each attacker's accuracy (and targeted success rate) is
        reported on its own, e.g. PGD-10/100/1000 of the CAAD protocol.
    "all_or_nothing": in addition, an image counts as correct only if it
        is classified correctly under EVERY attacker's version (the CAAD
        2018 defense-track rule; equivalently the per-image worst case, as
        in AutoAttack's robust accuracy).

Suites:
    caad_targeted: Xie, Wu, van der Maaten, Yuille, He 2019, "Feature
        Denoising for Improving Adversarial Robustness", arXiv 1812.03411,
        Sec. 5 / Fig. 6 protocol: targeted L-inf PGD towards one random
        wrong label per image, eps 16/255, random start, step
        max(1/255, eps/steps), for each iteration count in `steps` (default
        10, 100, 1000). Reports accuracy AND targeted success rate.
    caad_blackbox: a CAAD-2017-style set of transfer attackers crafted on
        surrogate models, never on the evaluated one: MI-FGSM (Dong et al.
        2018, arXiv 1710.06081: 10 steps, mu 1, alpha eps/10) on the
        logit-averaged ensemble of all surrogates, untargeted and targeted
        I-FGSM (BIM, Kurakin et al. 2017, arXiv 1607.02533) and ILLC (its
        least-likely-class variant) on each surrogate. eps is set per run
        (CAAD 2018 used 32/255). Scored all-or-nothing.
    autoattack_like: Croce & Hein 2020, "Reliable evaluation of
        adversarial robustness with an ensemble of diverse parameter-free
        attacks", arXiv 2003.01690, Sec. 5 (standard version): APGD-CE
        (100 steps), targeted APGD-DLR (100 steps against each of the
        `targets` most likely wrong classes, default 9) and Square (5000
        queries); worst case per image.
    seed_lectures: the attacks of the course's seed lectures, each on its
        own: FGSM, BIM, ILLC, PGD (L-inf at eps), C&W L2 and DeepFool
        (minimum-norm; their success rate, no eps ball) and the one-pixel
        attack (Su et al. 2019, arXiv 1710.08864), on a sample.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TARGETS = ("label", "random", "top_wrong", "none")
SCORINGS = ("per_attacker", "all_or_nothing")


@dataclasses.dataclass(frozen=True)
class Attacker:
    """One attacker of a suite.

    Attributes:
        label: a short unique name, e.g. "pgd-100_targeted".
        config: the attack config for `attacks.from_config` (name, eps,
            steps, ...), with `targeted` set when `target` is a wrong label.
        target: one of `TARGETS`: "label" attacks the true label
            (untargeted), "random" one uniformly random wrong label per
            image (seeded), "top_wrong" the `rank`-th most likely wrong
            class of the clean logits, "none" passes no label (the attack
            chooses, e.g. ILLC's least likely class).
        rank: for "top_wrong": 1 = most likely wrong class.
        surrogate: None crafts on the evaluated model; "ensemble" on the
            mean logits of all surrogates; an int on that surrogate.
        min_norm: an attack without an L-inf eps ball (the minimum-norm
            C&W L2 and DeepFool, the L0 one-pixel attack): it reports its
            success rate and perturbation norms, is not a robust accuracy
            at eps, and is left out of the all-or-nothing score.
    """

    label: str
    config: dict[str, Any]
    target: str = "label"
    rank: int = 0
    surrogate: int | str | None = None
    min_norm: bool = False

    @property
    def transfer(self) -> bool:
        return self.surrogate is not None


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named suite: its attackers for one budget, and how they score."""

    name: str
    attackers: tuple[Attacker, ...]
    scoring: str
    eps: float
    needs_surrogates: bool = False
    default_num_examples: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _caad_step(eps: float, steps: int) -> float:
    return max(1.0 / 255.0, eps / steps)


def caad_targeted(eps: float = 16 / 255, steps=(10, 100, 1000)) -> Suite:
    """Xie et al. 2019's targeted PGD protocol (module doc)."""
    attackers = tuple(
        Attacker(f"pgd-{n}_targeted", {
            "name": "pgd", "eps": eps, "steps": int(n),
            "step_size": _caad_step(eps, int(n)), "norm": "inf",
            "rand_init": True, "targeted": True}, target="random")
        for n in steps)
    return Suite("caad_targeted", attackers, "per_attacker", eps)


def caad_blackbox(eps: float = 32 / 255, surrogates: int = 1,
                  steps: int = 10) -> Suite:
    """CAAD-2017-style transfer attackers (module doc); `surrogates` is
    the number of surrogate models given to the runner."""
    if surrogates < 1:
        raise ValueError("caad_blackbox needs at least one surrogate model "
                         f"(--transfer_from); got {surrogates}")
    step = eps / steps
    attackers = [Attacker(
        "mi_fgsm_ensemble", {"name": "mi_fgsm", "eps": eps, "steps": steps,
                             "step_size": step, "mu": 1.0},
        surrogate="ensemble")]
    attackers.append(Attacker(
        "mi_fgsm_ensemble_targeted", {
            "name": "mi_fgsm", "eps": eps, "steps": steps,
            "step_size": step, "mu": 1.0, "targeted": True},
        target="random", surrogate="ensemble"))
    for i in range(surrogates):
        bim = {"name": "bim", "eps": eps, "steps": steps, "step_size": step}
        attackers += [
            Attacker(f"ifgsm_s{i}", dict(bim), surrogate=i),
            Attacker(f"ifgsm_targeted_s{i}", {**bim, "targeted": True},
                     target="random", surrogate=i),
            Attacker(f"illc_s{i}", {"name": "illc", "eps": eps},
                     target="none", surrogate=i),
        ]
    return Suite("caad_blackbox", tuple(attackers), "all_or_nothing", eps,
                 needs_surrogates=True)


def autoattack_like(eps: float = 8 / 255, steps: int = 100,
                    targets: int = 9, queries: int = 5000) -> Suite:
    """APGD-CE + targeted APGD-DLR + Square, worst case (module doc)."""
    attackers = [Attacker(f"apgd_ce-{steps}", {
        "name": "apgd_ce", "eps": eps, "steps": steps})]
    attackers += [Attacker(
        f"apgd_dlr-{steps}_target{k}", {
            "name": "apgd_dlr", "eps": eps, "steps": steps,
            "targeted": True}, target="top_wrong", rank=k)
        for k in range(1, targets + 1)]
    attackers.append(Attacker(f"square-{queries}", {
        "name": "square", "eps": eps, "steps": queries}))
    return Suite("autoattack_like", tuple(attackers), "all_or_nothing", eps)


def seed_lectures(eps: float = 0.1, steps: int = 20) -> Suite:
    """The seed lectures' attacks, each on its own (module doc)."""
    attackers = (
        Attacker("fgsm", {"name": "fgsm", "eps": eps}),
        Attacker(f"bim-{steps}", {"name": "bim", "eps": eps, "steps": steps,
                                  "step_size": 2.5 * eps / steps}),
        Attacker("illc", {"name": "illc", "eps": eps}, target="none"),
        Attacker(f"pgd-{steps}", {"name": "pgd", "eps": eps, "steps": steps,
                                  "step_size": 2.5 * eps / steps,
                                  "rand_init": True}),
        Attacker("cw_l2", {"name": "cw_l2"}, min_norm=True),
        Attacker("deepfool", {"name": "deepfool"}, min_norm=True),
        Attacker("one_pixel", {"name": "one_pixel"}, min_norm=True),
    )
    return Suite("seed_lectures", attackers, "per_attacker", eps,
                 default_num_examples=100)


_BUILDERS = {"caad_targeted": caad_targeted, "caad_blackbox": caad_blackbox,
             "autoattack_like": autoattack_like,
             "seed_lectures": seed_lectures}
SUITES = tuple(_BUILDERS)


def get_suite(name: str, *, eps: float | None = None,
              steps: list[int] | int | None = None,
              surrogates: int = 0, **options: Any) -> Suite:
    """The suite `name` at budget `eps` (None: the suite's default).

    Args:
        name: one of `SUITES`.
        eps: L-inf budget on the [0, 1] scale, > 0, or None.
        steps: iteration count(s) overriding the suite's: a list for
            caad_targeted (e.g. [10, 100, 1000]), an int for the others.
        surrogates: number of surrogate models (caad_blackbox).
        **options: the suite builder's other arguments, e.g. `targets` and
            `queries` of `autoattack_like`.

    Raises:
        ValueError: unknown name (lists `SUITES`), eps <= 0, bad steps,
            caad_blackbox without surrogates, or an option the suite does
            not take (lists those it takes).
    """
    if name not in _BUILDERS:
        raise ValueError(f"suite must be one of {SUITES}; got {name!r}")
    import inspect

    accepted = set(inspect.signature(_BUILDERS[name]).parameters) - {
        "eps", "steps", "surrogates"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"suite {name!r} takes the options "
                         f"{sorted(accepted)}; got {unknown}")
    kwargs: dict[str, Any] = dict(options)
    if eps is not None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0; got {eps!r}")
        kwargs["eps"] = float(eps)
    if steps is not None:
        listed = list(steps) if isinstance(steps, (list, tuple)) else [steps]
        if not listed or any(int(s) < 1 for s in listed):
            raise ValueError(f"steps must be integers >= 1; got {steps!r}")
        if name == "caad_targeted":
            kwargs["steps"] = tuple(int(s) for s in listed)
        elif len(listed) != 1:
            raise ValueError(f"suite {name!r} takes one steps value; got "
                             f"{steps!r}")
        else:
            kwargs["steps"] = int(listed[0])
    if name == "caad_blackbox":
        kwargs["surrogates"] = surrogates
    return _BUILDERS[name](**kwargs)


__all__ = ["Attacker", "SCORINGS", "SUITES", "Suite", "TARGETS",
           "get_suite"]
