from pathlib import Path

import pytest

# The protocols register what the checker reads of them (frame classes, kinds) when their registry loads;
# a test of the checker alone sees them as every command does.
import testbed.storage  # noqa: F401

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
