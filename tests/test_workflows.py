"""The GitHub workflows parse, and say what docs/developers-guide.md promises they do.

GitHub itself is not reachable from here: these checks read the YAML. `actionlint` in CI
(lint.yml) checks expressions, action inputs and the shell in every `run:` step, and
`zizmor` (.ci/run, offline; lint.yml, online) audits them for security findings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extras")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.y*ml"))
EXPECTED = {
    "forecast.yml",
    "lint.yml",
    "packaging.yml",
    "release.yml",
    "store.yml",
    "tests.yml",
    "vendor-pr.yml",
}
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    """The `on:` table (YAML 1.1 reads a bare `on` key as True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on or {}


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def scripts(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(workflow))


def permissions(workflow: dict, job: dict) -> dict:
    """A job's token scopes: its own `permissions:`, else the workflow's."""
    granted = job.get("permissions", workflow.get("permissions", {}))
    assert isinstance(granted, dict), f"name the scopes, not {granted!r}"
    return granted


def test_the_expected_workflows_exist():
    assert {path.name for path in FILES} >= EXPECTED


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_workflow_parses_and_is_well_formed(path):
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(workflow, dict) and workflow.get("name"), path.name
    assert triggers(workflow), f"{path.name}: no triggers"
    top = workflow.get("permissions")
    assert isinstance(top, dict), f"{path.name}: set least-privilege permissions"
    assert set(top.values()) <= {"read", "none"}, f"{path.name}: write scopes go on jobs"
    assert workflow["jobs"], f"{path.name}: no jobs"
    for name, job in workflow["jobs"].items():
        assert ("runs-on" in job) != ("uses" in job), f"{path.name}: job {name}"
        if "runs-on" in job:
            assert job.get("timeout-minutes"), f"{path.name}: job {name} needs a timeout"
        for step in job.get("steps", []):
            assert ("uses" in step) != ("run" in step), f"{path.name}: {name}: {step}"
            if "uses" in step and not step["uses"].startswith("./"):
                assert re.search(r"@[0-9a-f]{40}$", step["uses"]), step


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path):
    """`uses: owner/repo@<40 hex> # vX.Y.Z`: a tag can be moved, a commit cannot."""
    lines = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]
    assert lines or path.name == "store.yml", path.name
    for line in lines:
        if line.split("uses:", 1)[1].strip().startswith("./"):
            continue  # this repository's own reusable workflow, at this run's commit
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line), (
            f"{path.name}: pin by commit SHA with a version comment: {line}"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_job_that_runs_project_code_can_write(path):
    """Tests, builds and installs run with a read-only token; write scopes sit on jobs
    that check nothing out, and no checkout leaves its token in .git/config."""
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, job in workflow["jobs"].items():
        granted = permissions(workflow, job)
        text = scripts({"jobs": {name: job}})
        checkouts = [s for s in job.get("steps", []) if "actions/checkout@" in s.get("uses", "")]
        for step in checkouts:
            assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {name}"
        if re.search(r"pytest|pip install|doit |python -m build", text):
            assert granted.get("contents") != "write", f"{path.name}: {name} runs code"
            assert "write" not in granted.values(), f"{path.name}: {name} runs code"
        if granted.get("contents") == "write":
            assert not checkouts, f"{path.name}: {name} can write: it checks nothing out"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_run_steps_take_untrusted_values_through_the_environment(path):
    """`${{ inputs.* }}` or `${{ github.event.* }}` inside a script is a shell injection."""
    for step in steps(yaml.safe_load(path.read_text(encoding="utf-8"))):
        found = re.findall(
            r"\$\{\{\s*(inputs\.|github\.event\.|github\.head_ref)", step.get("run", "")
        )
        assert not found, f"{path.name}: pass these through env: {step['run'][:80]!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED - {"release.yml"}))
def test_superseded_runs_of_a_pull_request_are_cancelled(name):
    concurrency = load(name).get("concurrency")
    assert concurrency, f"{name}: no concurrency"
    assert concurrency["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in concurrency["group"]


def test_only_the_release_and_the_forecast_can_be_started_by_hand():
    for path in FILES:
        on = triggers(yaml.safe_load(path.read_text(encoding="utf-8")))
        if path.name == "release.yml":
            assert set(on) == {"workflow_dispatch"}
        elif path.name == "forecast.yml":  # writes nothing: a forecast on demand is harmless
            assert set(on) == {"schedule", "workflow_dispatch"}
        else:
            assert "workflow_dispatch" not in on, path.name


def test_tests_run_every_python_on_linux_and_macos():
    workflow = load("tests.yml")
    assert set(triggers(workflow)) >= {"push", "pull_request"}
    matrix = workflow["jobs"]["test"]["strategy"]["matrix"]
    assert matrix["python-version"] == PYTHONS  # strings: an unquoted 3.10 would be 3.1
    assert set(matrix["os"]) >= {"ubuntu-latest", "macos-latest"}
    assert "pytest" in scripts(workflow)
    assert "-m slow" in scripts(workflow)


def test_lint_runs_ruff_shellcheck_and_actionlint():
    text = scripts(load("lint.yml"))
    for command in ("ruff check .", "ruff format --check .", ".ci/lint-shell", "actionlint"):
        assert command in text
    assert re.search(r"^zizmor .*\.github", text, re.M)


def test_ci_run_audits_the_workflows_with_zizmor_offline():
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^zizmor --offline .*\.github\b", text, re.M)


def test_dependabot_bumps_the_actions_and_pip_weekly():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text(encoding="utf-8"))
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) >= {"github-actions", "pip"}
    for update in updates.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"


def test_packaging_installs_sdist_and_wheel_into_clean_venvs():
    workflow = load("packaging.yml")
    assert "python -m build" in scripts(workflow)
    install = workflow["jobs"]["install"]
    assert install["needs"] == "build"
    assert install["strategy"]["matrix"]["dist"] == ["sdist", "wheel"]
    text = scripts({"jobs": {"install": install}})
    assert "python -m venv" in text
    assert 'flagtasks" --version' in text or "flagtasks --version" in text
    assert ".ci/sample-check" in text


def test_vendor_pr_fans_devices_out_from_flagtasks_matrix():
    workflow = load("vendor-pr.yml")
    assert set(triggers(workflow)) == {"workflow_call"}
    plan, device = workflow["jobs"]["plan"], workflow["jobs"]["device"]
    assert "flagtasks matrix" in scripts({"jobs": {"plan": plan}})
    assert device["needs"] == "plan"
    assert device["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    text = scripts({"jobs": {"device": device}})
    assert "doit verify:" in text and "doit unpatch:" in text
    cache = next(s for s in device["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert ".flagtasks/doit-state.sqlite3" in cache["with"]["path"]
    assert "${{ inputs.build }}/${{ matrix.device }}" in cache["with"]["path"]
    key = cache["with"]["key"]
    for part in ("runner.os", "matrix.device", "needs.plan.outputs.tool", "hashFiles("):
        assert part in key
    assert "hetero.txt" in key and "config.toml" in key
    assert all(
        key.startswith(line.rstrip("-")) for line in cache["with"]["restore-keys"].splitlines()
    )


def test_vendor_pr_runs_the_base_branchs_dodo_py_not_the_pull_requests():
    """A pull request is untrusted: the dodo.py doit imports comes from the base ref."""
    workflow = load("vendor-pr.yml")
    for name in ("plan", "device"):
        job_steps = workflow["jobs"][name]["steps"]
        take = [
            i
            for i, step in enumerate(job_steps)
            if step.get("env", {}).get("BASE_REF") == "${{ github.base_ref }}"
            and re.search(
                r"git show \S*\$\{?BASE_REF\}?:(dodo\.py|\$\{?file\}?)", step.get("run", "")
            )
            and "dodo.py" in step.get("run", "")
        ]
        assert take, f"{name}: no step takes dodo.py from the base ref"
        runs_doit = [
            i
            for i, step in enumerate(job_steps)
            if "doit " in step.get("run", "") or "actions/cache@" in step.get("uses", "")
        ]
        assert runs_doit and take[0] < min(runs_doit), f"{name}: dodo.py replaced too late"


def _encrypted_step_script() -> str:
    device = load("vendor-pr.yml")["jobs"]["device"]
    step = next(s for s in device["steps"] if s.get("id") == "kind")
    assert "flagtasks status --json" in step["run"]
    found = re.search(r"<<'PY'[^\n]*\n(.*?)\nPY\n", step["run"], re.S)
    assert found, "the step's Python is a <<'PY' here-document"
    return found.group(1)


def _row(device: str, **values) -> dict:
    row = {
        "device": device,
        "base8": "aaaa1111",
        "base": "a" * 40,
        "generated": True,
        "encrypted": False,
        "legacy_encryption": False,
        "recipients": [],
        "mode": None,
        "verified": True,
        "selected": True,
        "build": "built",
        "path": "/abs/build",
        "hetero": [],
        "submodules": [],
    }
    row.update(values)
    return row


@pytest.mark.parametrize(
    "rows, code, expect",
    [
        ([_row("A_X100", encrypted=True)], 0, "encrypted=true"),
        ([_row("A_X100")], 0, "encrypted=false"),
        (  # the unselected base is encrypted, the selected one is not
            [_row("A_X100", encrypted=True, selected=False), _row("A_X100", base8="bbbb2222")],
            0,
            "encrypted=false",
        ),
        ([_row("B_Y100", encrypted=True), _row("A_X100")], 1, "encrypted=false"),
        ([_row("B_Y100", encrypted=True)], 0, "encrypted=false"),
        ([_row("B_Y100")], 1, None),  # status failed and lists nothing for A_X100
    ],
)
def test_vendor_pr_reads_the_typed_status_json(tmp_path, rows, code, expect):
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps({"schema": 1, "root": "/r", "hardware": "hardware", "adaptations": rows})
    )
    done = subprocess.run(
        [sys.executable, "-", str(status), str(code)],
        input=_encrypted_step_script(),
        capture_output=True,
        text=True,
        env={**os.environ, "DEVICE": "A_X100"},
        check=False,
    )
    if expect is None:
        assert done.returncode != 0 and "A_X100" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expect


def test_vendor_pr_refuses_an_unknown_status_schema(tmp_path):
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"schema": 2, "adaptations": []}))
    done = subprocess.run(
        [sys.executable, "-", str(status), "0"],
        input=_encrypted_step_script(),
        capture_output=True,
        text=True,
        env={**os.environ, "DEVICE": "A_X100"},
        check=False,
    )
    assert done.returncode != 0 and "schema" in done.stderr


def test_the_store_workflow_calls_the_reusable_one():
    job = load("store.yml")["jobs"]["sample"]
    assert job["uses"] == "./.github/workflows/vendor-pr.yml"
    assert job["with"]["flagtasks"] == "."


def test_release_publishes_to_test_pypi_or_pypi_by_hand_only():
    workflow = load("release.yml")
    inputs = triggers(workflow)["workflow_dispatch"]["inputs"]
    assert inputs["DEPLOY_TO_TEST_PYPI"]["type"] == "boolean"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    jobs = workflow["jobs"]
    assert "--next-release" in scripts({"jobs": {"build": jobs["build"]}})
    assert "FLAGTASKS_VERSION" in str(jobs["build"])
    test_pypi = jobs["publish-test"]
    real = jobs["publish"]
    assert test_pypi["if"] == "inputs.DEPLOY_TO_TEST_PYPI"
    assert "!inputs.DEPLOY_TO_TEST_PYPI" in real["if"]
    upload = [s for s in test_pypi["steps"] if "gh-action-pypi-publish" in s.get("uses", "")]
    assert upload[0]["with"]["repository-url"] == "https://test.pypi.org/legacy/"
    upload = [s for s in real["steps"] if "gh-action-pypi-publish" in s.get("uses", "")]
    assert "repository-url" not in upload[0].get("with", {})
    for job in (test_pypi, real):
        assert job["permissions"] == {"id-token": "write"}
    assert workflow["permissions"] == {}


def test_release_tags_in_its_own_job_after_the_tests():
    """The tests never run with a write token: tagging is a separate job that needs them."""
    jobs = load("release.yml")["jobs"]
    assert "pytest" in scripts({"jobs": {"build": jobs["build"]}})
    assert jobs["build"]["permissions"] == {"contents": "read"}
    tag = jobs["tag"]
    assert tag["needs"] == "build"
    assert tag["permissions"] == {"contents": "write"}
    assert "!inputs.DEPLOY_TO_TEST_PYPI" in tag["if"]
    assert not [s for s in tag["steps"] if "uses" in s], "the tag job runs no action"
    text = scripts({"jobs": {"tag": tag}})
    assert "pytest" not in text and "pip" not in text
    assert "refs/tags/v$VERSION" in text
    for name, job in jobs.items():
        if name != "tag":
            assert "write" not in {v for k, v in job["permissions"].items() if k != "id-token"}
    assert set(jobs["publish"]["needs"]) == {"build", "tag"}


def _forecast_step() -> dict:
    job = load("forecast.yml")["jobs"]["forecast"]
    return next(s for s in job["steps"] if "flagtasks rebase --check" in s.get("run", ""))


def _forecast_summary(tmp_path, document, code: int) -> tuple[int, str, str]:
    """The forecast step's summary script run on `document` (a dict, or raw text)."""
    found = re.search(r"<<'PY'[^\n]*\n(.*?)\nPY\n", _forecast_step()["run"], re.S)
    assert found, "the summary's Python is a <<'PY' here-document"
    path = tmp_path / "forecast.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    done = subprocess.run(
        [sys.executable, "-", str(path), str(code)],
        input=found.group(1),
        capture_output=True,
        text=True,
        env={**os.environ, "ONTO": "origin/main"},
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_forecast_runs_weekly_and_by_hand_onto_upstream_main_with_a_read_only_token():
    workflow = load("forecast.yml")
    on = triggers(workflow)
    assert [entry["cron"].split()[4] for entry in on["schedule"]] == ["1"]  # weekly
    onto = on["workflow_dispatch"]["inputs"]["onto"]
    assert onto["required"] is False and onto["default"] == ""
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["forecast"]
    assert job["permissions"] == {"contents": "read"}
    checkout = next(s for s in job["steps"] if "actions/checkout@" in s.get("uses", ""))
    assert checkout["with"] == {"persist-credentials": False, "fetch-depth": 0}
    assert "python -m pip install ." in scripts({"jobs": {"forecast": job}})
    step = _forecast_step()
    assert step["env"] == {"ONTO": "${{ inputs.onto }}"}
    script = step["run"]
    assert 'flagtasks rebase --check --onto "$ONTO" --json > forecast.json || code=$?' in script
    assert "ONTO=origin/main" in script and "ONTO=main" in script
    assert '>> "$GITHUB_STEP_SUMMARY"' in script
    assert "secrets." not in (WORKFLOWS / "forecast.yml").read_text(encoding="utf-8")


def test_forecast_summary_tables_every_device_and_fails_on_a_conflict(tmp_path):
    document = {
        "schema": 1,
        "onto": "c" * 40,
        "devices": [
            {"device": "A_X100", "base": "a" * 40, "result": "clean", "commits": [], "files": []},
            {
                "device": "B_Y100",
                "base": "a" * 40,
                "result": "conflict",
                "commits": [{"number": 2, "subject": "fix | the <b>kernel</b>"}],
                "files": ["flagscale/a.py", "setup.py"],
            },
            {
                "device": "C_Z200",
                "base": "b" * 40,
                "result": "no-key",
                "commits": [],
                "files": [],
                "note": "encrypted; give its key in [keys]",
            },
            {
                "device": "D_W300",
                "base": "b" * 40,
                "result": "three-way",
                "commits": [{"number": 1, "subject": "moved"}],
                "files": [],
            },
        ],
        "combos": [{"base8": "aaaaaaaa", "devices": ["A_X100", "B_Y100"], "moves": False}],
    }
    code, summary, log = _forecast_summary(tmp_path, document, 1)
    assert code == 1
    assert "## Forecast onto `cccccccc` (origin/main)" in summary
    assert "| device | base | result | commits | files |" in summary
    rows = {line.split(" | ")[0][2:]: line for line in summary.splitlines() if "| `" in line}
    assert "clean" in rows["A\\_X100"]
    conflict = rows["B\\_Y100"]
    assert "**conflict**" in conflict and "2 fix \\| the \\<b\\>kernel" in conflict
    assert "flagscale/a.py<br>setup.py" in conflict
    assert "| no-key |" in rows["C\\_Z200"] and "CI holds no key" in summary
    assert "1 moved" in rows["D\\_W300"]
    assert "| A\\_X100 B\\_Y100 | `aaaaaaaa` | **no** |" in summary
    assert "::error::B_Y100 conflicts" in log
    document["devices"] = [document["devices"][0], document["devices"][3]]
    document["combos"] = []
    code, summary, log = _forecast_summary(tmp_path, document, 0)
    assert code == 0 and "1 clean, 1 three-way" in summary and "::error::" not in log


@pytest.mark.parametrize(
    "document, code",
    [("", 2), ("not json", 1), ('{"schema": 2, "devices": []}', 0), ("{}", 3)],
)
def test_forecast_summary_fails_when_the_forecast_did_not_run(tmp_path, document, code):
    status, summary, log = _forecast_summary(tmp_path, document, code)
    assert status != 0
    assert "did not run" in summary and "::error::" in log
