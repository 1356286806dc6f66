"""The README's Quick start and CI must not drift apart."""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT


def quick_start_commands() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    install_and_run, test = quick_start_commands()
    assert install_and_run.endswith("convrec quickstart")
    assert "torch==2.13.0" in install_and_run
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    # the test command's install arguments and test runner, exactly as CI runs them
    install = re.search(r"pip install (.*?) &&", test).group(1)
    runner = test.rsplit("&&", 1)[1].strip()
    assert f"pip install -q {install}\n" in ci
    assert f"\n{runner}\n" in ci
