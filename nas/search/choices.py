"""The names a user picks a search's sampler and scheduler (and an export's formats) by, spelled once (no heavy
imports)."""

SAMPLERS = ("tpe", "nsga2", "gp", "random")
DEFAULT_SAMPLER = "tpe"

# MOASHA's orders within a front: NSGA-II crowding distance, or an epsilon-net.
PRIORITIES = ("nsga2", "epsnet")
DEFAULT_PRIORITY = "nsga2"
# "moasha" is MOASHA with DEFAULT_PRIORITY; "asha" is Ray's single-metric ASHA on val_acc.
SCHEDULERS = ("moasha", "moasha-nsga2", "moasha-epsnet", "asha", "none")
DEFAULT_SCHEDULER = "moasha"

# Rung 0 without training ("sahd": nas.proxy's SAHD score), and how it picks what is trained.
PROXIES = ("none", "sahd")
DEFAULT_PROXY = "none"
PROXY_RULES = ("top", "front")
DEFAULT_PROXY_RULE = "front"  # by measurement: benchmarks/README.md, "Training-free rung 0"

# What ``nas export`` writes per model (``--format``, comma-separated).
EXPORT_FORMATS = ("torchscript", "state_dict", "onnx")
