"""The one check every bad-input CLI test makes."""


def one_line_error(result, *words) -> str:
    """A CLI result that failed the documented way: exit code 2, exactly one `gstalker: error:`
    line holding each of `words`, no traceback. Returns that line."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("gstalker: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]
