"""The public API is what __all__ says, and nothing else is promised."""

from __future__ import annotations

import fic_middleware


def test_all() -> None:
    assert sorted(fic_middleware.__all__) == ["ConfigError", "FastImageCache", "__version__", "sign_url"]
    for name in fic_middleware.__all__:
        assert hasattr(fic_middleware, name)
