"""The worlds the simulator can be in, and the device fleets patients measure with.

A scenario changes what the simulated world looks like while the clinical truth stays
defined the same way (the label is always the true pressure against the thresholds):

- ``baseline``      the calibrated cohort (``bp_core.simulation.cohort``);
- ``cuff-offset``   the ``HomeCheck Pro`` fleet (20 % of patients) reads +15 / +8 mmHg
                    above the truth, as after a faulty firmware update: measurements
                    are biased, true pressures and labels are those of ``baseline``;
- ``older-cohort``  a different, older population (60 % aged 60 or more, against
                    30 % of US adults): its true pressures are higher, as age implies.

Pure Python on purpose: DAG files read ``SCENARIO_NAMES`` at parse time. Reasoning and
sources: docs/simulation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE = "baseline"
CUFF_OFFSET = "cuff-offset"
OLDER_COHORT = "older-cohort"

# Fleets are assigned per block of FLEET_BLOCK consecutive patients (see Cohort), so a
# fleet's share is exact in every block: shares are multiples of 1 / FLEET_BLOCK.
FLEET_BLOCK = 20


@dataclass(frozen=True)
class DeviceModel:
    """A fleet: every cuff of one model, and the share of patients who measure with one."""

    name: str
    share: float


FLEETS: tuple[DeviceModel, ...] = (
    DeviceModel("ArmCuff 200", 0.35),
    DeviceModel("ArmCuff 100", 0.30),
    DeviceModel("HomeCheck Pro", 0.20),
    DeviceModel("WristCuff 50", 0.15),
)
FLEET_NAMES: tuple[str, ...] = tuple(fleet.name for fleet in FLEETS)
OFFSET_FLEET = "HomeCheck Pro"
CUFF_OFFSET_MM_HG = (15.0, 8.0)

# Patients per age bin 18–29, 30–39, ..., 70–79, 80–90 (the cohort's decade bins).
OLDER_AGE_WEIGHTS = (0.06, 0.07, 0.10, 0.17, 0.25, 0.22, 0.13)


@dataclass(frozen=True)
class Scenario:
    """One simulated world.

    ``age_weights`` replaces the cohort's age mix (None: the US adult mix);
    ``population`` names who the patients are: patients (ids, identities, attributes)
    are the same in scenarios with the same population, different otherwise;
    ``device_offsets`` maps a fleet to what its cuffs add to the true (systolic,
    diastolic) values.
    """

    name: str
    summary: str
    population: str = "general"
    age_weights: tuple[float, ...] | None = None
    device_offsets: dict[str, tuple[float, float]] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    BASELINE: Scenario(BASELINE, "the calibrated cohort; every cuff reads the truth plus noise"),
    CUFF_OFFSET: Scenario(
        CUFF_OFFSET,
        f"the {OFFSET_FLEET} fleet ({FLEETS[FLEET_NAMES.index(OFFSET_FLEET)].share:.0%} of patients) reads "
        f"+{CUFF_OFFSET_MM_HG[0]:.0f}/+{CUFF_OFFSET_MM_HG[1]:.0f} mmHg above the truth; truth and labels unchanged",
        device_offsets={OFFSET_FLEET: CUFF_OFFSET_MM_HG}),
    OLDER_COHORT: Scenario(
        OLDER_COHORT, "an older population (60 % aged 60 or more): true pressures and labels shift",
        population="older", age_weights=OLDER_AGE_WEIGHTS),
}
SCENARIO_NAMES: tuple[str, ...] = tuple(SCENARIOS)


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises:
        ValueError: no scenario has that name (the message lists the valid ones).
    """
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scenario {name!r}: choose from {', '.join(SCENARIO_NAMES)}") from None
