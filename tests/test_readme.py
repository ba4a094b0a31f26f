"""The README's Python examples run as written, and its commands are the ones CI uses."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "numpy [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]] [3.0, 4.0, 5.0]" in out
    assert "tensorflow [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]] [3.0, 4.0, 5.0]" in out
    assert "[[0.0, 0.0, 0.0], [0.0, 14.0, 28.0]] [42.0, 56.0, 70.0]" in out


def test_quick_start_commands_match_ci():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith('pip install -e ".[all]" && pgrl compare configs/cartpole.toml')
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly the README's test command
