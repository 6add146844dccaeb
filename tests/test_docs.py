"""The documentation: every setting the code reads is documented with its default, every relative link
resolves, the README stays a front page, and its Alertmanager receiver is the one of docs/alertmanager.md."""

import ast
import operator
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest
import yaml

from adapter import config as config_module
from adapter.config import Config, parse_duration

from .e2e.harness import binary

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
README_MAX_LINES = 250
# Where the process's environment is read: the package, and the two files gunicorn loads from the checkout.
SOURCES = (*sorted((ROOT / "adapter").glob("*.py")), ROOT / "wsgi.py", ROOT / "gunicorn.conf.py")
# What requests reads from the environment itself, not through our code: the proxies (urllib's getproxies, for
# the Alert24 and heartbeat sessions and for the reconciler's plain Session) and the CA bundle.
REQUESTS_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*")
NO_DEFAULT = object()  # the code gives none: only the variable's presence is checked
NOT_LITERAL = object()  # the code computes it: only the variable's presence is checked
_OPERATORS = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


# --- what the code reads ------------------------------------------------------------------------------------


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or `self.environ` (the mapping config._Env reads); never a WSGI request's environ."""
    return ast.unparse(node) in ("os.environ", "self.environ")


def _environ_get(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)) or (
        ast.unparse(func) == "os.getenv"
    )


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def _readers(trees: list[ast.AST]) -> dict[str, set[str]]:
    """The functions that read the environment variable named by their first argument (after self), with the
    suffixes they add to it (`_FILE` for a secret): found in the source, as a fixpoint over helpers that call
    other helpers (config._Env.choice calls text, which reads os.environ)."""
    functions = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    readers: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for fn in functions:
            params = [a.arg for a in fn.args.args if a.arg != "self"]
            if not params:
                continue
            param, suffixes = params[0], set()
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call) and n.args):
                if not (_environ_get(call) or _callee(call) in readers):
                    continue
                first = call.args[0]
                if isinstance(first, ast.Name) and first.id == param:
                    suffixes |= readers.get(_callee(call), {""}) if not _environ_get(call) else {""}
                elif isinstance(first, ast.JoinedStr):
                    parts = first.values
                    if (
                        len(parts) == 2
                        and isinstance(parts[0], ast.FormattedValue)
                        and ast.unparse(parts[0].value) == param
                        and isinstance(parts[1], ast.Constant)
                    ):
                        suffixes.add(parts[1].value)
            if suffixes and not suffixes <= readers.get(fn.name, set()):
                readers[fn.name] = readers.get(fn.name, set()) | suffixes
                changed = True
    return readers


def _value(node: ast.AST, module):
    """A default as the code writes it: a literal, a constant of the module, or arithmetic on those."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name) and module is not None and hasattr(module, node.id):
        return getattr(module, node.id)
    if isinstance(node, ast.Attribute) and module is not None:
        owner = _value(node.value, module)
        if owner is not NOT_LITERAL and hasattr(owner, node.attr):
            return getattr(owner, node.attr)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left, module), _value(node.right, module)
        if NOT_LITERAL not in (left, right):
            return _OPERATORS[type(node.op)](left, right)
    return NOT_LITERAL


def _default(call: ast.Call, parents: dict, module):
    """The call's default: its second argument, or the last operand of `get(...) or "x"` (also through
    `.strip()`) when the call's own default is empty."""
    node = call
    while isinstance(parents.get(node), ast.Attribute) and isinstance(parents.get(parents[node]), ast.Call):
        node = parents[parents[node]]  # a method chain: get(...).strip()
    outer = parents.get(node)
    if isinstance(outer, ast.BoolOp) and isinstance(outer.op, ast.Or) and outer.values[0] is node:
        last = outer.values[-1]
        if isinstance(last, ast.Constant) and (last.value is None or isinstance(last.value, str)):
            return last.value
        return NOT_LITERAL
    if len(call.args) > 1:
        return _value(call.args[1], module)
    return NO_DEFAULT


def code_variables() -> dict[str, list]:
    """Every environment variable the code reads, with each default the code gives it."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in SOURCES}
    readers = _readers(list(trees.values()))
    found: dict[str, list] = {}
    for path, tree in trees.items():
        module = config_module if path.name == "config.py" else None
        parents = _parents(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and VARIABLE.fullmatch(key.value):
                    found.setdefault(key.value, []).append(NO_DEFAULT)
                continue
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if not VARIABLE.fullmatch(first.value):
                continue
            if _environ_get(node):
                suffixes = {""}
            elif _callee(node) in readers:
                suffixes = readers[_callee(node)]
            else:
                continue
            default = _default(node, parents, module)
            for suffix in suffixes:
                found.setdefault(first.value + suffix, []).append(default if not suffix else NO_DEFAULT)
    for name in REQUESTS_VARIABLES:
        found.setdefault(name, []).append(NO_DEFAULT)
    return found


# --- what docs/configuration.md says ------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def documented() -> dict[str, str]:
    """Each variable named in the first column of a table in docs/configuration.md, with its default cell."""
    rows: dict[str, str] = {}
    for line in CONFIGURATION.read_text().splitlines():
        if not line.startswith("|") or re.fullmatch(r"[|\s:-]+", line):
            continue
        cells = _cells(line)
        if len(cells) < 3:
            continue
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[0]):
            rows.setdefault(name, cells[1])
    return rows


def matches(cell: str, default) -> bool:
    """Whether a documented default cell says the code's default."""
    if default is None or default == "":
        return cell.startswith("—")
    shown = re.match(r"`([^`]*)`", cell)
    if not shown:
        return False
    text = shown.group(1).replace("\\|", "|")
    if isinstance(default, bool):
        return text == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(text) == default
        except ValueError:
            return parse_duration(text) == default
    return text == default


VARIABLES = code_variables()


def test_the_code_reads_the_settings_it_is_known_to_read():
    """The source scan finds the environment where it is read (a scan that found nothing would pass below)."""
    assert len(VARIABLES) >= 50
    expected = {"SHARED_SECRET", "SHARED_SECRET_FILE", "LOG_LEVEL", "RESEND_INTERVAL", "GUNICORN_KEEPALIVE"}
    assert expected <= set(VARIABLES) and {"PORT", "HOST", "PROMETHEUS_MULTIPROC_DIR"} <= set(VARIABLES)
    assert "REMOTE_ADDR" not in VARIABLES, "a WSGI request's environ is not the process's"


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_every_setting_is_documented_with_its_default(name):
    """docs/configuration.md has a table row for the variable, and its default is the code's."""
    rows = documented()
    assert name in rows, f"{name} is read by the code but has no row in docs/configuration.md"
    for default in VARIABLES[name]:
        if default is NO_DEFAULT or default is NOT_LITERAL:
            continue
        assert matches(rows[name], default), (
            f"docs/configuration.md gives {name} the default {rows[name]!r}; the code's is {default!r}"
        )


def test_the_default_check_tells_right_from_wrong():
    assert matches("`1h`", 3600.0) and matches("`7`", 7.0) and matches("`false`", False)
    assert matches('`alertname=~"a\\|b"`', 'alertname=~"a|b"') and matches("— (off)", "")
    assert not matches("`2h`", 3600.0) and not matches("`8`", 7.0) and not matches("`info`", "debug")


def code_metrics() -> set[str]:
    """Every metric family the adapter exports, as its source names them."""
    source = (ROOT / "adapter" / "metrics.py").read_text()
    prefix = re.search(r'^PREFIX = "([a-z0-9_]+)"', source, re.M).group(1)
    return {f"{prefix}_{name}" for name in re.findall(r"\{PREFIX\}_([a-z0-9_]+)", source)}


def test_every_metric_is_documented_and_every_documented_metric_exists():
    """The metrics table of docs/operations.md names exactly the metrics the adapter exports."""
    text = (DOCS / "operations.md").read_text()
    table = {
        cells[0].strip("`")
        for line in text.splitlines()
        if line.startswith("| `alert24_adapter_")
        for cells in [_cells(line)]
    }
    exported = code_metrics()
    assert len(exported) >= 20
    assert exported - table == set(), "metrics without a row in docs/operations.md"
    assert table - exported == set(), "rows in docs/operations.md for metrics the adapter does not export"


# --- links and the README ----------------------------------------------------------------------------------


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", re.sub(r"`[^`\n]*`", "", text, flags=re.S), flags=re.S)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if not count else f"{base}-{count}")
    return out


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    """Links to files of the repository (and to their headings) resolve; web links are not followed."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_slug_is_githubs():
    assert slug("Rate budget: `ALERT24_RATE_LIMIT`") == "rate-budget-alert24_rate_limit"
    assert slug("One incident per group (`DEDUP_BY=group`)") == "one-incident-per-group-dedup_bygroup"
    assert slug("The ledger's record") == "the-ledgers-record"


def test_the_readme_fits_on_a_few_screens():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the rest belongs in docs/"


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def readme_receiver() -> str:
    text = README.read_text()
    [block] = yaml_blocks(text[text.index("## Point Alertmanager at it") :])[:1]
    return block


def test_the_readme_receiver_is_the_one_of_the_alertmanager_page():
    """One receiver, written once: the README shows the same block as docs/alertmanager.md."""
    assert readme_receiver() in yaml_blocks((DOCS / "alertmanager.md").read_text())


def test_the_readme_receiver_sets_a_timeout_above_the_time_budget_and_max_alerts():
    [webhook] = yaml.safe_load(readme_receiver())["receivers"][0]["webhook_configs"]
    assert parse_duration(webhook["timeout"]) > Config().time_budget
    assert webhook["max_alerts"] > 0 and webhook["send_resolved"] is True


def test_the_readme_receiver_is_valid_alertmanager_configuration(tmp_path):
    """amtool accepts it; `timeout:` is left out, since Alertmanager before 0.28 (Debian's) refuses it."""
    config = yaml.safe_load(readme_receiver())
    config["receivers"][0]["webhook_configs"][0].pop("timeout")
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [binary("amtool"), "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
