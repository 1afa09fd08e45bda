"""operad.testing, the public verification kit: the README's example (a user's
family, registered and checked, then a false claim caught) runs as written."""
import re

import pytest

from operad import ops, Field
from operad.operators import FAMILIES
from operad.testing import check_family, check_term


@pytest.fixture
def readme_example():
    import os

    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = text[text.index("## Verify your own operator"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yield code
    for name in ("soft_clip", "soft_clip_wrong"):  # leave the registry as the suite knows it
        FAMILIES.pop(name, None)


def test_readme_example_runs_and_catches_the_false_claim(readme_example, capsys):
    exec(compile(readme_example, "README.md", "exec"), {"__name__": "user_ops"})
    out = capsys.readouterr().out
    assert "caught: soft_clip_wrong(" in out and "declares linear but is not" in out


def test_check_term_and_its_errors():
    assert check_term(ops.conv(4) >> ops.relu(), Field(3), (6, 6)) == ["type", "cost", "lipschitz", "equivariance",
                                                                          "state_dict", "compile", "linear"]
    assert check_term(lambda: (ops.bn(), Field(2), (4, 4)), checks=("state_dict",)) == ["state_dict"]
    with pytest.raises(ValueError, match="unknown checks"):
        check_term(ops.relu(), Field(2), (4, 4), checks=("speed",))
    with pytest.raises(KeyError, match="register_family"):
        check_family("no_such_family")


def test_docstring_example():
    import doctest

    import operad.testing

    res = doctest.testmod(operad.testing)
    assert res.failed == 0 and res.attempted > 0
