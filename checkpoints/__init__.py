"""Published robust checkpoints: registry, download, conversion, loading.

    >>> import checkpoints
    >>> checkpoints.list_checkpoints("*denoise*")
    ['denoise_all_resnext101.xie2019_in1k', 'denoise_resnet152.xie2019_in1k']
    >>> spec = checkpoints.get("denoise_resnet152.xie2019_in1k")
    >>> model = checkpoints.load(spec.name)  # downloads once, ~280 MB
    >>> net = checkpoints.load_model_file("runs/x/model.keras")

A registry in the style of timm's pretrained configs (`arch.tag` names,
URL, SHA-256, model kwargs, input contract, threat model, published
numbers, paper, license); see `checkpoints.published` for the entries,
`checkpoints.loading.load` for every accepted form (registered name,
tensorpack `.npz`, our `.keras`, Keras Applications), and
`checkpoints.fine_tune.adapt` for a new input size / head / frozen stages,
`checkpoints.download.fetch` for the hash policy (`trust_sha256`) and
`checkpoints.model_file.load_model_file` for the checked `.keras` loader.
"""

from checkpoints.fine_tune import adapt
from checkpoints.loading import load
from checkpoints.model_file import load_model_file
from checkpoints.published import CHECKPOINTS
from checkpoints.spec import CheckpointSpec, ThreatModel

__all__ = ["CheckpointSpec", "ThreatModel", "adapt", "get",
           "list_checkpoints", "load", "load_model_file"]


def list_checkpoints(pattern: str = "*") -> list[str]:
    """Sorted registered names matching the fnmatch `pattern`."""
    return CHECKPOINTS.names(pattern)


def get(name: str) -> CheckpointSpec:
    """The registered `CheckpointSpec` of `name`.

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    return CHECKPOINTS.get(name)
