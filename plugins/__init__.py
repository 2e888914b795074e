"""ftsdk's built-in plugins, registered through the ``ftsdk`` entry points like any third party's."""
