"""Hardware energy profiles: the cost of one MAC, one accumulate (AC) and one byte of memory traffic."""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError

_PROFILE_KEYS = ("name", "e_mac_pj", "e_ac_pj", "e_memory_pj_per_byte", "description")


@dataclass(frozen=True)
class Profile:
    """Energy per operation in picojoules.

    ``e_memory_pj_per_byte`` is zero for the compute-only profiles that the SNN literature uses; the
    memory-aware profile adds spikingjelly 2.0's ``SimpleEnergy`` memory term (weight and bias reads
    plus one read and one write of every neuron state per time step).
    """

    name: str
    e_mac_pj: float
    e_ac_pj: float
    e_memory_pj_per_byte: float = 0.0
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-serialisable dict."""
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "45nm": Profile("45nm", 4.6, 0.9, 0.0, "32-bit float, 45 nm CMOS (Horowitz, ISSCC 2014); compute only"),
    "45nm-fp16": Profile("45nm-fp16", 1.5, 0.4, 0.0, "16-bit float, 45 nm (FMult16 1.1 + FAdd16 0.4 pJ); compute only"),
    "45nm-int8": Profile("45nm-int8", 0.23, 0.03, 0.0, "8-bit integer, 45 nm (Mult8 0.2 + Add8 0.03 pJ); compute only"),
    "45nm-memory": Profile(
        "45nm-memory",
        4.6,
        0.9,
        24.96,
        "32-bit float, 45 nm, plus spikingjelly 2.0 SimpleEnergy memory term (3.12 pJ/bit = 24.96 pJ/byte)",
    ),
}


def _number(value: Any, key: str, source: str) -> float:
    # bool is an int subclass: "e_ac_pj = true" is a typo, not a cost
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NasError(f"{source}: '{key}' must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise NasError(f"{source}: '{key}' must be a finite number >= 0, got {value!r}")
    return number


def profile_from_dict(data: Any, source: str = "profile") -> Profile:
    """Build a :class:`Profile` from a mapping with keys ``e_mac_pj``, ``e_ac_pj`` and optionally
    ``name``, ``e_memory_pj_per_byte``, ``description``. ``source`` names the origin in error messages."""
    if not isinstance(data, dict):
        raise NasError(f"{source}: expected a table of profile keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_PROFILE_KEYS))
    if unknown:
        allowed = ", ".join(_PROFILE_KEYS)
        raise NasError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {allowed})")
    for key in ("e_mac_pj", "e_ac_pj"):
        if key not in data:
            raise NasError(f"{source}: missing required key '{key}'")
    name = data.get("name", Path(source).stem)
    description = data.get("description", "")
    if not isinstance(name, str) or not name:
        raise NasError(f"{source}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(description, str):
        raise NasError(f"{source}: 'description' must be a string, got {description!r}")
    return Profile(
        name=name,
        e_mac_pj=_number(data["e_mac_pj"], "e_mac_pj", source),
        e_ac_pj=_number(data["e_ac_pj"], "e_ac_pj", source),
        e_memory_pj_per_byte=_number(data.get("e_memory_pj_per_byte", 0.0), "e_memory_pj_per_byte", source),
        description=description,
    )


def load_profile_file(path: str | Path) -> Profile:
    """Read a user-defined profile from a ``.toml`` or ``.yaml``/``.yml`` file (flat keys, see
    :func:`profile_from_dict`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise NasError(f"energy profile file {path}: expected a .toml, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise NasError(f"energy profile file {path}: cannot be read ({error.strerror or error})") from error
    if suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise NasError(f"energy profile file {path}: malformed TOML ({error})") from error
    else:
        import yaml  # only needed for YAML profiles

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            first_line = str(error).splitlines()[0] if str(error) else "parse error"
            raise NasError(f"energy profile file {path}: malformed YAML ({first_line})") from error
    return profile_from_dict(data, source=str(path))


def get_profile(profile: str | Path | Profile) -> Profile:
    """A built-in profile by name (see :data:`PROFILES`), a :class:`Profile`, or a profile file path."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    path = Path(profile)
    if path.suffix.lower() in (".toml", ".yaml", ".yml") or path.exists():
        return load_profile_file(path)
    raise NasError(f"unknown energy profile {str(profile)!r} (known: {', '.join(PROFILES)}; or a .toml/.yaml file)")
