"""The synchronized-load check: lock-step waves are flagged, steady or random load is not."""

import numpy as np
from tests.analysis.synth import SynthCell, write_run

from kvbench.analysis.load import load_run
from kvbench.analysis.validity import CheckStatus, check_synchronized_load
from kvbench.analysis.waves import min_burst_for, wave_share


def test_wave_share_of_waves_evenly_spread_and_poisson_times():
    waves = np.concatenate([k * 1.5 + np.arange(30) * 0.001 for k in range(10)])
    assert wave_share(waves, 15) == 1.0
    assert wave_share(np.linspace(0, 10, 300), 3) == 0.0
    poisson = np.cumsum(np.random.default_rng(1).exponential(1.0, 2000))
    assert wave_share(poisson, 3) < 0.05


def test_a_burst_smaller_than_min_burst_does_not_count():
    times = np.array([0.0, 0.001, 0.002, 5.0, 10.0, 15.0, 20.0])  # one burst of 3, then spread
    assert wave_share(times, 3) == 3 / 7
    assert wave_share(times, 4) == 0.0


def test_min_burst_is_half_the_streams_and_at_least_three():
    assert min_burst_for(30, "concurrent") == 15
    assert min_burst_for(2, "concurrent") == 3
    assert min_burst_for(30, "constant") == 3


def test_lock_step_cell_is_flagged_and_a_steady_one_is_not(tmp_path):
    run = load_run(
        write_run(
            tmp_path,
            [
                SynthCell(scenario="no-offload", level=30, wave_size=30),
                SynthCell(scenario="native-offload", level=30),
            ],
        )
    )
    by_scenario = {c.info.scenario: check_synchronized_load(c) for c in run.cells}
    waved, steady = by_scenario["no-offload"], by_scenario["native-offload"]
    assert waved.status == CheckStatus.FLAG
    assert "100% of" in waved.evidence and "stagger" in waved.evidence
    assert steady.status == CheckStatus.OK, steady.evidence
