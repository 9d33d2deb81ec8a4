"""Progress in a log file: `gstalker fit ... 2> fit.log` (nohup, CI) gets plain lines a person
can read while the work runs, not one bar squeezed to 80 columns when a stage ends."""

from gstalker.progress import Progress

FIGURES = dict(loss=0.04779, psnr=30.04, gaussians=8018)


def _stage_lines(capsys, log_every, steps=5):
    with Progress(True, log_every=log_every) as bars:
        stage = bars.task("deformation", steps)
        for _ in range(steps):
            stage.advance(1, **FIGURES)
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_stage_in_a_log_file_ends_with_one_whole_line(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)  # rich would take stderr for a terminal
    lines = _stage_lines(capsys, log_every=3600)
    assert len(lines) == 1, lines  # no line before `log_every` has passed, one at the end
    line = lines[0]
    assert line.startswith("deformation: 5/5 ") and "it/s" in line and "elapsed 0:00:0" in line and "eta" in line, line
    assert line.endswith("loss 0.04779  psnr 30.04  gaussians 8018"), line  # the live figures whole
    assert "…" not in line


def test_a_long_stage_in_a_log_file_reports_as_it_goes(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    lines = _stage_lines(capsys, log_every=0)
    assert [line.split()[1] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"], lines
    assert all("gaussians 8018" in line for line in lines)


def test_a_stage_left_unfinished_still_gets_its_last_line(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    with Progress(True, log_every=3600) as bars:
        bars.task("rendering", 10, unit="frames").advance(4)
    assert capsys.readouterr().err.split()[:2] == ["rendering:", "4/10"]


def test_a_stage_that_overruns_its_estimate_ends_with_one_line(capsys, monkeypatch):
    # preprocessing's totals are estimates from the declared duration: a scan that sees one frame
    # more than its estimate printed its end line twice
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    with Progress(True, log_every=3600) as bars:
        scan = bars.task("find face", 3, unit="frames")
        for _ in range(4):
            scan.advance()
        scan.done()
        decode = bars.task("decode, crop", 3, unit="frames")
        for _ in range(4):
            decode.advance()
        decode.done(4)
    counts = [line.split(": ")[0] + " " + line.split(": ")[1].split()[0]
              for line in capsys.readouterr().err.splitlines() if line.strip()]
    # the scan's end line once; the decode's real count after its estimate's
    assert counts == ["find face 3/3", "decode, crop 3/3", "decode, crop 4/4"], counts
