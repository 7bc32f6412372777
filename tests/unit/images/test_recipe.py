import shutil
from pathlib import Path

import pytest

from testbed.errors import ConfigError, UsageError
from testbed.images.recipe import load_recipe, recipe_hash

REPO = Path(__file__).parents[3]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for d in ("images", "guest"):
        shutil.copytree(REPO / d, tmp_path / d)
    monkeypatch.setenv("TESTBED_HOME", str(tmp_path))
    return tmp_path


def test_shipped_recipes_load() -> None:
    for name in ("client", "nas"):
        r = load_recipe(name)
        assert r.kernel.package.startswith("linux-image-") and r.kernel.version
        assert "busybox-static" in r.packages


def test_hash_is_stable(home: Path) -> None:
    assert recipe_hash(load_recipe("client")) == recipe_hash(load_recipe("client"))


def test_hash_changes_with_overlay_file(home: Path) -> None:
    before = recipe_hash(load_recipe("client"))
    (home / "images/common/overlay/etc").mkdir(parents=True, exist_ok=True)
    (home / "images/common/overlay/etc/motd").write_text("hi\n")
    assert recipe_hash(load_recipe("client")) != before


def test_hash_changes_with_overlay_mode(home: Path) -> None:
    before = recipe_hash(load_recipe("client"))
    (home / "images/common/overlay/sbin/tb-init").chmod(0o700)
    assert recipe_hash(load_recipe("client")) != before


def test_hash_changes_with_kernel_version(home: Path) -> None:
    before = recipe_hash(load_recipe("client"))
    p = home / "images/client/recipe.yaml"
    p.write_text(p.read_text().replace("version: 6.1.176-1", "version: 6.1.999-1"))
    assert recipe_hash(load_recipe("client")) != before


def test_hash_changes_with_guest_program(home: Path) -> None:
    before = recipe_hash(load_recipe("client"))
    (home / "guest/agent.c").write_text((home / "guest/agent.c").read_text() + "\n/* changed */\n")
    assert recipe_hash(load_recipe("client")) != before


def test_nas_and_client_differ(home: Path) -> None:
    assert recipe_hash(load_recipe("client")) != recipe_hash(load_recipe("nas"))


def test_unknown_image_names_the_known_ones(home: Path) -> None:
    with pytest.raises(UsageError, match="known: client, nas"):
        load_recipe("router")


def test_unknown_recipe_field_is_an_error(home: Path) -> None:
    p = home / "images/client/recipe.yaml"
    p.write_text(p.read_text() + "pakages: [vim]\n")
    with pytest.raises(ConfigError, match="pakages: unknown field"):
        load_recipe("client")
