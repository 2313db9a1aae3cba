"""Schema migrations of the history store (Alembic), run by :class:`membershield.store.Store` on open.

There is no ``alembic.ini``: the store builds the Alembic configuration in code and hands ``env.py`` an
open connection in ``config.attributes["connection"]``. To change the schema, add a file to ``versions/``
with ``revision`` set to the next number and ``down_revision`` to the current head, with ``upgrade()`` and
``downgrade()`` written with ``alembic.op``, and change the ORM classes in ``store/schema.py`` to match; never
edit a released revision, because history files already carry it.
"""
