"""The reliability and hostile-input campaign (issue 8), in CI-sized counts: hostile input through
``open_message`` and the daemon's sync, secrets never written in the clear, SIGKILL at random
moments during a first sync and during outbox processing, and injected faults.
``bench/chaos.py`` runs the same scenarios with the big counts; ``docs/reliability.md`` has the
figures."""
