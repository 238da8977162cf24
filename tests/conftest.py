"""Test set-up shared by every tier: gevent's monkey-patching first, as in production."""

from gevent import monkey

monkey.patch_all()
