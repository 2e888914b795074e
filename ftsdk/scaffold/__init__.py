"""``ftsdk plugin new``: scaffold an installable third-party plugin package."""
