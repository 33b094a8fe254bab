"""absl flags shared by train.py and evaluate.py: where a job runs and
where it writes (the recipe says what the experiment is)."""

from absl import flags

from training import distribute

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the run (train.py writes it; evaluate.py "
    "reads its model.keras and config.json and writes reports/ there).")
STRATEGY = flags.DEFINE_enum("strategy", "auto", distribute.STRATEGIES,
                             "tf.distribute strategy.")
TPU = flags.DEFINE_string("tpu", None,
                          "TPU name or address (with --strategy=tpu).")
TRUST_SHA256 = flags.DEFINE_string(
    "trust_sha256", None, "With a registered checkpoint (train.py "
    "--init_checkpoint, evaluate.py --checkpoint): the SHA-256 you checked "
    "of a cached file that robust-recipes did not download itself (the "
    "publisher gives no hash).")
