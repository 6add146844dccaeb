"""The deploy pages (docs/deploy/*.md): the commands and snippets they give work with the files they name."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .test_deploy_kubernetes import by_kind, documents, kubectl, schema_problems, versions

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs" / "deploy").glob("*.md"))
UNIT = ROOT / "deploy" / "systemd" / "alert24-adapter.service"


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", page.read_text(), re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_the_five_pages_are_there():
    assert [p.name for p in PAGES] == ["container.md", "kubernetes.md", "nginx.md", "procfile.md", "systemd.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_named_files_exist(page):
    text = page.read_text()
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
        if target.startswith("http"):
            continue
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and path.parent == page.parent:
            assert anchor in anchors(path), f"{page.name} links to {target}#{anchor}, a heading that does not exist"
    # Repository paths: a directory below deploy/, or a file in it (deploy/alert24-adapter alone is kubectl's name).
    for name in re.findall(r"(?<![\w/.])(deploy/(?:[\w.-]+/)+[\w.-]*|deploy/[\w-]+\.\w+)", text):
        assert (ROOT / name).exists(), f"{page.name} names {name}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_alertmanager_receiver_is_left_to_its_own_page(page):
    text = page.read_text()
    assert "webhook_configs" not in text and "receivers:" not in text
    assert "](../alertmanager.md)" in text


def test_the_systemd_page_and_the_unit_give_the_same_install_block():
    [block, *_] = blocks(ROOT / "docs" / "deploy" / "systemd.md", "sh")
    unit = []
    for line in UNIT.read_text().splitlines():
        if line.startswith("# Alertmanager sends the same shared secret"):
            break
        if line.startswith("#   "):
            unit.append(line[4:])
    assert block.splitlines() == unit


def test_the_kubernetes_page_composes_into_a_valid_kustomization(tmp_path):
    """The kustomization of step 2, the overlay swapped in, and every snippet the page adds to it: rendered and
    validated, each snippet having the effect the page says."""
    page = ROOT / "docs" / "deploy" / "kubernetes.md"
    [step2] = [b for b in blocks(page, "sh") if "kustomization.yaml <<'EOF'" in b]
    mine = tmp_path / "alert24"
    mine.mkdir()
    up = os.path.relpath(ROOT, mine)
    text = step2.split("<<'EOF'\n", 1)[1].rsplit("EOF\n", 1)[0].replace("../alert24-adapter/", f"{up}/")
    kustomization = yaml.safe_load(text)
    kustomization["resources"] = [r.replace("/base", "/postgresql") for r in kustomization["resources"]]
    for snippet in blocks(page, "yaml"):
        data = yaml.safe_load(snippet.replace("../alert24-adapter/", f"{up}/"))
        if "routes" in data:
            continue
        for key, value in data.items():
            kustomization[key] = kustomization.get(key, []) + value
    (mine / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    (mine / "alert24-adapter.yml").write_text("rules: []\n")
    out = subprocess.run([kubectl(), "kustomize", str(mine)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = by_kind(documents(out.stdout))
    problems = [p for v in versions() for doc in docs.values() if (p := schema_problems(doc, v))]
    assert not problems, "\n".join(problems)
    assert {d["metadata"].get("namespace") for d in docs.values()} == {"monitoring"}
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {"ALERTMANAGER_URL", "ALERT24_API_KEY_FILE", "LEDGER_URL_FILE"} <= set(env)
    assert docs["ConfigMap"]["data"] == {"alert24-adapter.yml": "rules: []\n"}
    policy = docs["NetworkPolicy"]["spec"]
    assert [f["podSelector"]["matchLabels"] for f in policy["ingress"][0]["from"]] == [
        {"app": "alertmanager"},
        {"app": "prometheus"},
    ]
    assert policy["egress"][2]["to"][0]["podSelector"]["matchLabels"] == {"app": "alertmanager"}
    assert {"ServiceMonitor", "PrometheusRule"} <= set(docs)
