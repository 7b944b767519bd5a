"""Which flow files a folder gives (metaflow_repro.operations.flows)."""

from __future__ import annotations

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.operations.flows import flow_files


def test_a_folder_gives_its_flow_files_in_name_order_and_an_empty_one_is_bad_input(tmp_path):
    (tmp_path / "b.py").write_text("from metaflow import FlowSpec\n")
    (tmp_path / "a.py").write_text("from metaflow import FlowSpec\n")
    (tmp_path / "test_a.py").write_text("from metaflow import FlowSpec\n")  # a test module is no flow
    (tmp_path / "util.py").write_text("x = 1\n")
    assert flow_files([str(tmp_path)]) == [tmp_path / "a.py", tmp_path / "b.py"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no flow files"):
        flow_files([str(tmp_path / "empty")])
    with pytest.raises(BadInput, match="no such flow file or folder"):
        flow_files([str(tmp_path / "missing.py")])
