import importlib

import pytest

TOOLS = ["train", "evaluate", "convert_model", "debug", "predict"]


@pytest.mark.parametrize("module", TOOLS)
def test_every_tool_has_help(module, capsys):
    tool = importlib.import_module(f"keras_retinanet.bin.{module}")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: retinanet-" in capsys.readouterr().out
