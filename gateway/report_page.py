"""The gateway's `/report/`: the newest report `make report` wrote, and the files it links to.

    app.include_router(report_router(Path("results/report")))

    GET /report           -> 307 to /report/ (so the page's relative links resolve under it)
    GET /report/          the newest <report_dir>/<UTC time>/report.html
    GET /report/{file}    a file of that report: its PNGs, report.json, report.md, sources/...

The newest report is the last directory name in sort order (names are UTC times) that holds a
report.html. Nothing outside that directory is served, only the kinds of file a report writes,
and every route sits behind the API key like the rest of the gateway. No report yet: 404 in
the OpenAI error format, naming the command that makes one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from gateway.errors import NotFound

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVED_SUFFIXES = frozenset({".html", ".md", ".json", ".png", ".yaml", ".yml"})
NO_STORE = {"Cache-Control": "no-store"}  # a new `make report` must show at once


def resolve_report_dir(configured: str, root: Path = PROJECT_ROOT) -> Path:
    """`gateway.report_dir` is relative to the project root unless absolute."""
    path = Path(configured).expanduser()
    return path if path.is_absolute() else root / path


def latest_report(report_dir: Path) -> Path | None:
    """The newest report directory under `report_dir`, or None."""
    if not report_dir.is_dir():
        return None
    candidates = sorted(p for p in report_dir.iterdir() if (p / "report.html").is_file())
    return candidates[-1] if candidates else None


def report_router(report_dir: Path) -> APIRouter:
    router = APIRouter()

    def newest() -> Path:
        found = latest_report(report_dir)
        if found is None:
            raise NotFound(f"No report in {report_dir} yet: run `make report`.")
        return found

    @router.get("/report", include_in_schema=False)
    async def report_redirect() -> RedirectResponse:
        return RedirectResponse("/report/", status_code=307)

    @router.get("/report/")
    async def report_page() -> FileResponse:
        return FileResponse(newest() / "report.html", media_type="text/html", headers=NO_STORE)

    @router.get("/report/{name:path}")
    async def report_file(name: str) -> FileResponse:
        directory = newest().resolve()
        path = (directory / name).resolve()
        if not path.is_relative_to(directory) or path.suffix not in SERVED_SUFFIXES or not path.is_file():
            raise NotFound(f"No file {name!r} in the latest report.")
        return FileResponse(path, headers=NO_STORE)

    return router
