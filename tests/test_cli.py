"""Shared entry-script pieces (model/cli.py): error exit, quiet TensorFlow, fix hints."""

import importlib
import os
import subprocess
import sys

import pytest

from model import cli
from model.errors import UserError, command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_cli_turns_user_error_into_exit_2(capsys):
    def main(argv):
        raise UserError("bad thing; fix it")
    assert cli.run_cli(main) == 2
    assert capsys.readouterr().err == "error: bad thing; fix it\n"


def test_a_name_with_a_newline_cannot_break_or_forge_the_error_line(capsys):
    def main(argv):
        raise UserError("no params file at /tmp/a\nerror: forged\x1b[2J; write {} there")
    assert cli.run_cli(main) == 2
    assert capsys.readouterr().err == ("error: no params file at /tmp/a\\nerror: forged"
                                       "\\x1b[2J; write {} there\n")


@pytest.mark.parametrize("command,args,expected", [
    ("train", [], "the following arguments are required: --model_dir"),
    ("train", ["--model_dir", "x", "--bogus"], "unrecognized arguments: --bogus"),
    ("evaluate", ["--model_dir", "x", "--checkpoint", "newest"],
     "argument --checkpoint: invalid choice: 'newest'"),
    ("retrieve", ["--model_dir", "x", "--gallery", "g", "--k", "abc", "q.png"],
     "argument --k: 'abc' is not an integer"),
    ("embed", ["--model_dir", "x"], "the following arguments are required: images"),
])
def test_usage_errors_are_one_line_and_exit_2(command, args, expected, capsys):
    module = importlib.import_module(f"model.commands.{command}")
    assert module.run(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {expected}")
    assert captured.err.endswith("--help lists the arguments)\n")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "visualize_embeddings.py",
                                    "embed.py", "search_hyperparams.py"])
@pytest.mark.e2e
def test_one_line_errors_come_without_tensorflow_start_up_noise(tmp_path, script):
    (tmp_path / "params.json").write_text('{"margin": -1}')
    args = {"embed.py": ["x.png"], "search_hyperparams.py": ["--grid", "margin=0.1"]}.get(
        script, [])
    flag = "--parent_dir" if script == "search_hyperparams.py" else "--model_dir"
    result = subprocess.run([sys.executable, script, flag, str(tmp_path), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items()
                                 if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == 2
    assert result.stderr == (f"error: {tmp_path / 'params.json'}: 'margin' is -1.0; it must "
                             "be >= 0.0\n")


@pytest.mark.e2e
def test_import_tensorflow_keeps_other_lines(tmp_path):
    # The filter drops only the start-up noise: any other line written while TensorFlow
    # loads (here by a module imported in its place) still reaches stderr.
    fake = tmp_path / "tensorflow.py"
    fake.write_text("import os\n"
                    "os.write(2, b'WARNING: All log messages before absl::InitializeLog() "
                    "is called are written to STDERR\\n')\n"
                    "os.write(2, b'I0000 00:00:1795404195.206800    4324 port.cc:153] "
                    "oneDNN custom operations are on.\\n')\n"
                    "os.write(2, b'W0000 00:00:1.2  7 gpu.cc:1] no CUDA driver found\\n')\n")
    code = "from model import cli; cli.import_tensorflow()"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "W0000 00:00:1.2  7 gpu.cc:1] no CUDA driver found\n"


@pytest.mark.e2e
def test_missing_tensorflow_is_one_line_and_exit_2(tmp_path):
    fake = tmp_path / "tensorflow.py"  # imported in TensorFlow's place: as if it were absent
    fake.write_text("raise ModuleNotFoundError(\"No module named 'tensorflow'\", "
                    "name='tensorflow')\n")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "evaluate.py"), "--model_dir", "experiments/base_model"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: TensorFlow (>= 2.16) is not installed: pip install")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["train", "evaluate", "embed"])
def test_a_params_error_answers_before_tensorflow_loads(name, tmp_path):
    (tmp_path / "params.json").write_text('{"margni": 0.2}')
    code = (f"import sys\nfrom model.commands import {name}\n"
            f"status = {name}.run(['--model_dir', {str(tmp_path)!r}, 'x.png'][:3 if "
            f"{name!r} == 'embed' else 2])\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
            "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "unknown key 'margni'" in result.stderr and result.stderr.count("\n") == 1


def test_commands_import_neither_numpy_nor_tensorflow():
    """run_cli limits OpenBLAS's threads through the environment, which OpenBLAS reads
    once, when NumPy loads: the commands must not load it before."""
    names = ["train", "evaluate", "visualize_embeddings", "embed", "retrieve",
             "search_hyperparams", "synthesize_results"]
    code = ("import sys\n" + "".join(f"from model.commands import {name}\n" for name in names)
            + "print(sorted({'numpy', 'tensorflow'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_fixes_name_the_command_as_the_user_runs_it():
    assert command("train") == "python train.py"  # in a clone; tftriplet-train installed
    assert command("visualize_embeddings") == "python visualize_embeddings.py"
