"""Calibration against real vLLM: the probe (probe.py) measures a running server at fixed
operating points, the fit (fit.py) turns those measurements into a hardware profile the emulated
and simulated targets accept (`hardware: PATH`)."""
