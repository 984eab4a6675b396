"""gateway/report_page.py: the gateway serves the newest report at /report/, behind the API key,
with the files it links to and nothing else. In-process, against a FAKE upstream (no engines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, GatewaySpec, ModelSpec
from gateway.report_page import latest_report


def _fake_upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)  # /health of the one fake engine


def _client(report_dir: Path, *, key: str | None = None) -> TestClient:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(report_dir=str(report_dir), api_keys_env="REPORT_PAGE_TEST_KEYS"),
        models=[ModelSpec(name="m", endpoints=["http://m.fake:1"])],
    )
    return TestClient(create_app(config, transport=httpx.MockTransport(_fake_upstream)), follow_redirects=False)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    for name, marker in (("20261129T100000Z", "old"), ("20261130T100000Z", "new")):
        directory = tmp_path / name
        (directory / "sources").mkdir(parents=True)
        (directory / "report.html").write_text(f"<html><body>{marker} report</body></html>")
        (directory / "report.json").write_text('{"decision": {"action": "keep"}}')
        (directory / "sources" / "results.json").write_text("{}")
        (directory / "notes.txt").write_text("not a report file")
    (tmp_path / "20261201T100000Z").mkdir()  # newer but unfinished: no report.html
    (tmp_path / "secret.json").write_text("{}")  # beside the reports, not in one
    return tmp_path


@pytest.fixture
def client(reports: Path) -> Iterator[TestClient]:
    with _client(reports) as test_client:
        yield test_client


def test_serves_the_newest_finished_report_and_its_files(client: TestClient, reports: Path) -> None:
    assert latest_report(reports) == reports / "20261130T100000Z"
    redirect = client.get("/report")
    assert redirect.status_code == 307 and redirect.headers["location"] == "/report/"
    page = client.get("/report/")
    assert page.status_code == 200 and "new report" in page.text
    assert page.headers["content-type"].startswith("text/html") and page.headers["cache-control"] == "no-store"
    assert client.get("/report/report.json").json() == {"decision": {"action": "keep"}}
    assert client.get("/report/sources/results.json").status_code == 200


@pytest.mark.parametrize("path", ["/report/notes.txt", "/report/../secret.json", "/report/%2e%2e/secret.json",
                                  "/report/sources/../../secret.json", "/report/missing.png"])  # fmt: skip
def test_nothing_outside_the_report_or_of_another_kind(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, path
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_no_report_yet_is_a_404_naming_the_command(tmp_path: Path) -> None:
    with _client(tmp_path / "nothing-here") as test_client:
        response = test_client.get("/report/")
    assert response.status_code == 404
    assert "make report" in response.json()["error"]["message"]


def test_report_needs_the_api_key_when_keys_are_set(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORT_PAGE_TEST_KEYS", "k1")
    with _client(reports) as test_client:
        assert test_client.get("/report/").status_code == 401
        assert test_client.get("/report/report.json").status_code == 401
        assert test_client.get("/report/", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_the_comparison_page_links_to_the_report() -> None:
    page = (Path(__file__).resolve().parent.parent / "gateway" / "static" / "index.html").read_text()
    assert 'id="report-link"' in page and 'href="/report/"' in page
