"""A provider's base_url may not carry a query: it is shown in clear in every provider response
and a query's secrets hide under any parameter name. The message never repeats the URL."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.provider_rules import base_url_problem, validate_base_url

SECRET = "sk-live-QUERYSECRET-0123456789"


@pytest.mark.parametrize(
    "base_url",
    [
        f"https://api.example.com/v1?key={SECRET}",
        f"https://api.example.com/v1?api_key={SECRET}&x=1",
        f"https://api.example.com/v1?code={SECRET}",
        "https://api.example.com/v1?api-version=2024-02-01",
        "https://api.example.com/v1?",
        f"https://api.example.com?{SECRET}",
    ],
)
def test_a_base_url_with_a_query_is_refused(base_url: str) -> None:
    problem = base_url_problem(base_url)
    assert problem is not None and "query" in problem
    assert SECRET not in problem and "example" not in problem
    with pytest.raises(InvalidArgument):
        validate_base_url(base_url)


@pytest.mark.parametrize(
    "base_url", ["https://api.example.com/v1", "http://127.0.0.1:8080/", "https://h/a;b=c"]
)
def test_a_base_url_without_a_query_is_accepted(base_url: str) -> None:
    assert base_url_problem(base_url) is None
