"""nas.energy: MACs, SOPs, firing rates and energy per image of a model, under a named hardware profile.

The convention is the SNN literature's (see ``COUNTING_CONVENTION``): layers fed by binary spikes count
synaptic operations (each spike's fan-out), layers fed by real values count MACs, and
energy = E_MAC x MACs + E_AC x SOPs. Every report records the profile and the counting policy used.
"""

from __future__ import annotations

from nas.energy._bound import saturated_report
from nas.energy._calibrate import calibrate_norms
from nas.energy._meter import COUNTING_CONVENTION, EnergyMeter, EnergyReport, LayerRow, counting_policy, measure
from nas.energy._model import input_size, load_checkpoint, measure_on_random
from nas.energy._profiles import PROFILES, Profile, get_profile, load_profile_file, profile_from_dict
from nas.energy._render import render_table

__all__ = [
    "COUNTING_CONVENTION",
    "EnergyMeter",
    "EnergyReport",
    "LayerRow",
    "PROFILES",
    "Profile",
    "calibrate_norms",
    "counting_policy",
    "get_profile",
    "input_size",
    "load_checkpoint",
    "load_profile_file",
    "measure",
    "measure_on_random",
    "profile_from_dict",
    "render_table",
    "saturated_report",
]
