"""`attack_label`: the short name of a threat model under which reports
and their files are keyed (e.g. "pgd-20_linf_eps0.1000_5restarts")."""

from __future__ import annotations


def attack_label(attack: dict) -> str:
    """A short name of a threat model, e.g. "pgd-20_linf_eps0.1000" (or
    "cw_l2-50_min-norm" for a minimum-norm attack without eps), with
    "_cw-loss", "_5restarts", "_targeted", "_bpda", "_eot20" and "_naive"
    suffixes where they apply."""
    steps = f"-{attack['steps']}" if "steps" in attack else ""
    if attack.get("eps") is None:  # minimum-norm attack, no ball
        return f"{attack['name']}{steps}_min-norm" + (
            "_targeted" if attack.get("targeted") else "")
    norm = "linf" if attack.get("norm", "inf") == "inf" else "l2"
    tgt = "_targeted" if attack.get("targeted") else ""
    loss = "_cw-loss" if attack.get("loss") == "cw" else ""
    restarts = attack.get("restarts", 1)
    rst = f"_{restarts}restarts" if restarts > 1 else ""
    bpda = "_bpda" if attack.get("bpda") else ""
    eot = f"_eot{attack['eot_samples']}" if attack.get("eot_samples") else ""
    naive = "_naive" if attack.get("naive") else ""
    return (f"{attack['name']}{steps}_{norm}_eps{attack['eps']:.4f}"
            f"{loss}{rst}{tgt}{bpda}{eot}{naive}")
