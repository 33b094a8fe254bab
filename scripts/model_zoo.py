r"""Builds the README's model-zoo table from the committed result folders.

Each `results/<recipe>/` holds `run.json` (the command, wall time, machine)
and the `evaluate.py` JSON reports of that run. The table lists, per recipe,
clean accuracy, each attack's robust accuracy, and the worst case over the
attacks at the recipe's evaluation threat model (norm, eps, untargeted).

    python scripts/model_zoo.py            # print the table
    python scripts/model_zoo.py --write    # rewrite it inside README.md

The same command writes the published-checkpoints table from the registry
of `checkpoints/published.py`. tests/test_model_zoo.py fails when README.md
disagrees with the results or the registry.
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- model-zoo:start -->", "<!-- model-zoo:end -->"
CKPT_START, CKPT_END = "<!-- checkpoints:start -->", "<!-- checkpoints:end -->"


def _reports(folder: pathlib.Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        if "robust_acc" in report:
            out.append({**report, "file": path.name})
    return out


def _attack_name(a: dict) -> str:
    name = a["name"].upper() + (f"-{a['steps']}" if "steps" in a else "")
    extras = [f"{a['restarts']} restarts"] if a.get("restarts", 1) > 1 else []
    if a.get("loss") == "cw":
        extras.append("C&W loss")
    if a.get("bpda"):
        extras.append("BPDA")
    return name + (f" ({', '.join(extras)})" if extras else "")


def _min_norm(reports: list[dict]) -> str:
    """Minimum-norm attacks (no eps: C&W ...): their success rate on the
    correctly classified images, outside the eps threat model."""
    out = []
    for r in reports:
        success = 1.0 - r["robust_acc"] / max(r["clean_acc"], 1e-12)
        out.append(f"{_attack_name(r['attack'])} (min-norm, first {r['n']}):"
                   f" {100 * success:.1f}% success, max L2 "
                   f"{r['max_l2']:.2f}")
    return "; ".join(out)


def _row(folder: pathlib.Path) -> str:
    run = json.loads((folder / "run.json").read_text())
    every = [r for r in _reports(folder) if not r["attack"].get("targeted")]
    reports = [r for r in every if r["attack"].get("eps") is not None]
    min_norm = _min_norm([r for r in every
                          if r["attack"].get("eps") is None])
    full = [r for r in reports if r["n"] == run["test_examples"]]
    main = full[0]
    a = main["attack"]
    norm = "L-inf" if a.get("norm", "inf") == "inf" else "L2"
    attacks = "; ".join(
        f"{_attack_name(r['attack'])}: {100 * r['robust_acc']:.2f}"
        + ("" if r["n"] == run["test_examples"] else f" (first {r['n']})")
        for r in reports) + (f"; {min_norm}" if min_norm else "")
    failed = sorted({f"{c['name']} ({_attack_name(r['attack'])})"
                     for r in every for c in r.get("sanity", {}).get(
                         "checks", []) if not c["passed"]})
    if failed:  # evaluate.py's gradient-masking checks (see its report)
        attacks += f"; sanity checks failed: {', '.join(failed)}"
    worst = min(reports, key=lambda r: r["robust_acc"])
    return (f"| `{folder.name}` | `{run['command']}` | {norm}, eps "
            f"{a['eps']:g} ({255 * a['eps']:.1f}/255), untargeted | "
            f"{100 * main['clean_acc']:.2f} | {attacks} | "
            f"**{100 * worst['robust_acc']:.2f}** | {run['wall_time']} on "
            f"{run['machine']} |")


def table() -> str:
    header = ("| recipe | command | threat model | clean acc (%) | robust acc "
              "per attack (%) | worst case (%) | time |\n"
              "|---|---|---|---|---|---|---|")
    rows = [_row(f) for f in sorted((ROOT / "results").iterdir())
            if (f / "run.json").exists()]
    return "\n".join([header, *rows])


def checkpoints_table() -> str:
    """The registry (checkpoints/published.py) as a Markdown table."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import checkpoints

    lines = ["| checkpoint | recipe | threat model | clean acc (%) | robust "
             "acc (%) / targeted success (%) by PGD steps | sha256 | "
             "license |", "|---|---|---|---|---|---|---|"]
    for name in checkpoints.list_checkpoints():
        c = checkpoints.get(name)
        t = c.threat_model
        steps = ", ".join(f"{k}: {c.robust_acc[k]} / {c.attack_success[k]}"
                          for k in sorted(c.robust_acc))
        lines.append(
            f"| `{name}` ([file]({c.url})) | `{c.recipe}` | L{t.norm} eps "
            f"{round(t.eps * 255)}/255, "
            f"{'targeted' if t.targeted else 'untargeted'} | {c.clean_acc} | "
            f"{steps} | {c.sha256 or 'recorded at first download'} | "
            f"{c.license} |")
    return "\n".join(lines)


def _replace(readme: str, start: str, end: str, body: str) -> str:
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def readme_with_table(readme: str) -> str:
    """README text with the blocks between the markers replaced."""
    readme = _replace(readme, START, END, table())
    return _replace(readme, CKPT_START, CKPT_END, checkpoints_table())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.write:
        path = ROOT / "README.md"
        path.write_text(readme_with_table(path.read_text()))
    else:
        print(table())
