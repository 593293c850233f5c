"""The host facts a manifest records: the CPU model, read from /proc/cpuinfo."""

from kvbench.results.store import cpu_model_name, host_facts

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""


def test_the_first_model_name_is_the_cpu_model(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_model_name(path) == "Intel(R) Xeon(R) Platinum 8480+"


def test_a_missing_file_or_field_is_unknown(tmp_path):
    assert cpu_model_name(tmp_path / "absent") is None
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nfeatures\t: fp asimd\n")  # an Arm kernel's layout
    assert cpu_model_name(path) is None


def test_the_manifest_host_carries_this_machines_cpu_model():
    assert host_facts().cpu_model == cpu_model_name()
