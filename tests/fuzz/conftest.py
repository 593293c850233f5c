import pytest

# hypothesis is in the test extra (scripts/bootstrap.sh installs it); a venv made before it was
# added reports these tests as skipped instead of failing to collect the whole suite.
pytest.importorskip("hypothesis", reason="run scripts/bootstrap.sh (hypothesis: test extra)")
