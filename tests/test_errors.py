"""Errors cross process boundaries intact (pools, DataLoader workers, Celery)."""

from __future__ import annotations

import pickle

from pixvcs.errors import CorruptObject, MissingMedia, PixvcsError, RemoteError


def test_errors_with_their_own_arguments_round_trip_through_pickle() -> None:
    errors: list[PixvcsError] = [
        MissingMedia([("cat/1.jpg", "a" * 64)], "/srv/shared"),
        CorruptObject("a" * 64, "b" * 64, "/cache"),
        RemoteError("http://example.invalid/x", "download failed"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.__dict__ == err.__dict__
    missing = pickle.loads(pickle.dumps(errors[0]))
    assert isinstance(missing, MissingMedia) and missing.missing == [("cat/1.jpg", "a" * 64)]
