"""Plain-text rendering of an energy report (the CLI only prints it)."""

from __future__ import annotations

from nas.energy._meter import EnergyReport


def _si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3f}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def render_table(report: EnergyReport) -> str:
    """The per-layer table followed by the per-image totals, profile and counting policy."""
    header = ("layer", "kind", "input", "counted", "rate", "dense MACs", "MACs", "SOPs", "energy uJ", "share")
    lines = [header]
    for row in report.per_layer:
        name = row.name + (f" [{row.role}]" if row.role else "")
        rate = "-" if row.firing_rate is None else f"{row.firing_rate:.3f}"
        lines.append(
            (
                name,
                row.kind,
                row.input,
                row.counted_as,
                rate,
                _si(row.dense_macs),
                _si(row.macs),
                _si(row.sops),
                f"{row.energy_uj:.4f}",
                f"{100 * row.share:.1f}%",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {4, 5, 6, 7, 8, 9}
    out = []
    for index, line in enumerate(lines):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    prof = report.profile
    policy = report.policy
    memory = f", E_mem {prof.e_memory_pj_per_byte} pJ/byte" if prof.e_memory_pj_per_byte else ""
    out += [
        "",
        f"per image ({report.images} images, T={report.time_steps}):",
        f"  MACs {_si(report.macs)}   SOPs {_si(report.sops)}   energy {report.energy_uj:.4f} uJ"
        f"   firing rate {report.firing_rate:.4f}   params {_si(report.params)}",
        f"  dense MACs {_si(report.dense_macs)} ({_si(report.dense_macs / max(report.time_steps, 1))} per time step)"
        + (f"   memory {_si(report.memory_bytes)} bytes" if prof.e_memory_pj_per_byte else ""),
        f"profile {prof.name}: E_MAC {prof.e_mac_pj} pJ, E_AC {prof.e_ac_pj} pJ{memory}"
        + (f" ({prof.description})" if prof.description else ""),
        f"policy: encoding layer {policy['encoding']}"
        + (", sops for binary input" if policy.get("encoding_binary_input") == "sops" else "")
        + f" ({', '.join(policy.get('encoding_layers') or ['none'])}), "
        f"classifier {policy['classifier']} ({policy.get('classifier_layer') or 'none'}); "
        "real-input MACs counted every time the layer runs",
    ]
    return "\n".join(out)
