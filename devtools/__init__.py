"""Developer tools: `make run` (devtools.run) and `make demo` (devtools.demo).

Not part of the wheel the containers run (`[tool.hatch.build.targets.wheel]` packages only
`services` and `gen/aicreds`); importable from a checkout through the editable install, whose
`dev-mode-dirs` put the repository root on `sys.path`. Nothing under `services` imports it
(an import-linter contract in pyproject.toml).
"""
