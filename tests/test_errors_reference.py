"""docs/reference/errors.md stays true: every error class is listed, every quoted message excerpt is asserted
in the test it names (and that test exists), and every test named there is a real test."""

from __future__ import annotations

import re

from testkit import ROOT

import sparsecbm.errors as errors

DOC = (ROOT / "docs" / "reference" / "errors.md").read_text()
ROWS = re.findall(r"^\| `(.+?)` \| (\w+) \| (tests/[\w/]+\.py)::(\w+) \|$", DOC, flags=re.M)


def test_every_error_class_is_listed():
    classes = [n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.SparseCBMError)
               and c is not errors.SparseCBMError]
    assert classes and all(f"| `{name}` |" in DOC for name in classes)


def test_every_quoted_message_is_asserted_where_the_doc_says():
    assert len(ROWS) >= 40
    for excerpt, _cls, path, test in ROWS:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {test}\(", source, flags=re.M), f"{path} has no test {test}"
        plain = source.replace("\\", "")  # regex escapes (\( \[) and quote escapes (\') in the test's strings
        assert excerpt.replace("\\", "") in plain, f"{excerpt!r} is not asserted in {path}"
