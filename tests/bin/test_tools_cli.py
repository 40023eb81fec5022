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


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    """The CUDA "error" of every CPU-only start and absl's chatter: hidden; -v shows them; real errors still show."""
    from tests.detector_model import training_model

    snapshot = tmp_path / "snapshot.keras"
    training_model().save(str(snapshot))
    tool = [sys.executable, "-m", "keras_retinanet.bin.convert_model"]

    def run(*extra):
        return subprocess.run([*tool, str(snapshot), *extra], capture_output=True, text=True, timeout=300)

    quiet = run(str(tmp_path / "a.keras"))
    assert quiet.returncode == 0, quiet.stderr
    assert "I0000" not in quiet.stderr and "cuInit" not in quiet.stderr and "absl" not in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == [
        line for line in quiet.stderr.splitlines() if line.startswith("retinanet-convert-model: ")
    ]
    verbose = run(str(tmp_path / "b.keras"), "-v")
    assert verbose.returncode == 0 and "I0000" in verbose.stderr
    failed = run(str(tmp_path / "c.keras"), "--backbone", "resnet50")
    assert failed.returncode == 1 and "retinanet-convert-model: error: --backbone resnet50 contradicts" in failed.stderr
