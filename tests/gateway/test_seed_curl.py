"""The seed's curl commands (004, "Использование через API"), run with the real curl binary.

The commands are copied verbatim from the seed; only the host (`https://api.example.com`) and
the `YOUR_API_TOKEN` placeholder are replaced, as a reader would.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.support.stack import Stack

SEED_COMMANDS = [
    (
        "set all",
        """curl -X PUT "https://api.example.com/api/v2/users/me/ai-credentials" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "credentials": {
      "openai_api_key": "sk-...",
      "anthropic_api_key": "sk-ant-...",
      "custom_api_key": "custom-value"
    }
  }'""",
        {
            "response": {
                "credentials": {
                    "anthropic_api_key": "sk-ant-...",
                    "custom_api_key": "custom-value",
                    "openai_api_key": "sk-...",
                }
            }
        },
    ),
    (
        "get all",
        """curl -X GET "https://api.example.com/api/v2/users/me/ai-credentials" \\
  -H "Authorization: Bearer YOUR_API_TOKEN\"""",
        {
            "response": {
                "credentials": {
                    "anthropic_api_key": "sk-ant-...",
                    "custom_api_key": "custom-value",
                    "openai_api_key": "sk-...",
                }
            }
        },
    ),
    (
        "put one",
        """curl -X PUT "https://api.example.com/api/v2/users/me/ai-credentials/openai_api_key" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "value": "sk-your-openai-api-key"
  }'""",
        {"response": {"key": "openai_api_key", "value": "sk-your-openai-api-key"}},
    ),
    (
        "delete one",
        """curl -X DELETE "https://api.example.com/api/v2/users/me/ai-credentials/openai_api_key" \\
  -H "Authorization: Bearer YOUR_API_TOKEN\"""",
        {"response": {"key": "openai_api_key"}},
    ),
    (
        "delete all",
        """curl -X DELETE "https://api.example.com/api/v2/users/me/ai-credentials" \\
  -H "Authorization: Bearer YOUR_API_TOKEN\"""",
        {"response": {"credentials": {}}},
    ),
    (
        "example 3: add",
        """curl -X PUT "https://api.example.com/api/v2/users/me/ai-credentials/openai_api_key" \\
  -H "Authorization: Bearer YOUR_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"value": "sk-..."}'""",
        {"response": {"key": "openai_api_key", "value": "sk-..."}},
    ),
    (
        "example 3: get all",
        """curl -X GET "https://api.example.com/api/v2/users/me/ai-credentials" \\
  -H "Authorization: Bearer YOUR_API_TOKEN\"""",
        {"response": {"credentials": {"openai_api_key": "sk-..."}}},
    ),
]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_seed_curl_commands_work_as_written(stack: Stack) -> None:
    minted = await stack.mint("seed-reader")
    for title, command, expected in SEED_COMMANDS:
        runnable = command.replace("https://api.example.com", stack.url).replace(
            "YOUR_API_TOKEN", minted.token
        )
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            runnable + " --silent --show-error --write-out '\\n%{http_code}'",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, (title, stderr)
        body, _, status = stdout.decode().rpartition("\n")
        assert status == "200", (title, body)
        assert json.loads(body) == expected, title
