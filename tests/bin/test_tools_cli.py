import importlib
import subprocess
import sys

import pytest

TOOLS = ["train", "evaluate", "convert_model", "debug", "predict"]


@pytest.mark.parametrize("module", TOOLS)
def test_every_tool_has_help(module, capsys):
    tool = importlib.import_module(f"keras_retinanet.bin.{module}")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: retinanet-" in capsys.readouterr().out


@pytest.mark.parametrize("module", TOOLS)
def test_every_tool_has_a_version_and_examples(module, capsys):
    from keras_retinanet import __version__

    tool = importlib.import_module(f"keras_retinanet.bin.{module}")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"retinanet-{module.replace('_', '-')} (keras-retinanet {__version__})\n"
    with pytest.raises(SystemExit):
        tool.main(["--help"])
    help_text = capsys.readouterr().out
    examples = help_text[help_text.index("\nexamples:\n") + 1:].split("\n\n")[0].splitlines()[1:]
    commands = [line for line in examples if line.startswith(f"  retinanet-{module.replace('_', '-')} ")]
    assert len(commands) >= 3 and all(line.startswith("  ") for line in examples)


@pytest.mark.parametrize("module", TOOLS)
def test_help_does_not_import_tensorflow(module):
    """--help (and argument errors) come back without loading TensorFlow: well under a second."""
    script = (
        "import sys\n"
        f"from keras_retinanet.bin import {module} as tool\n"
        "try:\n    tool.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"
