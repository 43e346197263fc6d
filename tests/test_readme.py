import re

from conftest import ROOT


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_two_commands_and_ci_runs_the_test_command():
    demo, tests = quick_start_commands()
    assert "\n" not in demo and "\n" not in tests
    ci = [ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert ci == [tests]
    for config in re.findall(r"--config (\S+)", demo):
        assert (ROOT / config).is_file()


def test_the_fault_tolerance_table_names_tests_that_exist():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fault tolerance: what is tested", 1)[1].split("\n## ", 1)[0]
    tests = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    named = re.findall(r"::(test_\w+)", section)
    assert len(named) >= 16
    for name in named:
        assert f"def {name}(" in tests, name
