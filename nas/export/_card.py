"""The model card (``MODEL_CARD.md``) of an export folder, written from its ``arch.json``."""

from __future__ import annotations

import json
from typing import Any

from nas.export._formats import ONNX_FILE
from nas.results.layout import ENERGY_FILE, SPACE_FILE
from nas.results.metrics import MODEL_METRIC_MEANINGS

CARD_FILE = "MODEL_CARD.md"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_card(arch: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of an export folder, from its ``arch.json``."""
    weights = arch["weights"]
    metrics, recorded = arch["metrics"], arch["search_metrics"]
    lineage = arch["lineage"]
    if weights["source"] == "retrained":
        where = (f"retrained from scratch for {weights['epochs']} epochs at export (the search trial trained "
                 f"{weights['search_epochs']}); metrics re-measured on the retrained weights")
    else:
        where = (f"the search trial's own weights ({weights['epochs']} epochs); metrics measured at export "
                 "on these weights")
    rows = MODEL_METRIC_MEANINGS.items()
    table = ["| metric | meaning | exported weights | search trial |", "|---|---|---|---|"]
    table += [f"| {k} | {meaning} | {_fmt(metrics.get(k))} | {_fmt(recorded.get(k))} |" for k, meaning in rows]
    ds = arch["dataset"]
    ev = arch["evaluation"]
    profile = arch["energy"]["profile"]
    onnx = arch["onnx"]
    rank = arch["pareto_rank"]
    lines = [
        f"# {arch['search']} trial {arch['trial']}: {arch['family']} (T={arch['time_steps']})",
        "",
        f"Weights: {where}.",
        "",
        *table,
        "",
        f"- Dataset: {ds['name']} ({ds['info']['img_size']}x{ds['info']['img_size']}x{ds['info']['in_chans']}, "
        f"{ds['info']['num_classes']} classes); val_acc over {ev['val_subset'] or 'all'} validation images "
        f"(batch {ev['batch_size']}, seed {ev['seed']}); energy on the first {ev['energy_images']} of them.",
        f"- Energy profile: {profile['name']} (E_MAC {profile['e_mac_pj']} pJ, E_AC {profile['e_ac_pj']} pJ); "
        f"counting policy in arch.json (energy.counting_policy), per-layer figures in {ENERGY_FILE}.",
        f"- Pareto rank in the search: {'infeasible' if rank is None else rank}"
        f"{' (on the front)' if rank == 0 else ''}; objectives "
        + ", ".join(f"{k} ({v})" for k, v in arch["objectives"].items()) + ".",
        f"- Lineage: search `{lineage['search']}`, trial {lineage['trial']}, MLflow run "
        f"`{lineage['mlflow_run_id'] or 'unknown'}` ({lineage['tracking_uri']}).",
        f"- Space: `{arch['space_name']}` (copy in {SPACE_FILE}, hash {arch['space_hash']}); params "
        f"`{json.dumps(arch['params'], sort_keys=True)}`.",
        "",
        "## Files",
        "",
        f"- `{arch['weights']['file']}`: weights; `nas.load(folder)` rebuilds the model from arch.json + these.",
    ]
    if arch["torchscript"]:
        lines.append(f"- `{arch['torchscript']}`: TorchScript, `torch.jit.load(path)` needs only torch; input "
                     f"float32 `[B, {', '.join(str(d) for d in arch['input_shape'])}]` normalised with the "
                     "dataset's mean/std (arch.json dataset.info).")
    if onnx["file"]:
        batch = "dynamic batch" if onnx["batch"] == "dynamic" else \
            f"fixed batch of {onnx['batch']} (a dynamic batch failed: {onnx.get('dynamic_batch_error')})"
        lines.append(f"- `{ONNX_FILE}`: ONNX opset 17, {batch}, checked against the live model with onnxruntime.")
    else:
        lines.append(f"- No ONNX: {onnx['reason']}.")
    lines += ["- `nas evaluate <folder>` re-measures accuracy and energy.", ""]
    return "\n".join(lines)
