"""`UpstreamTarget`: the fast parse of plain URLs and the httpx.URL fallback."""

from __future__ import annotations

import httpx
import pytest

from services.router.transport import UpstreamTarget


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/chat/completions",
        "https://API.OpenAI.com/v1/chat/completions?api-version=2024-01&x=a%2Fb",
        "https://api.example.com:443/",
        "http://api.example.com:80",
        "https://api.example.com:8443/v1/models/a:b@c;d=e,f+g~h!$'()*",
        "https://api.example.com/a%zz/b?q=1?2/3",
        "https://api.example.com/ü?ö=1",
        'https://api.example.com/a"b<c>{d}|e^`',
        "http://[::1]:8080/v1",
        "http://127.1/v1",
        "http://0x7f.0.0.1/",
        "https://bücher.example/v1",
        "http://api.example.com:0080/",
    ],
)
def test_requests_go_where_httpx_url_would_send_them(url: str) -> None:
    """The fast parse of plain URLs and the httpx.URL fallback agree with httpx.URL."""
    expected = httpx.URL(url)
    target = UpstreamTarget(url)
    assert target.origin.scheme == expected.raw_scheme
    assert target.origin.host == expected.raw_host
    assert target.origin.port == (expected.port or (443 if expected.scheme == "https" else 80))
    assert target.netloc == expected.netloc
    assert target.target == expected.raw_path
    # What the call's log line shows, as httpx.URL showed it.
    port = f":{expected.port}" if expected.port else ""
    assert target.origin_text == f"{expected.scheme}://{expected.host}{port}"
    assert target.path == expected.path
