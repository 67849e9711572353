"""Event ingest: find and check the event files, map them, load the catalogue and the exposure log."""
