"""The run report: `distill-engine report RUN_DIR`, also written at the end of every run.

It writes RUN_DIR/report/ (atomically: a new report replaces the old one whole, and nothing else in
the run directory is touched): README.md, the teacher and the student side by side, each phase's
steps, wall time and dev metrics, the backend and versions and the resolved recipe; and PNG
pictures of the losses, the learning rate and the dev metrics. One job per module: `rundata`
reads the run, `models` sizes and times the teacher and student, `plots` draws, `markdown` writes.
Only the inference speed needs the run's backend and dev file; everything else reads the run
directory alone.
"""

from __future__ import annotations

from pathlib import Path

from distill_engine.io import write_directory_atomically
from distill_engine.rundir import RunDirError

REPORT_DIR = "report"
REPORT_FILE = "README.md"
NO_MATPLOTLIB = ('matplotlib is not installed: the run report has no pictures (pip install '
                 '"distill-engine[report]" or matplotlib)')


def write_report(run_dir: Path, *, speed: bool = True, backend=None, device=None) -> tuple[Path, list[str]]:
    """Write RUN_DIR/report/; returns the Markdown file's path and the warnings to show (pictures
    that could not be drawn). `speed`: time the teacher and the student with `backend` (an object;
    None: the run's, by name) on `device` (None: the recipe's run.device). A directory that holds
    no run is a RunDirError."""
    from distill_engine.report import markdown, models, plots
    from distill_engine.report.rundata import read_run

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    facts = {ref.role: models.describe(ref) for ref in (run.teacher, run.student) if ref is not None}
    if speed:
        speeds, speed_note = models.measure_speeds(run, list(facts.values()), backend, device)
    else:
        speeds, speed_note = {}, "not measured (--no-speed)"
    warnings: list[str] = []

    def fill(tmp: Path) -> None:
        picture_note = ""
        try:
            pictures = plots.draw(run, tmp)
        except ImportError:
            pictures, picture_note = [], NO_MATPLOTLIB + "."
            warnings.append(NO_MATPLOTLIB)
        except Exception as exc:  # noqa: BLE001 (a picture that fails to draw must not cost the report)
            for leftover in tmp.glob("*.png"):
                leftover.unlink()
            pictures, picture_note = [], f"The pictures could not be drawn ({type(exc).__name__}: {exc})."
            warnings.append(f"the run report's pictures could not be drawn ({type(exc).__name__}: {exc})")
        text = markdown.render(run, facts, speeds, speed_note, pictures, picture_note)
        (tmp / REPORT_FILE).write_text(text, encoding="utf-8")

    try:
        path = write_directory_atomically(run_dir / REPORT_DIR, fill)
    except OSError as exc:
        raise RunDirError(f"{run_dir / REPORT_DIR}: cannot write the report ({exc.strerror or exc})") from None
    return path / REPORT_FILE, warnings
