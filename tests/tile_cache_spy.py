"""A spy on the tiled losses' tile cache, for tests that check what it keeps and releases."""

from dmlkit.losses import tiling


def spy_on_tile_caches(monkeypatch) -> list:
    """Every tile cache the engine makes from now on, in order; each records in ``.left`` the
    tiles still in it when it is released (those the backward did not take)."""
    made = []
    real = tiling._TileCache

    class Spy(real):
        def __init__(self, nbytes):
            super().__init__(nbytes)
            made.append(self)

        def release(self):
            self.left = dict(self.tiles)
            super().release()

    monkeypatch.setattr(tiling, "_TileCache", Spy)
    return made
